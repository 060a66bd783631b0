//! The deployment bundle in `otel-config/`: every YAML file parses, the
//! collector pipelines convert (or keep) temporality as flowtel needs, the
//! Kubernetes DaemonSet and the systemd unit grant exactly the three
//! capabilities README.md's "Privileges" names, the DaemonSet runs the
//! image of `container/Dockerfile` as the container test runs it, every
//! dashboard query names metrics and labels flowtel exports (taken from
//! the exporter's code) and a real Prometheus parses it, and the Prometheus
//! server keeps five days, set in one place. Needs no root. (`otel-config/flowtel.yaml` has its own
//! test; the alert rules and Datadog monitors are the `alerts` test's.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use integration::bundle::{self, read, yaml_documents};
use integration::image::{self, CAPABILITIES};
use integration::prometheus::{Prometheus, TempDir, BINARY as PROMETHEUS};
use serde_json::Value;

mod exported;

/// The capabilities flowtel needs, as Kubernetes and systemd spell them.
const KUBERNETES_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];
const SYSTEMD_CAPABILITIES: [&str; 3] = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"];

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap_or_else(|| panic!("not a string: {v}")))
        .collect()
}

#[test]
fn every_yaml_file_of_the_bundle_parses() {
    let names: Vec<String> = bundle::files(".")
        .iter()
        .filter(|p| {
            matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                && p.as_path() != Path::new("flowtel.yaml")
        })
        .map(|p| p.display().to_string())
        .collect();
    for expected in [
        "collector-datadog.yaml",
        "collector-prometheus.yaml",
        "kubernetes/daemonset.yaml",
        "prometheus/prometheus.yml",
        "alerts/flows.rules.yml",
        "alerts/tests/flows.test.yml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    for name in &names {
        let documents = yaml_documents(name);
        assert!(!documents.is_empty(), "{name}: no document");
        for document in documents {
            assert!(document.is_object(), "{name}: not a mapping: {document}");
        }
    }
}

/// The metrics pipeline of a collector configuration.
fn metrics_pipeline(config: &Value) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let pipeline = &config["service"]["pipelines"]["metrics"];
    (
        strings(&pipeline["receivers"]),
        strings(&pipeline["processors"]),
        strings(&pipeline["exporters"]),
    )
}

fn assert_receives_flowtel_otlp(name: &str, config: &Value) {
    let protocols = &config["receivers"]["otlp"]["protocols"];
    assert_eq!(protocols["grpc"]["endpoint"], "0.0.0.0:4317", "{name}");
    assert_eq!(protocols["http"]["endpoint"], "0.0.0.0:4318", "{name}");
    let (receivers, _, _) = metrics_pipeline(config);
    assert_eq!(receivers, ["otlp"], "{name}");
    // Every component the pipeline names is defined.
    let (_, processors, exporters) = metrics_pipeline(config);
    for p in processors {
        assert!(config["processors"].get(p).is_some(), "{name}: {p}");
    }
    for e in exporters {
        assert!(config["exporters"].get(e).is_some(), "{name}: {e}");
    }
}

#[test]
fn the_prometheus_pipeline_turns_flowtel_deltas_into_cumulative_counters() {
    let documents = yaml_documents("collector-prometheus.yaml");
    let config = &documents[0];
    assert_receives_flowtel_otlp("collector-prometheus.yaml", config);
    let (_, processors, exporters) = metrics_pipeline(config);
    assert_eq!(processors.first(), Some(&"memory_limiter"));
    assert_eq!(processors.last(), Some(&"batch"));
    assert!(processors.contains(&"deltatocumulative"), "{processors:?}");
    assert!(exporters.contains(&"prometheus"), "{exporters:?}");
    // A series gets a point once per window (5m by default): it must not be
    // forgotten or expired between two windows.
    assert_eq!(
        config["processors"]["deltatocumulative"]["max_stale"],
        "15m"
    );
    assert_eq!(
        config["exporters"]["prometheus"]["metric_expiration"],
        "15m"
    );
}

