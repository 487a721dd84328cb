//! The deploy files of `deploy/`, tried as far as a machine without a container engine or a
//! Kubernetes cluster allows: each file is parsed and checked field by field against the
//! others and the code (ports, paths, names, probes, volumes, the binary the image builds),
//! and the Kubernetes StatefulSet, the compose file and the systemd unit each run as three
//! local processes with exactly the arguments and environment they give, their host names
//! mapped to ports on 127.0.0.1 and their volumes to directories. The StatefulSet's pods must
//! form the cluster (ordinal 0 founds it, the others join) and a restarted pod must resume from
//! its volume. `deploy/check.sh` adds the schema validators (kubernetes-validate,
//! check-jsonschema's compose schema, yamllint) and `systemd-analyze verify`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clusterconsensus_tests::*;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(rel: &str) -> String {
    let p = Path::new(ROOT).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Every document of a YAML file, as JSON values (mapping keys as strings).
fn yaml_docs(rel: &str) -> Vec<Value> {
    let docs = YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    docs.iter()
        .filter(|d| !matches!(d, Yaml::Null))
        .map(|d| to_json(d, rel))
        .collect()
}

fn to_json(y: &Yaml, rel: &str) -> Value {
    match y {
        Yaml::Real(r) => r.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(|v| to_json(v, rel)).collect()),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => panic!("{rel}: a mapping key that is not a scalar: {other:?}"),
                };
                assert!(
                    m.insert(key.clone(), to_json(v, rel)).is_none(),
                    "{rel}: {key} twice"
                );
            }
            Value::Object(m)
        }
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => panic!("{rel}: aliases are not used here: {y:?}"),
    }
}

/// The value of `--name=value` or `--name value` in `args`, each time it occurs.
fn flag(args: &[String], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            out.push(v.to_string());
        } else if a == name {
            out.extend(it.next().cloned());
        }
    }
    out
}

/// The port of `HOST:PORT`, `http://HOST:PORT` or `http://HOST:PORT/...`.
fn port_of(addr: &str) -> u16 {
    let rest = addr.split("://").last().unwrap_or(addr);
    let hostport = rest.split('/').next().unwrap_or(rest);
    let port = hostport.rsplit(':').next().unwrap_or_default();
    port.parse()
        .unwrap_or_else(|_| panic!("no port in {addr:?}"))
}

/// The Dockerfile's instructions: (KEYWORD, rest), continuation lines joined, comments out.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read("deploy/Dockerfile").lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(part) = t.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (kw, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
        out.push((kw.to_ascii_uppercase(), rest.trim().to_string()));
        cur.clear();
    }
    assert!(
        cur.is_empty(),
        "deploy/Dockerfile ends in a continuation line"
    );
    out
}

/// A systemd unit file: section -> key -> values (in order; a key may repeat).
fn unit_file(rel: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in read(rel).lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(s) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("{rel}: bad line {t:?}"));
        assert!(!section.is_empty(), "{rel}: {k} outside a section");
        let entry = out.entry(section.clone()).or_default();
        entry
            .entry(k.trim().into())
            .or_default()
            .push(v.trim().into());
    }
    out
}

/// An environment file (`KEY=VALUE` lines, `#` comments, optional quotes), as systemd reads it.
fn env_file(rel: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in read(rel).lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("{rel}: bad line {t:?}"));
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    out
}

/// systemd's variable substitution in a command line: `${VAR}` stays one word, a lone `$VAR`
/// splits into words at whitespace (empty: no word at all). The words of the line are split at
/// whitespace first (the unit uses no quotes).
fn systemd_expand(line: &str, env: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for word in line.split_whitespace() {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            let v = env
                .get(name)
                .unwrap_or_else(|| panic!("${name} is not set"));
            out.extend(v.split_whitespace().map(String::from));
            continue;
        }
        let mut w = word.to_string();
        while let Some(start) = w.find("${") {
            let end = w[start..].find('}').expect("an unclosed ${") + start;
            let name = &w[start + 2..end];
            let v = env
                .get(name)
                .unwrap_or_else(|| panic!("${{{name}}} is not set"));
            w.replace_range(start..=end, v);
        }
        out.push(w);
    }
    out
}

