#!/usr/bin/env bash
# Validates the deploy files with well-kept validators, as far as a machine without a container
# engine or a Kubernetes cluster can:
#   - the Kubernetes manifests against the API schemas (kubernetes-validate, strict: unknown
#     fields are errors), for the newest schema it ships and for 1.29;
#   - the compose file against the Compose specification's schema (check-jsonschema's vendored
#     compose-spec);
#   - both YAML files for syntax and style (yamllint);
#   - the Dockerfile with a real parser (dockerfile-parse): two stages, the runtime one runs
#     the binary it copies;
#   - the systemd unit with `systemd-analyze verify` (on a copy that runs the binary built in
#     the target directory, which must exist) and its exposure score (`security --offline`).
# The validators go to a virtualenv under the target directory, pinned. The field checks and
# the three-process runs of the same files are `cargo test -p clusterconsensus-tests --test
# deploy`. Prints `deploy-check: N passed, N failed` last; exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
venv="$target/deploy-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kubernetes-validate==1.37.0" "check-jsonschema==0.39.0" \
    "yamllint==1.38.0" "dockerfile-parse==2.0.1"
fi
passed=0
failed=0
check() {
  local what="$1"
  shift
  if out=$("$@" 2>&1); then
    passed=$((passed + 1))
    echo "ok   $what"
  else
    failed=$((failed + 1))
    echo "FAIL $what"
    echo "$out" | sed 's/^/     /'
  fi
}

k8s=deploy/kubernetes/clusterconsensus.yaml
check "kubernetes-validate (newest schema)" "$venv/bin/kubernetes-validate" --strict --quiet "$k8s"
check "kubernetes-validate (1.29)" "$venv/bin/kubernetes-validate" --strict --quiet -k 1.29.0 "$k8s"
check "compose-spec schema" "$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec \
  deploy/docker-compose.yml
check "yamllint" "$venv/bin/yamllint" -s -d "{extends: default, rules: {line-length: {max: 110}}}" \
  "$k8s" deploy/docker-compose.yml
check "dockerfile-parse" "$venv/bin/python" - <<'PY'
from dockerfile_parse import DockerfileParser
d = DockerfileParser(path="deploy/Dockerfile")
froms = [i["value"] for i in d.structure if i["instruction"] == "FROM"]
assert d.is_multistage and len(froms) == 2, froms
copied = [i["value"].split() for i in d.structure
          if i["instruction"] == "COPY" and i["value"].startswith("--from=build")]
entry = [i["value"] for i in d.structure if i["instruction"] == "ENTRYPOINT"]
assert copied and entry == ['["%s"]' % copied[0][2]], (copied, entry)
print(d.baseimage, "runs", copied[0][2])
PY

bin="$target/debug/clusterconsensus"
[ -x "$bin" ] || bin="$target/release/clusterconsensus"
if command -v systemd-analyze >/dev/null && [ -x "$bin" ]; then
  unit="$target/deploy-check/clusterconsensus.service"
  mkdir -p "$(dirname "$unit")"
  sed -e "s#^ExecStart=/usr/local/bin/clusterconsensus#ExecStart=$(realpath "$bin")#" \
      -e "s#^EnvironmentFile=.*#EnvironmentFile=$(realpath deploy/systemd/node.env)#" \
      deploy/systemd/clusterconsensus.service > "$unit"
  check "systemd-analyze verify" bash -c "out=\$(systemd-analyze verify '$unit' 2>&1); echo \"\$out\"; [ -z \"\$out\" ]"
  systemd-analyze security --offline=yes "$unit" 2>/dev/null | tail -n 1
else
  # Not a skip: scripts/setup.sh installs systemd-analyze and the test command builds the node.
  echo "FAIL systemd-analyze verify (systemd-analyze or the node binary $bin is missing)"
  failed=$((failed + 1))
fi
echo "deploy-check: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