#[test]
fn the_datadog_pipeline_keeps_delta_temporality() {
    let documents = yaml_documents("collector-datadog.yaml");
    let config = &documents[0];
    assert_receives_flowtel_otlp("collector-datadog.yaml", config);
    let (_, processors, exporters) = metrics_pipeline(config);
    assert!(!processors.contains(&"deltatocumulative"), "{processors:?}");
    assert_eq!(exporters, ["datadog"]);
    let api = &config["exporters"]["datadog"]["api"];
    assert_eq!(api["key"], "${env:DD_API_KEY}");
    assert_eq!(api["site"], "${env:DD_SITE}");
}

fn kubernetes_object<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let mut found = documents.iter().filter(|d| d["kind"] == kind);
    let object = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    object
}

/// Every `privileged` key anywhere in `value`, with its value.
fn privileged_keys(value: &Value, found: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "privileged" {
                    found.push(v.clone());
                }
                privileged_keys(v, found);
            }
        }
        Value::Array(list) => list.iter().for_each(|v| privileged_keys(v, found)),
        _ => {}
    }
}

#[test]
fn the_daemonset_adds_exactly_three_capabilities_and_is_not_privileged() {
    let documents = yaml_documents("kubernetes/daemonset.yaml");
    let kinds: Vec<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "DaemonSet"
        ]
    );
    let mut privileged = Vec::new();
    privileged_keys(&Value::Array(documents.clone()), &mut privileged);
    assert!(
        privileged.iter().all(|v| v == &Value::Bool(false)),
        "{privileged:?}"
    );

    let pod = &kubernetes_object(&documents, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    assert_eq!(
        strings(&container["command"]),
        [
            "/usr/local/bin/flowtel",
            "run",
            "--config",
            "/etc/flowtel/flowtel.yaml"
        ]
    );
    let security = &container["securityContext"];
    let mut added = strings(&security["capabilities"]["add"]);
    added.sort_unstable();
    assert_eq!(added, KUBERNETES_CAPABILITIES);
    assert_eq!(strings(&security["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);

    // host.name from the node's name, through the downward API.
    let env = container["env"].as_array().unwrap();
    let var = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    assert_eq!(
        var("NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(
        var("OTEL_RESOURCE_ATTRIBUTES")["value"],
        "host.name=$(NODE_NAME)"
    );

    // The host's cgroup-v2 root, read-only, where receiver.cgroup_path says.
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hostPath"]["path"] == "/sys/fs/cgroup")
        .expect("no hostPath volume of /sys/fs/cgroup");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the cgroup volume is not mounted");
    assert_eq!(mount["readOnly"], true);
    let config_map = kubernetes_object(&documents, "ConfigMap");
    let flowtel_yaml = config_map["data"]["flowtel.yaml"].as_str().unwrap();
    let config: Value = serde_saphyr::from_str(flowtel_yaml).unwrap();
    assert_eq!(config["receiver"]["cgroup_path"], mount["mountPath"]);
}

#[test]
fn the_daemonset_may_read_what_names_the_ends_of_flows_and_nothing_else() {
    let documents = yaml_documents("kubernetes/daemonset.yaml");
    let role = kubernetes_object(&documents, "ClusterRole");
    let mut granted: Vec<(String, String, Vec<String>)> = Vec::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let mut verbs: Vec<String> = strings(&rule["verbs"])
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                verbs.sort_unstable();
                granted.push((group.to_owned(), resource.to_owned(), verbs));
            }
        }
    }
    granted.sort();
    let read = vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()];
    let want: Vec<(String, String, Vec<String>)> = [
        ("", "nodes"),
        ("", "pods"),
        ("", "services"),
        ("apps", "replicasets"),
    ]
    .iter()
    .map(|(g, r)| (g.to_string(), r.to_string(), read.clone()))
    .collect();
    assert_eq!(granted, want);

    let binding = kubernetes_object(&documents, "ClusterRoleBinding");
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let account = kubernetes_object(&documents, "ServiceAccount");
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount");
    assert_eq!(subject["name"], account["metadata"]["name"]);
    assert_eq!(subject["namespace"], account["metadata"]["namespace"]);

    let pod = &kubernetes_object(&documents, "DaemonSet")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], account["metadata"]["name"]);
    assert_ne!(pod["automountServiceAccountToken"], false);
    assert_ne!(account["automountServiceAccountToken"], false);
    let config_map = kubernetes_object(&documents, "ConfigMap");
    let config: Value =
        serde_saphyr::from_str(config_map["data"]["flowtel.yaml"].as_str().unwrap()).unwrap();
    assert!(
        config["processor"]["kubernetes"].is_object(),
        "processor.kubernetes in {config}"
    );
}

