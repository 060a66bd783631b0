//! flowtel's alerts: the Prometheus alerting rules of `otel-config/alerts/`
//! and the Datadog monitors of `otel-config/datadog/monitors/`. Every rule
//! and monitor query names metrics flowtel exports (the list is taken from
//! the exporter's own code, not written here) or one of the few it is
//! written for ahead of them ([`PENDING`]); every rule has a summary, a
//! runbook and a severity, passes `promtool test rules` with a case where
//! it fires and one where it must not, and has a Datadog monitor; every
//! monitor loads into Datadog's API client. Needs no root, but promtool
//! (Debian's `prometheus` package) and python3 with datadog-api-client
//! (`otel-config/datadog/requirements.txt`): without them it fails, it does
//! not skip. `.ci/run` installs both.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

use integration::bundle::{self, alert_rules, read, yaml_documents};
use integration::prometheus::TempDir;
use regex::Regex;

mod exported;
use exported::{exported, prometheus_names, promql_metrics, Exported, Kind};

/// Metrics the alerts are written for before flowtel exports them: name,
/// unit, kind and what they wait for. Once one is exported, the test says
/// so: then remove it here. (`dns.requests`, which the DNS rules were
/// written for ahead of issue 16, is exported now.)
const PENDING: [(&str, &str, Kind, &str); 0] = [];

/// [`exported`] and [`PENDING`] together: what the alerts may name.
fn nameable() -> Exported {
    let mut all = exported();
    for (name, unit, kind, _) in PENDING {
        all.otel.insert(name.to_owned(), kind);
        all.prometheus.extend(prometheus_names(name, unit, kind));
    }
    all
}

#[test]
fn the_exported_metrics_are_those_of_the_exporters_code() {
    let exported = exported();
    for name in [
        "network_flow_bytes_total",
        "network_flow_packets_total",
        "network_flow_tcp_retransmits_total",
        "network_flow_connections_failed_total",
        "network_flow_tcp_rtt_seconds",
        "flowtel_connections_dropped_total",
        "flowtel_map_fill_ratio",
        "flowtel_windows_dropped_total",
        "flowtel_export_failures_total",
        "flowtel_poll_duration_seconds_bucket",
        "dns_requests_total",
        "dns_lookup_duration_seconds_bucket",
    ] {
        assert!(
            exported.prometheus.contains(name),
            "{name}: {:?}",
            exported.prometheus
        );
    }
    assert_eq!(
        exported.otel.get("network.flow.bytes"),
        Some(&Kind::Counter)
    );
    assert_eq!(exported.otel.get("flowtel.map.fill"), Some(&Kind::Gauge));
    assert_eq!(exported.otel.get("dns.requests"), Some(&Kind::Counter));
    assert_eq!(
        exported.otel.get("dns.lookup.duration"),
        Some(&Kind::Histogram)
    );
    for (name, unit, kind, waiting_for) in PENDING {
        assert!(
            !exported.otel.contains_key(name),
            "{name} is exported now ({waiting_for} is done): remove it from PENDING"
        );
        for prometheus in prometheus_names(name, unit, kind) {
            assert!(!exported.prometheus.contains(&prometheus), "{prometheus}");
        }
    }
}

#[test]
fn promql_metrics_finds_the_selected_metrics_only() {
    assert_eq!(
        promql_metrics(
            r#"sum by (a, b) (rate(x_total{c="d", e=~"f|g"}[15m] offset 1h)) / on (a) group_left (h) y > 0.5 and z unless w"#
        ),
        ["w", "x_total", "y", "z"]
            .into_iter()
            .map(str::to_owned)
            .collect()
    );
}

#[test]
fn every_alert_rule_names_only_metrics_flowtel_exports() {
    let nameable = nameable();
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{} rules", rules.len());
    for rule in &rules {
        let metrics = promql_metrics(rule.expr());
        assert!(
            !metrics.is_empty(),
            "{}: no metric: {}",
            rule.name(),
            rule.expr()
        );
        for metric in &metrics {
            assert!(
                nameable.prometheus.contains(metric),
                "{} ({}): {metric} is not a metric flowtel exports: {:?}",
                rule.name(),
                rule.file,
                nameable.prometheus
            );
        }
    }
}

