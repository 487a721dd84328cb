#!/usr/bin/env bash
# A rolling upgrade under write load: a 3-node cluster of an older release, each node replaced
# in turn by the current tree's binary on the same data directory and address, while a client
# writes; then checks that no acknowledged write is lost and that every node converges.
#
#   scripts/rolling-upgrade.sh OLD_COMMIT        # e.g. scripts/rolling-upgrade.sh 847af56
#
# Builds OLD_COMMIT (a git worktree in a temporary directory, release, target dir
# $OLD_TARGET_DIR, default target-old/ beside the repository) and
# the current tree (release, $CARGO_TARGET_DIR or target/). Nodes listen on 127.0.0.1 from
# $BASE_PORT (default 19501). Followers are replaced first, the master last; each new node must
# have caught up with the master before the next is replaced. The client round-robins
# `submit`s over the three nodes (a follower forwards to the master), one at a time; a submit
# that fails (its node is restarting, an election) counts as failed, not lost: only
# acknowledged ones must survive. Needs curl and jq.
#
# Prints one line per step and a last line
#   rolling upgrade OLD -> NEW: A acknowledged, F failed submits (N down, N refused, N timeout),
#   0 lost, 0 unknown keys, converged at commit C: PASS
# ("down": the submit went to the node being replaced; "refused": answered, not committed, e.g.
# during the election after the master is replaced; "unknown": a key no client wrote)
# and exits 1 on FAIL (the node logs are kept in the directory it names).
set -euo pipefail
export LC_ALL=C

[ $# -eq 1 ] || { echo "usage: $0 OLD_COMMIT" >&2; exit 2; }
for tool in curl jq git cargo; do
  command -v "$tool" >/dev/null || { echo "rolling-upgrade: needs $tool" >&2; exit 2; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
old_rev=$(git -C "$root" rev-parse --short "$1^{commit}") || { echo "rolling-upgrade: no commit $1" >&2; exit 2; }
new_rev="$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- . || echo +dirty)"
old_target=${OLD_TARGET_DIR:-$root/target-old}
new_target=${CARGO_TARGET_DIR:-$root/target}
base=${BASE_PORT:-19501}
work=$(mktemp -d "${TMPDIR:-/tmp}/cc-upgrade-XXXXXX")
verdict=FAIL
pids=(0 0 0 0)
writer=0

cleanup() {
  [ "$verdict" = PASS ] || echo "rolling-upgrade: logs in $work" >&2
  # Quiet from here: the shell would report each node it reaps as "Killed".
  exec 2>/dev/null
  [ "$writer" != 0 ] && kill "$writer" || true
  for i in 1 2 3; do
    [ "${pids[$i]}" != 0 ] && kill -9 "${pids[$i]}" || true
  done
  wait || true
  git -C "$root" worktree remove --force "$work/old" || true
  [ "$verdict" != PASS ] || rm -rf "$work"
}
trap cleanup EXIT

say() { echo "[$(date -u +%T)] $*"; }

say "building the old release $old_rev (target $old_target)"
git -C "$root" worktree add --quiet --detach "$work/old" "$old_rev"
(cd "$work/old" && CARGO_TARGET_DIR="$old_target" nice -n 10 cargo build --quiet --release --bin clusterconsensus)
old_bin="$old_target/release/clusterconsensus"
say "building the current tree $new_rev (target $new_target)"
(cd "$root" && CARGO_TARGET_DIR="$new_target" nice -n 10 cargo build --quiet --release --bin clusterconsensus)
new_bin="$new_target/release/clusterconsensus"
# The binaries are copied so that a later build cannot swap one under a running node.
cp "$old_bin" "$work/clusterconsensus-old"
cp "$new_bin" "$work/clusterconsensus-new"
say "old: $("$work/clusterconsensus-old" --version), new: $("$work/clusterconsensus-new" --version)"

url() { echo "http://127.0.0.1:$((base + $1 - 1))"; }
status() { curl -s -m 2 "$(url "$1")/_clusterc/c1/status" || true; }

# start I BINARY [ARGS...]: node I on its port and data dir; waits until it listens.
start() {
  local i=$1 bin=$2; shift 2
  : >"$work/n$i.out"
  "$work/clusterconsensus-$bin" node --listen "127.0.0.1:$((base + i - 1))" --data-dir "$work/n$i" \
    --cluster c1 "$@" >"$work/n$i.out" 2>>"$work/n$i.log" &
  pids[$i]=$!
  echo "$bin" >"$work/n$i.bin"
  for _ in $(seq 200); do
    grep -q '^listening on ' "$work/n$i.out" && return 0
    kill -0 "${pids[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  echo "rolling-upgrade: node $i ($bin) did not start:" >&2; tail -20 "$work/n$i.log" >&2; exit 1
}

# The node that serves as master, or nothing.
master() {
  for i in 1 2 3; do
    [ "$(status "$i" | jq -r '.serving // false' 2>/dev/null)" = true ] && { echo "$i"; return; }
  done
  true
}

# wait_for SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 10))); do "$@" && return 0; sleep 0.1; done
  echo "rolling-upgrade: $what: not within $secs s" >&2; exit 1
}

formed() {
  [ -n "$(master)" ] || return 1
  for i in 1 2 3; do
    [ "$(status "$i" | jq '.members | length' 2>/dev/null)" = 3 ] || return 1
  done
}

# caught_up I: node I has applied at least what the master had committed when asked.
caught_up() {
  local m c
  m=$(master); [ -n "$m" ] || return 1
  c=$(status "$m" | jq '.commit' 2>/dev/null) || return 1
  [ "$(status "$1" | jq --argjson c "$c" '.commit >= $c and (.members | length) == 3' 2>/dev/null)" = true ]
}

say "starting 3 nodes of $old_rev on ports $base-$((base + 2))"
start 2 old
start 3 old
start 1 old --bootstrap --peer "$(url 2)" --peer "$(url 3)"
wait_for 30 "the cluster to form" formed

# The client: one submit at a time, round-robin over the nodes; k<i> = v<i>.
: >"$work/acked"; : >"$work/failed"
(
  i=0
  while [ ! -e "$work/stop" ]; do
    n=$((i % 3 + 1))
    body="{\"chg\":[\"{\\\"op\\\":\\\"set\\\",\\\"key\\\":\\\"k$i\\\",\\\"value\\\":\\\"v$i\\\"}\"]}"
    rc=0
    out=$(curl -s -m 5 -X POST "$(url $n)/_clusterc/c1/submit" -d "$body" 2>/dev/null) || rc=$?
    if [ "$rc" = 0 ] && [[ "$out" == *'"fail":false'* ]]; then
      echo "k$i v$i" >>"$work/acked"
    else
      # Why: its node was down (connection refused), no answer in 5 s, or an answer that
      # says not committed (an election in progress, the master gone).
      case $rc in 0) why=refused ;; 7) why=down ;; 28) why=timeout ;; *) why="curl-$rc" ;; esac
      echo "k$i node$n $why" >>"$work/failed"
    fi
    i=$((i + 1))
  done
) &
writer=$!
sleep 2
say "load running: $(wc -l <"$work/acked") writes acknowledged so far"