#[test]
fn the_daemonset_config_map_is_a_valid_flowtel_configuration() {
    let documents = yaml_documents("kubernetes/daemonset.yaml");
    let config_map = kubernetes_object(&documents, "ConfigMap");
    let text = config_map["data"]["flowtel.yaml"].as_str().unwrap();
    let path = std::env::temp_dir().join(format!("flowtel-bundle-{}.yaml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .args(["config", "check"])
        .arg(&path)
        // The check resolves the exporters against the environment: keep
        // the test's own OTEL_* variables out of it.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "flowtel config check: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let effective = String::from_utf8_lossy(&output.stdout);
    assert!(
        effective.contains("endpoint: http://otel-collector.flowtel.svc.cluster.local:4317"),
        "{effective}"
    );
}

/// The values of `key=` in the unit, in order (systemd-style, no sections
/// merged: the unit has each key once).
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    match unit_values(unit, key)[..] {
        [value] => value,
        ref other => panic!("{key}= set {} times: {other:?}", other.len()),
    }
}

#[test]
fn the_systemd_unit_runs_unprivileged_with_three_ambient_capabilities() {
    let unit = read("systemd/flowtel.service");
    let capabilities =
        |key| -> BTreeSet<&str> { unit_value(&unit, key).split_whitespace().collect() };
    let expected: BTreeSet<&str> = SYSTEMD_CAPABILITIES.into_iter().collect();
    assert_eq!(capabilities("AmbientCapabilities"), expected);
    assert_eq!(capabilities("CapabilityBoundingSet"), expected);
    assert_eq!(
        unit_value(&unit, "ExecStart"),
        "/usr/local/bin/flowtel run --config /etc/flowtel/flowtel.yaml"
    );
    assert_eq!(unit_value(&unit, "DynamicUser"), "yes");
    assert!(unit_values(&unit, "User").is_empty(), "not root");
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(unit_value(&unit, "ProtectSystem"), "strict");
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");
    // Other users' /proc/PID must stay readable, and the capabilities must
    // be the initial user namespace's.
    assert!(unit_values(&unit, "ProtectProc").is_empty());
    assert!(unit_values(&unit, "PrivateUsers").is_empty());
}

/// A dashboard query as Prometheus gets it: Grafana's variables given
/// values (every variable's "All", the ranges of a 6-hour view).
fn as_prometheus_gets_it(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__range", "6h")
        .replace("$source_service", ".*")
        .replace("$destination_service", ".*")
        .replace("$k8s_namespace", ".*")
}

/// Every query of the dashboard: (panel title, expression), and the
/// variables' `label_values(...)` queries.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap().to_owned();
        if panel["type"] == "row" {
            assert!(
                panel.get("targets").is_none(),
                "{title}: a row has no query"
            );
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for target in targets {
            assert!(
                refs.insert(target["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            queries.push((title.clone(), target["expr"].as_str().unwrap().to_owned()));
        }
    }
    queries
}

#[test]
fn every_dashboard_query_names_metrics_and_labels_flowtel_exports() {
    let dashboard: Value = serde_json::from_str(&read("grafana/flowtel-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let ids: BTreeSet<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let exported = exported::exported();
    let labels = exported::labels();
    for (title, expr) in &queries {
        let metrics = exported::promql_metrics(expr);
        assert!(!metrics.is_empty(), "{title}: no metric: {expr}");
        for metric in &metrics {
            assert!(
                exported.prometheus.contains(metric),
                "{title}: {metric} is not a metric flowtel exports: {:?}",
                exported.prometheus
            );
        }
        for label in exported::promql_labels(expr) {
            assert!(
                labels.contains(&label),
                "{title}: {label} is not a label flowtel's series carry: {labels:?}"
            );
        }
    }
    let every: Vec<&str> = queries.iter().map(|(_, e)| e.as_str()).collect();
    let names = |expr: &&str| exported::promql_metrics(expr);
    let labelled = |expr: &&str| exported::promql_labels(expr);
    for metric in [
        "network_flow_bytes_total",
        "network_flow_tcp_retransmits_total",
        "network_flow_connections_opened_total",
        "network_flow_connections_failed_total",
        "dns_requests_total",
        "dns_lookup_duration_seconds_bucket",
        "flowtel_feature_state",
        "flowtel_netns_unreachable",
    ] {
        assert!(every.iter().any(|e| names(e).contains(metric)), "{metric}");
    }
    // The panels issue 18 asks for, by the attributes they group or filter by.
    for label in [
        "source_k8s_pod_name",
        "destination_k8s_pod_name",
        "source_k8s_namespace_name",
        "destination_k8s_namespace_name",
        "source_k8s_deployment_name",
        "destination_k8s_service_name",
        "source_k8s_node_name",
        "dns_response_code",
        "dns_question_name",
        "destination_domain",
        "destination_translated_address",
        "feature",
    ] {
        assert!(every.iter().any(|e| labelled(e).contains(label)), "{label}");
    }
    // dns.lookup.duration as quantiles of its buckets.
    for q in ["0.5", "0.9", "0.99"] {
        assert!(
            every
                .iter()
                .any(|e| e.starts_with(&format!("histogram_quantile({q}, "))
                    && e.contains("dns_lookup_duration_seconds_bucket")
                    && labelled(e).contains("le")),
            "p{q} of dns_lookup_duration_seconds"
        );
    }
    assert!(every.contains(
        &"sum by (source_service, destination_service) (rate(network_flow_bytes_total{source_service=~\"$source_service\", destination_service=~\"$destination_service\"}[$__rate_interval]))"
    ));
    let variables: Vec<(&str, &str)> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap(),
                v["definition"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        variables,
        [
            ("datasource", ""),
            (
                "source_service",
                "label_values(network_flow_bytes_total, source_service)"
            ),
            (
                "destination_service",
                "label_values(network_flow_bytes_total, destination_service)"
            ),
            (
                "k8s_namespace",
                "label_values(network_flow_bytes_total, source_k8s_namespace_name)"
            ),
        ]
    );
}

/// `s` for a URL's query string.
fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn a_real_prometheus_takes_every_dashboard_query() {
    let dashboard: Value = serde_json::from_str(&read("grafana/flowtel-dashboard.json")).unwrap();
    let dir = TempDir::new("dashboard-prometheus");
    let config = dir.write("prometheus.yml", "global:\n  scrape_interval: 1m\n");
    let prometheus = Prometheus::launch(dir, &[format!("--config.file={}", config.display())]);
    for (title, expr) in dashboard_queries(&dashboard) {
        let query = as_prometheus_gets_it(&expr);
        // Panics with Prometheus' parse error if it refuses the query.
        let data = prometheus.api(&format!("/api/v1/query?query={}", url_encoded(&query)));
        assert!(data["resultType"].is_string(), "{title}: {data}");
    }
}

/// The Prometheus flag of how long the scraped series are kept.
const RETENTION: &str = "--storage.tsdb.retention.time";

#[test]
fn the_prometheus_server_keeps_five_days_set_in_one_place() {
    let unit = read("prometheus/flowtel-prometheus.service");
    let exec = unit_value(&unit, "ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some(PROMETHEUS), "{exec}");
    let flags: Vec<&str> = words.collect();
    let flag = |name: &str| -> Vec<&str> {
        flags
            .iter()
            .filter_map(|f| f.strip_prefix(name)?.strip_prefix('='))
            .collect()
    };
    assert_eq!(flag(RETENTION), ["5d"], "{exec}");
    assert_eq!(
        flag("--config.file"),
        ["/etc/flowtel/prometheus/prometheus.yml"]
    );
    assert_eq!(unit_value(&unit, "User"), "prometheus");
    assert_eq!(unit_value(&unit, "Restart"), "on-failure");

    // The one place: no other file of the bundle sets a retention (the
    // READMEs say where it is).
    for name in bundle::files(".") {
        if name.file_name().unwrap() == "README.md"
            || name == Path::new("prometheus/flowtel-prometheus.service")
        {
            continue;
        }
        let text = std::fs::read(bundle::dir().join(&name)).unwrap();
        assert!(
            !String::from_utf8_lossy(&text).contains("retention.time"),
            "{} sets a retention: the unit is the one place",
            name.display()
        );
    }
    let readme = read("README.md");
    for said in [
        "flowtel-prometheus.service",
        "--storage.tsdb.retention.time=5d",
    ] {
        assert!(readme.contains(said), "otel-config/README.md: {said}");
    }

    // The configuration is valid, rule files included.
    let config = bundle::dir().join("prometheus/prometheus.yml");
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool: {e}: install Debian's `prometheus` package (.ci/run does)")
        });
    assert!(
        check.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The real server, started as the unit starts it (its data and web
    // address in a temporary place), keeps 5 days and loads the rules.
    let mut args: Vec<String> = flags
        .iter()
        .filter(|f| {
            !f.starts_with("--storage.tsdb.path=") && !f.starts_with("--web.listen-address=")
        })
        .map(|f| f.to_string())
        .collect();
    for arg in &mut args {
        if arg.starts_with("--config.file=") {
            *arg = format!("--config.file={}", config.display());
        }
    }
    let prometheus = Prometheus::launch(TempDir::new("bundle-prometheus"), &args);
    let runtime = prometheus.api("/api/v1/status/runtimeinfo");
    assert_eq!(runtime["storageRetention"], "5d", "{runtime}");
    let rules = prometheus.api("/api/v1/rules");
    let mut groups: Vec<(&str, usize)> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap(),
                g["rules"].as_array().unwrap().len(),
            )
        })
        .collect();
    groups.sort_unstable();
    let written = bundle::alert_rules();
    let mut expected: Vec<(&str, usize)> = Vec::new();
    for rule in &written {
        match expected.iter_mut().find(|(group, _)| *group == rule.group) {
            Some((_, n)) => *n += 1,
            None => expected.push((rule.group.as_str(), 1)),
        }
    }
    expected.sort_unstable();
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(groups, expected, "{}", prometheus.log());
}

/// The instructions of the Dockerfile: (instruction, rest), continuation
/// lines joined, comments left out.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("container/Dockerfile");
    let mut joined = String::new();
    let mut instructions = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if joined.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => joined.push_str(part),
            None => {
                joined.push_str(line);
                let (word, rest) = joined.split_once(' ').unwrap_or((&joined, ""));
                instructions.push((word.to_owned(), rest.trim().to_owned()));
                joined.clear();
            }
        }
    }
    instructions
}

