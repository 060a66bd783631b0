//! What flowtel exports, taken from the exporter's own code rather than
//! written down: the metrics' OpenTelemetry names and kinds, their
//! Prometheus names (as flowtel's endpoint renders the flows' and DNS
//! metrics, and as a collector's Prometheus exporter names the health
//! metrics), and the attributes their series carry, as label names. The
//! `alerts` and `bundle` tests check the rules, monitors and dashboard
//! queries against it.

// Each of the two tests uses a part of it.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use exporter::health::Health;
use exporter::metrics::{dns_points, points, Spec, Value};
use exporter::otlp::delivery::Losses;
use exporter::prometheus::names::{label_name, metric_name};
use exporter::prometheus::Exposition;
use health::PollHealth;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use processor::dns::{DnsSeries, DnsStats, DNS_ATTRIBUTES};
use processor::{AttributeValue, Attributes, FlowStats, Series, WindowReport};
use receiver::Rtt;
use regex::Regex;

/// What kind of metric, as far as its names go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A monotonic Sum.
    Counter,
    Gauge,
    Histogram,
}

/// The names of the metrics flowtel exports.
pub struct Exported {
    /// By OpenTelemetry name (what Datadog's OTLP intake keeps): the kind.
    pub otel: BTreeMap<String, Kind>,
    /// The Prometheus names of every metric (a histogram's `_bucket`,
    /// `_sum` and `_count`).
    pub prometheus: BTreeSet<String>,
}

/// The Prometheus names of an OpenTelemetry metric, by the translation
/// flowtel's own endpoint applies (its `metric_name`) and, past what that
/// endpoint serves, the collector's (a gauge of unit `1` gets `_ratio`, a
/// histogram is `_bucket`, `_sum` and `_count`).
pub fn prometheus_names(name: &str, unit: &str, kind: Kind) -> Vec<String> {
    let spec = Spec {
        name: Box::leak(name.to_owned().into_boxed_str()),
        unit: Box::leak(unit.to_owned().into_boxed_str()),
        description: "",
    };
    let base = metric_name(&spec, kind == Kind::Counter);
    match kind {
        Kind::Gauge if unit == "1" && !base.ends_with("_ratio") => vec![format!("{base}_ratio")],
        Kind::Histogram => ["bucket", "sum", "count"]
            .iter()
            .map(|suffix| format!("{base}_{suffix}"))
            .collect(),
        _ => vec![base],
    }
}

/// A series with something in every counter, RTT and a failure, so that
/// it makes a point of every flow metric.
fn busy_series() -> Series {
    let mut stats = FlowStats {
        bytes_sent: 1,
        bytes_received: 1,
        packets_sent: 1,
        packets_received: 1,
        retransmits: 1,
        connections_opened: 1,
        connections_closed: 1,
        ..FlowStats::default()
    };
    stats.connections_failed.refused = 1;
    stats.rtt.record(Rtt::from_micros(1000, 1000));
    Series {
        attributes: [("network.transport", AttributeValue::from("tcp"))]
            .into_iter()
            .collect(),
        stats,
    }
}

/// A DNS series with an answered lookup: both DNS metrics.
fn answered_lookups() -> DnsSeries {
    let mut attributes = Attributes::new();
    attributes.set("dns.question.name", "example.com");
    attributes.set("dns.response.code", "NOERROR");
    let mut stats = DnsStats {
        requests: 1,
        ..DnsStats::default()
    };
    stats.durations.record(Duration::from_millis(3));
    DnsSeries { attributes, stats }
}