for round in 1 2 3; do
  m=$(master)
  target=""
  for i in 1 2 3; do
    if [ "$(cat "$work/n$i.bin")" = old ] && [ "$i" != "$m" ]; then target=$i; break; fi
  done
  [ -n "$target" ] || target=$m
  role=follower; [ "$target" = "$m" ] && role=master
  say "round $round: replacing node $target ($role) with $new_rev"
  kill -TERM "${pids[$target]}"
  wait "${pids[$target]}" || true
  start "$target" new
  wait_for 60 "node $target to catch up" caught_up "$target"
  say "round $round: node $target runs $new_rev and has caught up (master: node $(master))"
  sleep 2
done

touch "$work/stop"
wait "$writer" || true
writer=0
acked=$(wc -l <"$work/acked")
failed=$(wc -l <"$work/failed")
why=$(cut -d' ' -f3 "$work/failed" | sort | uniq -c | awk '{printf "%s%s %s", sep, $1, $2; sep=", "}')
say "load stopped: $acked acknowledged, $failed failed submits${why:+ ($why)}"

# The whole key-value state of node I, one "key value" line per key, sorted.
state() {
  local after="" page
  while :; do
    page=$(curl -s -m 5 "$(url "$1")/_clusterc/c1/kv?limit=10000${after:+&after=$after}") || return 1
    echo "$page" | jq -r '.items[] | "\(.[0]) \(.[1])"' || return 1
    after=$(echo "$page" | jq -r '.next // empty')
    [ -n "$after" ] || break
  done | sort
}

converged() {
  local c1 c2 c3
  c1=$(status 1 | jq .commit); c2=$(status 2 | jq .commit); c3=$(status 3 | jq .commit)
  [ -n "$c1" ] && [ "$c1" = "$c2" ] && [ "$c2" = "$c3" ] || return 1
  state 1 >"$work/state1" && state 2 >"$work/state2" && state 3 >"$work/state3" || return 1
  cmp -s "$work/state1" "$work/state2" && cmp -s "$work/state1" "$work/state3"
}
wait_for 30 "the three nodes to converge" converged
commit=$(status 1 | jq .commit)

# Lost: acknowledged writes missing from the state (or with another value).
sort "$work/acked" >"$work/acked.sorted"
lost=$(comm -23 "$work/acked.sorted" "$work/state1" | wc -l)
# Every key in the state must have been written by the client (acknowledged or failed).
unknown=$( (cut -d' ' -f1 "$work/acked"; cut -d' ' -f1 "$work/failed") | sort | comm -13 - <(cut -d' ' -f1 "$work/state1") | wc -l)
versions=$(for i in 1 2 3; do cat "$work/n$i.bin"; done | sort -u | tr '\n' ' ')
[ "$lost" = 0 ] && [ "$unknown" = 0 ] && [ "$versions" = "new " ] && verdict=PASS
[ "$lost" = 0 ] || comm -23 "$work/acked.sorted" "$work/state1" | head -5 | sed 's/^/lost: /'
echo "rolling upgrade $old_rev -> $new_rev: $acked acknowledged, $failed failed submits${why:+ ($why)}, $lost lost, $unknown unknown keys, converged at commit $commit: $verdict"
[ "$verdict" = PASS ]