fn instruction(instructions: &[(String, String)], word: &str) -> Vec<String> {
    instructions
        .iter()
        .filter(|(w, _)| w == word)
        .map(|(_, rest)| rest.clone())
        .collect()
}

#[test]
fn the_dockerfile_builds_on_an_official_debian_base_by_default() {
    let instructions = dockerfile();
    assert_eq!(
        instructions[0],
        ("ARG".to_owned(), "BASE=debian:bookworm-slim".to_owned())
    );
    assert_eq!(instruction(&instructions, "FROM"), ["${BASE}"]);
    assert_eq!(
        instruction(&instructions, "COPY"),
        [
            "target/release/flowtel /usr/local/bin/flowtel",
            "otel-config/container/flowtel.yaml /etc/flowtel/flowtel.yaml"
        ]
    );
    assert_eq!(instruction(&instructions, "USER"), ["0:0"]);
    // The repository's .dockerignore lets through what the COPYs take.
    let ignore = std::fs::read_to_string(bundle::dir().join("../.dockerignore")).unwrap();
    let kept: Vec<&str> = ignore.lines().filter_map(|l| l.strip_prefix('!')).collect();
    assert_eq!(
        kept,
        [
            "target/release/flowtel",
            "otel-config/container/flowtel.yaml"
        ]
    );
    assert!(
        ignore.lines().any(|l| l == "*"),
        "everything else is left out"
    );
}