/// Kubernetes' expansion of `$(VAR)` in a container's args: a variable of the container's
/// environment is replaced, `$$` is a `$`, anything else stays as written.
fn kube_expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some((name, after)) = tail.strip_prefix("$(").and_then(|t| t.split_once(')'))
        {
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..name.len() + 3]),
            }
            rest = after;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// One node process started with an exact command line and environment (the testkit's `Node`
/// adds its own `--listen`, `--data-dir` and `--cluster`, which is what these tests must not
/// do). Killed when dropped.
struct Proc {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
    url: String,
}

impl Proc {
    /// Starts `clusterconsensus <args>` with only `env` in its environment and waits (20 s)
    /// for its `listening on URL` line.
    fn start(dir: &Path, name: &str, args: Vec<String>, env: Vec<(String, String)>) -> Proc {
        let mut p = Proc {
            name: name.into(),
            args,
            env,
            log: dir.join(format!("{name}.log")),
            child: None,
            url: String::new(),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(binary())
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        self.child = Some(child);
        self.url = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{} did not start; log:\n{}", self.name, self.log_text()));
    }

    /// SIGTERM, as Kubernetes, compose and systemd stop a node; its exit code.
    fn stop(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let code = wait_exit(&mut c, Duration::from_secs(10));
        let _ = c.kill();
        let _ = c.wait();
        code
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("---- log of {} ----", self.name);
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// `n` ports on 127.0.0.1 that were free a moment ago.
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Replaces every `from` in each argument by its `to`; panics if an argument still names a
/// host of the deployment (`left`) afterwards: every name must have been mapped.
fn map_args(args: &[String], map: &[(String, String)], left: &[&str]) -> Vec<String> {
    args.iter()
        .map(|a| {
            let mut a = a.clone();
            for (from, to) in map {
                a = a.replace(from, to);
            }
            for l in left {
                assert!(
                    !a.contains(l),
                    "{a:?} still names {l:?}: not mapped to this machine"
                );
            }
            a
        })
        .collect()
}

/// Waits until the three nodes list each other as voters, follow one master and are ready;
/// that master.
fn wait_formed(nodes: &[Proc], cluster: &str) -> String {
    let what = format!("cluster {cluster} of {} nodes to form", nodes.len());
    wait_for(Duration::from_secs(40), &what, || {
        let mut master = None;
        for n in nodes {
            let st = status(&n.url, cluster)?;
            let voters = st["members"].as_array()?.len();
            let m = st["master"].as_str()?.to_string();
            if voters != nodes.len() || *master.get_or_insert(m.clone()) != m {
                return None;
            }
            let ready = http("GET", &format!("{}/readyz", n.url), b"").ok()?;
            if ready.status != 200 {
                return None;
            }
        }
        master
    })
}

/// Node 0 founded the cluster and the others asked to join it: what their logs say.
fn assert_founded_by_the_first(nodes: &[Proc]) {
    for (i, n) in nodes.iter().enumerate() {
        let log = n.log_text();
        let founded = log.matches("founding the cluster").count();
        let asked = log.contains("asking to join");
        assert_eq!(
            (founded, asked),
            (usize::from(i == 0), i != 0),
            "{}:\n{log}",
            n.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The files
// ---------------------------------------------------------------------------------------------

/// The node crate's package name, version and binary name (native/Cargo.toml).
fn crate_facts() -> (String, String, Vec<String>) {
    let toml = read("native/Cargo.toml");
    let mut package = None;
    let mut version = None;
    let mut bins = Vec::new();
    let mut section = "";
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = if t == "[package]" {
                "package"
            } else if t == "[[bin]]" {
                "bin"
            } else {
                ""
            };
            continue;
        }
        let value = |k: &str| {
            t.strip_prefix(k)
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
                .map(|r| r.trim().trim_matches('"').to_string())
        };
        match section {
            "package" => {
                package = package.or(value("name"));
                version = version.or(value("version"));
            }
            "bin" => bins.extend(value("name")),
            _ => {}
        }
    }
    (package.unwrap(), version.unwrap(), bins)
}

#[test]
fn the_dockerfile_builds_the_node_binary_from_files_that_exist() {
    let ins = dockerfile();
    let (package, _, bins) = crate_facts();
    let froms: Vec<&String> = ins
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        froms.len(),
        2,
        "a build stage and a runtime stage: {froms:?}"
    );
    assert!(froms[0].ends_with(" AS build"), "{froms:?}");
    assert!(
        froms[1].contains("-slim"),
        "a small runtime image: {froms:?}"
    );

    // The build stage copies every workspace member, and only files that exist.
    let workspace = read("Cargo.toml");
    let members = workspace
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = "))
        .expect("workspace members");
    let members: Vec<&str> = members
        .trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .collect();
    let copies: Vec<Vec<&str>> = ins
        .iter()
        .filter(|(k, v)| k == "COPY" && !v.starts_with("--from"))
        .map(|(_, v)| v.split_whitespace().collect())
        .collect();
    let sources: Vec<&str> = copies
        .iter()
        .flat_map(|c| c[..c.len() - 1].to_vec())
        .collect();
    for s in &sources {
        assert!(
            Path::new(ROOT).join(s).exists(),
            "COPY {s}: no such file in the repository"
        );
    }
    for m in &members {
        assert!(
            sources.contains(m),
            "workspace member {m} is not copied: {sources:?}"
        );
    }
    assert!(sources.contains(&"Cargo.lock") && sources.contains(&"Cargo.toml"));

    // It builds the node binary of the node crate, locked, and the runtime stage runs it.
    let build = ins
        .iter()
        .find(|(k, v)| k == "RUN" && v.contains("cargo build"))
        .map(|(_, v)| v.clone())
        .expect("a cargo build");
    let words: Vec<String> = build.split_whitespace().map(String::from).collect();
    assert_eq!(flag(&words, "-p"), vec![package.clone()], "{build}");
    let bin = flag(&words, "--bin");
    assert_eq!(bin.len(), 1, "{build}");
    assert!(
        bins.contains(&bin[0]),
        "{} is not a binary of {package}: {bins:?}",
        bin[0]
    );
    assert!(words.contains(&"--locked".into()) && words.contains(&"--release".into()));
    let built = format!("target/release/{}", bin[0]);
    assert!(build.contains(&built), "{build}");
    let staged = build.split_whitespace().last().unwrap().to_string();
    let copy_from = ins
        .iter()
        .find(|(k, v)| k == "COPY" && v.starts_with("--from=build"))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>())
        .expect("a COPY --from=build");
    assert_eq!(
        copy_from[1], staged,
        "the runtime stage copies what the build stage installed"
    );
    let entry = ins
        .iter()
        .find(|(k, _)| k == "ENTRYPOINT")
        .expect("an ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entry.1).expect("ENTRYPOINT in exec form");
    assert_eq!(entry, vec![copy_from[2].to_string()]);
    assert!(entry[0].ends_with(&format!("/{}", bin[0])));

    // The Rust image is at least the workspace's rust-version.
    let rust = ins
        .iter()
        .find_map(|(k, v)| {
            (k == "ARG")
                .then(|| v.strip_prefix("RUST_VERSION="))
                .flatten()
        })
        .expect("ARG RUST_VERSION");
    let msrv = workspace
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("rust-version");
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        parse(rust) >= parse(msrv),
        "Rust {rust} is older than rust-version {msrv}"
    );

    // An unprivileged user, the node's port, SIGTERM; the context leaves the target dir out.
    let user = ins
        .iter()
        .find(|(k, _)| k == "USER")
        .expect("a USER")
        .1
        .clone();
    assert!(!user.starts_with("0") && user != "root", "USER {user}");
    let expose = ins.iter().find(|(k, _)| k == "EXPOSE").expect("an EXPOSE");
    assert_eq!(expose.1, "9001");
    assert!(ins.contains(&("STOPSIGNAL".into(), "SIGTERM".into())));
    let ignore = read("deploy/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "**/target"), "{ignore}");
}

/// The StatefulSet's pods as local processes: the argv and environment of pod `i`, with the
/// stable names, the listen address and the volume mapped to this machine.
struct KubePods {
    args: Vec<Vec<String>>,
    env: Vec<Vec<(String, String)>>,
    probes: Vec<(String, String)>,
}

/// Checks the Kubernetes manifests field by field and derives the pods' command lines.
fn kubernetes(ports: &[u16], dirs: &[PathBuf]) -> KubePods {
    let docs = yaml_docs("deploy/kubernetes/clusterconsensus.yaml");
    let kinds: Vec<(&str, &str)> = docs
        .iter()
        .map(|d| {
            (
                d["apiVersion"].as_str().unwrap(),
                d["kind"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("v1", "Service"),
            ("v1", "Service"),
            ("apps/v1", "StatefulSet"),
            ("policy/v1", "PodDisruptionBudget")
        ]
    );
    let sts = docs.iter().find(|d| d["kind"] == "StatefulSet").unwrap();
    let name = sts["metadata"]["name"].as_str().unwrap();
    let spec = &sts["spec"];
    let labels = spec["template"]["metadata"]["labels"].as_object().unwrap();
    let selects = |sel: &Value| {
        sel.as_object()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    assert!(selects(&spec["selector"]["matchLabels"]), "{spec}");

    // The headless Service names the pods, the not-ready ones too.
    let services: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "Service").collect();
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"] == "None")
        .expect("a headless Service");
    assert_eq!(headless["metadata"]["name"], spec["serviceName"]);
    assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
    for s in &services {
        assert!(selects(&s["spec"]["selector"]), "{s}");
    }
    // Pods start together (an OrderedReady pod 0 could wait forever for a majority).
    assert_eq!(spec["podManagementPolicy"], "Parallel");
    let replicas = spec["replicas"].as_u64().unwrap() as usize;
    assert_eq!(replicas, ports.len());

    // The disruption budget keeps a majority.
    let pdb = docs
        .iter()
        .find(|d| d["kind"] == "PodDisruptionBudget")
        .unwrap();
    assert!(selects(&pdb["spec"]["selector"]["matchLabels"]), "{pdb}");
    let max_unavailable = pdb["spec"]["maxUnavailable"].as_u64().unwrap() as usize;
    assert!(replicas - max_unavailable > replicas / 2, "{pdb}");

    // The container: image, port, probes, volume.
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let (_, version, _) = crate_facts();
    assert_eq!(c["image"], format!("clusterconsensus:{version}"));
    let http = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    let container_port = http["containerPort"].as_u64().unwrap() as u16;
    for s in &services {
        let p = &s["spec"]["ports"][0];
        assert_eq!(
            (p["targetPort"].as_str(), p["port"].as_u64()),
            (Some("http"), Some(9001))
        );
    }
    let mut probes = Vec::new();
    for (probe, path) in [
        ("startupProbe", "/livez"),
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &c[probe]["httpGet"];
        assert_eq!(
            (get["path"].as_str(), get["port"].as_str()),
            (Some(path), Some("http")),
            "{probe}"
        );
        assert!(
            c[probe]["timeoutSeconds"].as_u64() >= Some(2),
            "{probe}: the node may take 1 s"
        );
        probes.push((probe.to_string(), path.to_string()));
    }
    let claim = &spec["volumeClaimTemplates"][0];
    let claim_name = claim["metadata"]["name"].as_str().unwrap();
    assert_eq!(claim["spec"]["accessModes"], json!(["ReadWriteOnce"]));
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == claim_name)
        .expect("the claim is mounted");
    let mount_path = mount["mountPath"].as_str().unwrap();
    // The image's user may write there: the pod runs as the Dockerfile's USER.
    let user = dockerfile()
        .into_iter()
        .find(|(k, _)| k == "USER")
        .unwrap()
        .1;
    let uid = user.split(':').next().unwrap();
    assert_eq!(pod["securityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(pod["securityContext"]["fsGroup"].to_string(), uid);

    // Each pod's argv and environment, as the kubelet makes them.
    let raw: Vec<String> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    assert_eq!(raw[0], "node");
    let namespace = "default";
    let stable = |i: usize| {
        format!(
            "{name}-{i}.{}.{namespace}.svc.cluster.local:{container_port}",
            spec["serviceName"].as_str().unwrap()
        )
    };
    let mut pods = KubePods {
        args: Vec::new(),
        env: Vec::new(),
        probes,
    };
    for (i, dir) in dirs.iter().enumerate() {
        let mut env = BTreeMap::new();
        for e in c["env"].as_array().unwrap() {
            let key = e["name"].as_str().unwrap().to_string();
            let value = match (
                &e["value"],
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
            ) {
                (Value::String(v), None) => v.clone(),
                (Value::Null, Some("metadata.name")) => format!("{name}-{i}"),
                (Value::Null, Some("metadata.namespace")) => namespace.to_string(),
                other => panic!("an env entry this test cannot give: {other:?}"),
            };
            env.insert(key, value);
        }
        let expanded: Vec<String> = raw.iter().map(|a| kube_expand(a, &env)).collect();
        let listen = flag(&expanded, "--listen");
        assert_eq!(listen, vec![format!("0.0.0.0:{container_port}")]);
        assert_eq!(flag(&expanded, "--data-dir"), vec![mount_path.to_string()]);
        assert_eq!(
            flag(&expanded, "--advertise"),
            vec![format!("http://{}", stable(i))]
        );
        let join: Vec<String> = (0..replicas)
            .map(|j| format!("http://{}", stable(j)))
            .collect();
        assert_eq!(
            flag(&expanded, "--join"),
            join,
            "pod 0 first, every pod listed"
        );
        let mut map: Vec<(String, String)> = (0..replicas)
            .map(|j| (stable(j), format!("127.0.0.1:{}", ports[j])))
            .collect();
        map.push((
            format!("0.0.0.0:{container_port}"),
            format!("127.0.0.1:{}", ports[i]),
        ));
        map.push((mount_path.to_string(), dir.display().to_string()));
        pods.args.push(map_args(
            &expanded,
            &map,
            &["svc.cluster.local", "0.0.0.0", "$("],
        ));
        pods.env.push(env.into_iter().collect());
    }
    pods
}

#[test]
fn the_statefulset_forms_the_cluster_from_pod_0_and_a_restarted_pod_resumes_from_its_volume() {
    let dir = TempDir::new("deploy-k8s");
    let ports = free_ports(3);
    let volumes: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("data-{i}")))
        .collect();
    let pods = kubernetes(&ports, &volumes);
    let mut nodes: Vec<Proc> = (0..3)
        .map(|i| {
            let name = format!("clusterconsensus-{i}");
            Proc::start(dir.path(), &name, pods.args[i].clone(), pods.env[i].clone())
        })
        .collect();
    let cluster = flag(&pods.args[0], "--cluster").remove(0);
    wait_formed(&nodes, &cluster);
    assert_founded_by_the_first(&nodes);
    // The probes as the kubelet calls them.
    for n in &nodes {
        for (probe, path) in &pods.probes {
            let a = http("GET", &format!("{}{path}", n.url), b"").unwrap();
            assert_eq!(a.status, 200, "{probe} of {}", n.name);
        }
    }
    submit_ok(&nodes[1].url, &cluster, &[set("before", "1")]).unwrap();
    let version = status(&nodes[1].url, &cluster).unwrap()["version"].clone();

    // Pod 0, whose arguments say to found the cluster, is deleted and comes back on its
    // volume: it resumes as the member it was, founds nothing, and catches up.
    assert_eq!(nodes[0].stop(), Some(0), "SIGTERM: a clean exit");
    wait_for(
        Duration::from_secs(15),
        "a master among the two left",
        || {
            let st = status(&nodes[1].url, &cluster)?;
            (st["master"].is_string() && st["master"] != json!(nodes[0].url)).then_some(())
        },
    );
    wait_for(Duration::from_secs(15), "a write without pod 0", || {
        submit_ok(&nodes[2].url, &cluster, &[set("during", "1")]).ok()
    });
    nodes[0].spawn();
    wait_formed(&nodes, &cluster);
    let log = nodes[0].log_text();
    assert_eq!(log.matches("founding the cluster").count(), 1, "{log}");
    assert!(log.contains("resumed from"), "{log}");
    for key in ["before", "during"] {
        wait_for(Duration::from_secs(10), "pod 0 to catch up", || {
            kv_get(&nodes[0].url, &cluster, key)
        });
    }
    let st = status(&nodes[0].url, &cluster).unwrap();
    assert_eq!(
        st["version"], version,
        "no member was added or removed: {st}"
    );
    assert_eq!(st["members"].as_array().map(Vec::len), Some(3), "{st}");

    // Its volume lost, pod 0 would found a second cluster of the same name if it followed its
    // arguments blindly: the others answer as members, so it joins them instead.
    nodes[0].stop();
    std::fs::remove_dir_all(&volumes[0]).unwrap();
    nodes[0].spawn();
    wait_formed(&nodes, &cluster);
    let log = nodes[0].log_text();
    assert_eq!(log.matches("founding the cluster").count(), 1, "{log}");
    assert!(log.contains("the cluster exists, joining it"), "{log}");
    for key in ["before", "during"] {
        wait_for(
            Duration::from_secs(10),
            "pod 0 to get the state again",
            || kv_get(&nodes[0].url, &cluster, key),
        );
    }
}

#[test]
fn the_compose_file_runs_three_nodes_that_form_the_cluster() {
    let docs = yaml_docs("deploy/docker-compose.yml");
    assert_eq!(docs.len(), 1);
    let compose = &docs[0];
    let services = compose["services"].as_object().unwrap();
    let names: Vec<&String> = services.keys().collect();
    assert_eq!(names, ["node1", "node2", "node3"]);
    let (_, version, _) = crate_facts();
    let dir = TempDir::new("deploy-compose");
    let ports = free_ports(3);
    let mut nodes = Vec::new();
    for (i, (name, s)) in services.iter().enumerate() {
        // Built from the repository with deploy/Dockerfile, tagged like the manifests' image.
        let build = &s["build"];
        let context = Path::new(ROOT)
            .join("deploy")
            .join(build["context"].as_str().unwrap());
        assert!(
            context
                .join(build["dockerfile"].as_str().unwrap())
                .is_file(),
            "{s}"
        );
        assert!(
            context.join("Cargo.lock").is_file(),
            "the context is the repository: {s}"
        );
        assert_eq!(s["image"], format!("clusterconsensus:{version}"));
        // One volume each, declared at the top level; the container port published.
        let volumes = s["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1);
        let (volume, mount) = volumes[0].as_str().unwrap().split_once(':').unwrap();
        assert!(
            compose["volumes"].get(volume).is_some(),
            "{volume} is not declared"
        );
        let published = s["ports"][0].as_str().unwrap();
        let (host_port, container_port) = published.split_once(':').unwrap();
        assert_eq!(host_port, format!("{}", 9001 + i));

        let args: Vec<String> = s["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            flag(&args, "--listen"),
            vec![format!("0.0.0.0:{container_port}")]
        );
        assert_eq!(
            flag(&args, "--advertise"),
            vec![format!("http://{name}:{container_port}")]
        );
        assert_eq!(flag(&args, "--data-dir"), vec![mount.to_string()]);
        let mut map: Vec<(String, String)> = services
            .keys()
            .zip(&ports)
            .map(|(n, p)| (format!("{n}:{container_port}"), format!("127.0.0.1:{p}")))
            .collect();
        map.push((
            format!("0.0.0.0:{container_port}"),
            format!("127.0.0.1:{}", ports[i]),
        ));
        let data = dir.path().join(volume);
        map.push((mount.to_string(), data.display().to_string()));
        let hosts: Vec<String> = services.keys().map(|n| format!("{n}:")).collect();
        let mut left: Vec<&str> = hosts.iter().map(String::as_str).collect();
        left.push("0.0.0.0");
        let args = map_args(&args, &map, &left);
        let env: Vec<(String, String)> = s["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        nodes.push(Proc::start(dir.path(), name, args, env));
    }
    let cluster = flag(&nodes[0].args, "--cluster").remove(0);
    wait_formed(&nodes, &cluster);
    assert_founded_by_the_first(&nodes);
    submit_ok(&nodes[2].url, &cluster, &[set("k", "v")]).unwrap();
    wait_for(Duration::from_secs(5), "the write on node1", || {
        kv_get(&nodes[0].url, &cluster, "k")
    });
}

#[test]
fn the_systemd_unit_runs_three_nodes_that_form_the_cluster() {
    let rel = "deploy/systemd/clusterconsensus.service";
    let unit = unit_file(rel);
    let service = &unit["Service"];
    let one = |k: &str| -> &str {
        let v = service.get(k).unwrap_or_else(|| panic!("{rel}: no {k}"));
        assert_eq!(v.len(), 1, "{k}");
        &v[0]
    };
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(
        one("RestartPreventExitStatus"),
        "2",
        "a bad setting is not retried"
    );
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 4096 * 2);
    assert_eq!(
        unit["Install"]["WantedBy"],
        vec!["multi-user.target".to_string()]
    );
    let state = format!("/var/lib/{}", one("StateDirectory"));
    let exec = one("ExecStart");
    let (_, _, bins) = crate_facts();
    let program = exec.split_whitespace().next().unwrap();
    assert!(
        bins.iter().any(|b| program.ends_with(&format!("/{b}"))),
        "{exec}"
    );

    // systemd-analyze checks the unit (with the binary just built and the example settings).
    let env_rel = "deploy/systemd/node.env";
    let env_path = Path::new(ROOT).join(env_rel).canonicalize().unwrap();
    let dir = TempDir::new("deploy-systemd");
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(_) => {
            let text = read(rel)
                .replace(program, &binary().display().to_string())
                .replace(one("EnvironmentFile"), &env_path.display().to_string());
            let copy = dir.path().join("clusterconsensus.service");
            std::fs::write(&copy, text).unwrap();
            let out = Command::new("systemd-analyze")
                .arg("verify")
                .arg(&copy)
                .output()
                .unwrap();
            let said = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && said.trim().is_empty(),
                "systemd-analyze verify: {said}"
            );
            println!("systemd-analyze verify: the unit is clean");
        }
        // scripts/setup.sh installs it: a unit that was only parsed is not a pass.
        Err(e) => panic!("systemd-analyze cannot run ({e}): run scripts/setup.sh"),
    }

    // Three machines: the example settings, each with its own address (the join list's
    // entries), as the file's comment says.
    let settings = env_file(env_rel);
    let base: BTreeMap<String, String> = settings.iter().cloned().collect();
    let joins = flag(&systemd_expand(&base["JOIN"], &base), "--join");
    assert_eq!(joins.len(), 3, "{joins:?}");
    assert_eq!(
        base["ADVERTISE"], joins[0],
        "the example is the first machine's"
    );
    let listen_port = port_of(&base["LISTEN"]);
    let ports = free_ports(3);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let mut env = base.clone();
        env.insert("ADVERTISE".into(), joins[i].clone());
        let args = systemd_expand(exec, &env);
        assert_eq!(flag(&args, "--data-dir"), vec![state.clone()]);
        assert_eq!(args[1], "node");
        let mut map: Vec<(String, String)> = joins
            .iter()
            .zip(&ports)
            .map(|(j, p)| (j.clone(), format!("http://127.0.0.1:{p}")))
            .collect();
        map.push((
            format!("0.0.0.0:{listen_port}"),
            format!("127.0.0.1:{}", ports[i]),
        ));
        let data = dir.path().join(format!("machine{}", i + 1));
        map.push((state.clone(), data.display().to_string()));
        let hosts: Vec<String> = joins.iter().map(|j| j.replace("http://", "")).collect();
        let mut left: Vec<&str> = hosts.iter().map(String::as_str).collect();
        left.push("0.0.0.0");
        let args = map_args(&args[1..], &map, &left);
        // systemd passes the file's variables to the process too.
        let env: Vec<(String, String)> = env.into_iter().collect();
        nodes.push(Proc::start(
            dir.path(),
            &format!("machine{}", i + 1),
            args,
            env,
        ));
    }
    let cluster = base["CLUSTER"].clone();
    wait_formed(&nodes, &cluster);
    assert_founded_by_the_first(&nodes);
    // systemctl stop: SIGTERM, a clean exit (not a failure that Restart= would act on).
    assert_eq!(nodes[2].stop(), Some(0));
}

#[test]
fn the_substitutions_follow_kubernetes_and_systemd() {
    let env: BTreeMap<String, String> = [("A", "x"), ("B", "y z"), ("E", "")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(kube_expand("$(A)-$(B)", &env), "x-y z");
    assert_eq!(kube_expand("$(NOPE) $$(A) $", &env), "$(NOPE) $(A) $");
    assert_eq!(
        systemd_expand("p ${A} ${B} $B $E q", &env),
        ["p", "x", "y z", "y", "z", "q"]
    );
    assert_eq!(port_of("http://h:9001/x"), 9001);
    assert_eq!(port_of("0.0.0.0:9001"), 9001);
    let args: Vec<String> = ["--join=a", "--join", "b", "--x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(flag(&args, "--join"), ["a", "b"]);
}