/// What flowtel exports, from the exporter's code: the flow and DNS
/// metrics a busy window makes and the names flowtel's Prometheus
/// endpoint gives them, and the health metrics the health instruments
/// collect.
pub fn exported() -> Exported {
    let mut exported = Exported {
        otel: BTreeMap::new(),
        prometheus: BTreeSet::new(),
    };
    let series = busy_series();
    let lookups = answered_lookups();
    let mut made = BTreeMap::new();
    points(&series, |spec, _, value| {
        let kind = match value {
            Value::Sum(_) => Kind::Counter,
            Value::Gauge(_) => Kind::Gauge,
        };
        made.insert(spec.name, (spec.unit, kind));
    });
    let made = std::cell::RefCell::new(made);
    dns_points(
        &lookups,
        |spec, _, _| {
            made.borrow_mut()
                .insert(spec.name, (spec.unit, Kind::Counter));
        },
        |spec, _, _| {
            made.borrow_mut()
                .insert(spec.name, (spec.unit, Kind::Histogram));
        },
    );
    let made = made.into_inner();
    let mut exposition = Exposition::new(&BTreeMap::new(), 12);
    exposition.add(&WindowReport {
        start: UNIX_EPOCH,
        end: UNIX_EPOCH + Duration::from_secs(300),
        series: vec![series],
        overflowed_series: 0,
        dns: vec![lookups],
        overflowed_dns_series: 0,
    });
    // The names of the samples the endpoint serves.
    let served: BTreeSet<String> = exposition
        .render()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| *name != "target_info")
        .map(str::to_owned)
        .collect();
    let translated: BTreeSet<String> = made
        .iter()
        .flat_map(|(name, (unit, kind))| prometheus_names(name, unit, *kind))
        .collect();
    // The translation here agrees with the endpoint's.
    assert_eq!(served, translated);
    exported.prometheus.extend(served);
    for (name, (_, kind)) in made {
        exported.otel.insert(name.to_owned(), kind);
    }

    let health = Health::new(
        &BTreeMap::new(),
        true,
        Arc::new(Losses::default()),
        Arc::new(|| 0),
    );
    health.record_poll(&PollHealth {
        tracked_connections: 1,
        map_capacity: 2,
        ..PollHealth::default()
    });
    health.record_overflow(1);
    let request = health.collect().expect("the health metrics");
    for metric in request
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
    {
        let kind = match &metric.data {
            Some(Data::Sum(sum)) if sum.is_monotonic => Kind::Counter,
            Some(Data::Gauge(_)) => Kind::Gauge,
            Some(Data::Histogram(_)) => Kind::Histogram,
            other => panic!(
                "{}: a kind of metric not known here: {other:?}",
                metric.name
            ),
        };
        exported
            .prometheus
            .extend(prometheus_names(&metric.name, &metric.unit, kind));
        exported.otel.insert(metric.name.clone(), kind);
    }
    exported
}

/// Every label a flowtel series can carry under Prometheus: the flows'
/// attributes (built in, from the container runtimes and Kubernetes, from
/// the mappings), the points' own (`network.io.direction`, `error.type`),
/// the DNS series', the health metrics' `feature`, the resource's (which a
/// collector copies onto every series), and a histogram's `le`.
pub fn labels() -> BTreeSet<String> {
    let mapped = [
        "source.service",
        "destination.service",
        "source.port.name",
        "destination.port.name",
        processor::OVERFLOW_ATTRIBUTE,
    ];
    let points = ["network.io.direction", "error.type", "feature"];
    let resource = ["host.name", "service.name", "service.version"];
    processor::BUILT_IN_ATTRIBUTES
        .iter()
        .chain(&processor::NAMED_ATTRIBUTES)
        .chain(&DNS_ATTRIBUTES)
        .chain(&mapped)
        .chain(&points)
        .chain(&resource)
        .map(|name| label_name(name))
        .chain(["le".to_owned()])
        .collect()
}

/// The metric names a PromQL expression selects: what is left once strings,
/// label matchers, ranges, durations, numbers, the label lists of `by`,
/// `without`, `on`, `ignoring` and `group_*`, function calls and keywords
/// are taken out.
pub fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let literals =
        Regex::new(r#""(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\{[^}]*\}|\[[^\]]*\]"#).unwrap();
    let label_lists =
        Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)").unwrap();
    let numbers = Regex::new(r"\b\d+(?:\.\d+)?(?:ms|[smhdwy])?\b").unwrap();
    let words = Regex::new(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?").unwrap();
    let text = literals.replace_all(expr, " ");
    let text = label_lists.replace_all(&text, " ");
    let text = numbers.replace_all(&text, " ");
    words
        .captures_iter(&text)
        .filter(|c| c.get(2).is_none())
        .map(|c| c[1].to_owned())
        .filter(|w| !matches!(w.as_str(), "and" | "or" | "unless" | "offset" | "bool"))
        .collect()
}

/// The label names a PromQL expression uses: in matchers (`{a="b"}`) and
/// in the label lists of `by`, `without`, `on`, `ignoring` and `group_*`.
pub fn promql_labels(expr: &str) -> BTreeSet<String> {
    let strings = Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap();
    let text = strings.replace_all(expr, "\"\"");
    let matchers = Regex::new(r"\{([^}]*)\}").unwrap();
    let matcher = Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"""#).unwrap();
    let lists =
        Regex::new(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)").unwrap();
    let mut found = BTreeSet::new();
    for inside in matchers.captures_iter(&text) {
        for m in matcher.captures_iter(&inside[1]) {
            found.insert(m[1].to_owned());
        }
    }
    for list in lists.captures_iter(&text) {
        found.extend(
            list[1]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    found
}