#[test]
fn every_alert_rule_has_a_summary_a_runbook_and_a_severity() {
    let mut names = BTreeSet::new();
    for rule in alert_rules() {
        let name = rule.name().to_owned();
        assert!(name.starts_with("Flowtel"), "{name} ({})", rule.file);
        for annotation in ["summary", "runbook"] {
            let text = rule.rule["annotations"][annotation].as_str().unwrap_or("");
            assert!(text.len() > 20, "{name}: {annotation}: {text:?}");
        }
        let severity = &rule.rule["labels"]["severity"];
        assert!(
            ["critical", "warning", "info"]
                .iter()
                .any(|s| severity == s),
            "{name}: severity {severity}"
        );
        assert!(names.insert(name.clone()), "{name} twice");
    }
}

/// Runs `program` with `args` in the repository; panics, saying how to get
/// it, when it cannot be started.
fn run(program: &str, args: &[&str], install: &str) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(bundle::dir().join(".."))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}: {install} (.ci/run does)"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

const PROMTOOL: &str = "install Debian's `prometheus` package, which has promtool";

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let rule_files: Vec<String> = bundle::files_ending("alerts", ".rules.yml")
        .iter()
        .map(|f| format!("otel-config/{f}"))
        .collect();
    let test_files: Vec<String> = bundle::files_ending("alerts/tests", ".test.yml")
        .iter()
        .map(|f| format!("otel-config/{f}"))
        .collect();
    assert!(!test_files.is_empty());
    for (what, files) in [
        (["check", "rules"], &rule_files),
        (["test", "rules"], &test_files),
    ] {
        let args: Vec<&str> = what
            .iter()
            .copied()
            .chain(files.iter().map(String::as_str))
            .collect();
        let output = run("promtool", &args, PROMTOOL);
        let said = text(&output);
        println!("promtool {}:\n{said}", args.join(" "));
        assert!(
            output.status.success(),
            "promtool {}:\n{said}",
            args.join(" ")
        );
        assert!(!said.contains("FAILED"), "{said}");
    }
}

#[test]
fn every_alert_has_a_test_where_it_fires_and_one_where_it_must_not() {
    // Per alert: seen firing, seen silent.
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for file in bundle::files_ending("alerts/tests", ".test.yml") {
        for document in yaml_documents(&file) {
            for test in document["tests"].as_array().into_iter().flatten() {
                for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                    let name = case["alertname"].as_str().unwrap().to_owned();
                    let fires = !case["exp_alerts"].as_array().unwrap().is_empty();
                    let seen = cases.entry(name).or_default();
                    if fires {
                        seen.0 = true;
                    } else {
                        seen.1 = true;
                    }
                }
            }
        }
    }
    let names: BTreeSet<String> = alert_rules().iter().map(|r| r.name().to_owned()).collect();
    for name in &names {
        assert_eq!(
            cases.get(name),
            Some(&(true, true)),
            "{name}: (a case where it fires, a case where it must not)"
        );
    }
    for name in cases.keys() {
        assert!(names.contains(name), "a test of {name}, which no rule has");
    }
}

/// Every monitor definition: its file name and JSON.
fn monitors() -> Vec<(String, serde_json::Value)> {
    let monitors: Vec<(String, serde_json::Value)> =
        bundle::files_ending("datadog/monitors", ".json")
            .into_iter()
            .map(|file| {
                let monitor = serde_json::from_str(&read(&file))
                    .unwrap_or_else(|e| panic!("otel-config/{file}: {e}"));
                (file, monitor)
            })
            .collect();
    assert!(monitors.len() >= 10, "{} monitors", monitors.len());
    monitors
}