/// The image's own configuration.
fn image_config() -> Value {
    yaml_documents("container/flowtel.yaml").remove(0)
}

#[test]
fn the_daemonset_runs_the_image_as_the_container_test_does() {
    let documents = yaml_documents("kubernetes/daemonset.yaml");
    let pod = &kubernetes_object(&documents, "DaemonSet")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let image_name = container["image"].as_str().unwrap();
    assert!(
        image_name.ends_with(&format!("/flowtel:{}", env!("CARGO_PKG_VERSION"))),
        "{image_name}: the Dockerfile's image, tagged with flowtel's version"
    );
    // The Dockerfile's entrypoint and default command are the pod's.
    let instructions = dockerfile();
    let entrypoint: Vec<String> =
        serde_json::from_str(&instruction(&instructions, "ENTRYPOINT")[0]).unwrap();
    let cmd: Vec<String> = serde_json::from_str(&instruction(&instructions, "CMD")[0]).unwrap();
    let command: Vec<String> = strings(&container["command"])
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(command, [entrypoint, cmd].concat());
    // The capabilities the container test gives `docker run`.
    let mut added = strings(&container["securityContext"]["capabilities"]["add"]);
    added.sort_unstable();
    let mut expected = CAPABILITIES.to_vec();
    expected.sort_unstable();
    assert_eq!(added, expected);
    assert_eq!(expected, KUBERNETES_CAPABILITIES);
    // The cgroup root where the image's configuration and the ConfigMap's
    // look for it, and where both `docker run` and the pod mount it.
    let config_map = kubernetes_object(&documents, "ConfigMap");
    let config: Value =
        serde_saphyr::from_str(config_map["data"]["flowtel.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(
        config["receiver"]["cgroup_path"],
        image_config()["receiver"]["cgroup_path"]
    );
    assert_eq!(
        image_config()["receiver"]["cgroup_path"],
        "/host/sys/fs/cgroup"
    );
    let name = image::name();
    let run = image::run_command(&name, image::Grant::CapAdd, "x", &[]);
    let args: Vec<String> = run
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert!(
        args.iter().any(|a| a.ends_with(":/host/sys/fs/cgroup:ro")),
        "{args:?}"
    );
    for forbidden in ["--privileged", "SYS_ADMIN", "ALL"] {
        if forbidden == "ALL" {
            // Only as what is dropped.
            let at = args.iter().position(|a| a == "ALL").unwrap();
            assert_eq!(args[at - 1], "--cap-drop");
            continue;
        }
        assert!(!args.iter().any(|a| a.contains(forbidden)), "{args:?}");
    }
}

#[test]
fn the_image_configuration_is_a_valid_flowtel_configuration() {
    let output = Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .args(["config", "check"])
        .arg(bundle::dir().join("container/flowtel.yaml"))
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "flowtel config check: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let config = image_config();
    assert_eq!(config["processor"]["containers"]["docker"], false);
    assert_eq!(config["processor"]["containers"]["containerd"], false);
}

#[test]
fn the_seccomp_profile_allows_bpf_and_no_way_out_of_the_container() {
    let profile: Value = serde_json::from_str(&read("container/seccomp.json")).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    let mut allowed = BTreeSet::new();
    for rule in profile["syscalls"].as_array().unwrap() {
        if rule["action"] != "SCMP_ACT_ALLOW" {
            continue;
        }
        for name in strings(&rule["names"]) {
            if name == "clone" {
                // Only without namespace flags.
                assert_eq!(rule["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
                assert_eq!(rule["args"][0]["value"], 0x7e02_0000u64);
                assert_eq!(rule["args"][0]["valueTwo"], 0);
            }
            assert!(allowed.insert(name), "{name} twice");
        }
    }
    for needed in [
        "bpf",
        "perf_event_open",
        "socket",
        "sendmsg",
        "recvmsg",
        "execve",
    ] {
        assert!(allowed.contains(needed), "{needed}");
    }
    for refused in [
        "setns",
        "unshare",
        "mount",
        "umount2",
        "pivot_root",
        "ptrace",
        "process_vm_readv",
        "kexec_load",
        "init_module",
        "finit_module",
        "delete_module",
        "open_by_handle_at",
        "keyctl",
        "add_key",
        "request_key",
        "userfaultfd",
        "reboot",
        "swapon",
        "personality",
        "clone3",
    ] {
        assert!(!allowed.contains(refused), "{refused} is allowed");
    }
}
