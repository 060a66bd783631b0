//! The deployment bundle in `otel-config/`: every YAML file parses, the
//! collector pipelines convert (or keep) temporality as flowtel needs, the
//! Kubernetes DaemonSet and the systemd unit grant exactly the three
//! capabilities README.md's "Privileges" names, every dashboard panel
//! queries a flowtel metric, and the Prometheus server keeps five days,
//! set in one place. Needs no root. (`otel-config/flowtel.yaml` has its own
//! test; the alert rules and Datadog monitors are the `alerts` test's.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use integration::bundle::{self, read, yaml_documents};
use integration::prometheus::{Prometheus, TempDir, BINARY as PROMETHEUS};
use serde_json::Value;

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

#[test]
fn every_dashboard_panel_queries_a_flowtel_metric() {
    let dashboard: Value = serde_json::from_str(&read("grafana/flowtel-dashboard.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 4, "{} panels", panels.len());
    let mut exprs = Vec::new();
    for panel in panels {
        let title = &panel["title"];
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains("network_flow_"), "{title}: {expr}");
            exprs.push(expr);
        }
    }
    for metric in [
        "network_flow_bytes_total",
        "network_flow_tcp_retransmits_total",
        "network_flow_connections_opened_total",
        "network_flow_connections_failed_total",
    ] {
        assert!(exprs.iter().any(|e| e.contains(metric)), "{metric}");
    }
    assert!(exprs.contains(
        &"sum by (source_service, destination_service) (rate(network_flow_bytes_total{source_service=~\"$source_service\", destination_service=~\"$destination_service\"}[$__rate_interval]))"
    ));
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        variables,
        ["datasource", "source_service", "destination_service"]
    );
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