/// The metrics a Datadog metric query names (`sum:network.flow.bytes{...}`),
/// each with whether `.as_count()` or `.as_rate()` follows it.
fn datadog_metrics(query: &str) -> Vec<(String, bool)> {
    let metric = Regex::new(
        r"\b(?:sum|avg|min|max|p\d+):([A-Za-z][A-Za-z0-9_.]*)\{[^}]*\}(?:\s*by\s*\{[^}]*\})?(\.as_count\(\)|\.as_rate\(\))?",
    )
    .unwrap();
    metric
        .captures_iter(query)
        .map(|c| (c[1].to_owned(), c.get(2).is_some()))
        .collect()
}

#[test]
fn every_datadog_monitor_query_names_only_metrics_flowtel_exports() {
    let nameable = nameable();
    for (file, monitor) in monitors() {
        let query = monitor["query"].as_str().unwrap_or_default();
        let metrics = datadog_metrics(query);
        assert!(!metrics.is_empty(), "{file}: no metric: {query}");
        for (metric, as_count) in metrics {
            let kind = nameable.otel.get(&metric).unwrap_or_else(|| {
                panic!(
                    "{file}: {metric} is not a metric flowtel exports: {:?}",
                    nameable.otel.keys()
                )
            });
            // Counts (delta sums) are read as counts or rates; a gauge is not.
            assert_eq!(
                as_count,
                *kind == Kind::Counter,
                "{file}: {metric} is a {kind:?}: {query}"
            );
        }
    }
}

#[test]
fn every_alert_rule_has_a_datadog_monitor() {
    let tagged: BTreeSet<String> = monitors()
        .iter()
        .flat_map(|(_, m)| m["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|tag| Some(tag.as_str()?.strip_prefix("prometheus_alert:")?.to_owned()))
        .collect();
    let names: BTreeSet<String> = alert_rules().iter().map(|r| r.name().to_owned()).collect();
    assert_eq!(tagged, names);
}

const VALIDATOR: &str = "otel-config/datadog/validate_monitors.py";
const DATADOG_CLIENT: &str =
    "install python3 and `pip install -r otel-config/datadog/requirements.txt`";

#[test]
fn the_datadog_monitors_load_into_datadogs_api_client() {
    let output = run("python3", &[VALIDATOR], DATADOG_CLIENT);
    let said = text(&output);
    println!("{VALIDATOR}:\n{said}");
    assert!(output.status.success(), "{VALIDATOR}:\n{said}");
    let n = monitors().len();
    assert!(
        said.contains(&format!("\n{n} of {n} monitors valid")),
        "{said}"
    );
}

/// A change that makes a monitor definition wrong.
type Spoil = fn(&mut serde_json::Value);

#[test]
fn the_monitor_validation_rejects_what_the_api_would_not_take() {
    let (_, good) = monitors().remove(0);
    let dir = TempDir::new("broken-monitors");
    let broken: [(&str, Spoil, &str); 5] = [
        (
            "type",
            |m| m["type"] = "query alrt".into(),
            ".type: 'query alrt' is not a value the API knows",
        ),
        (
            "key",
            |m| m["options"]["notify_no_dat"] = true.into(),
            "unknown key .options.notify_no_dat",
        ),
        (
            "critical",
            |m| m["options"]["thresholds"]["critical"] = "high".into(),
            "Invalid type for variable 'critical'",
        ),
        (
            "threshold",
            |m| m["options"]["thresholds"]["critical"] = 12345.0.into(),
            "is not the query's",
        ),
        (
            "id",
            |m| m["id"] = 7.into(),
            "id is set by the API, not by a definition",
        ),
    ];
    let mut args = vec![VALIDATOR.to_owned()];
    for (name, spoil, _) in &broken {
        let mut monitor = good.clone();
        spoil(&mut monitor);
        let path = dir.write(&format!("{name}.json"), &monitor.to_string());
        args.push(path.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run("python3", &args, DATADOG_CLIENT);
    let said = text(&output);
    assert_eq!(output.status.code(), Some(1), "{said}");
    for (name, _, reason) in broken {
        let line = said
            .lines()
            .find(|l| l.starts_with(&format!("FAIL {name}.json: ")))
            .unwrap_or_else(|| panic!("{name}: not rejected: {said}"));
        assert!(line.contains(reason), "{name}: {line}");
    }
    assert!(said.contains("\n0 of 5 monitors valid"), "{said}");
}
