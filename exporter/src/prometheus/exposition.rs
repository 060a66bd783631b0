//! The running totals of every series and their text in the Prometheus
//! exposition format (version 0.0.4).
//!
//! Names follow the OpenTelemetry-to-Prometheus translation (OpenTelemetry's
//! "Prometheus and OpenMetrics compatibility" specification, as Prometheus'
//! own OTLP receiver and the collector's Prometheus exporter apply it):
//! characters outside `[a-zA-Z0-9_:]` become `_`, the unit is appended as a
//! word (`By` -> `bytes`, `s` -> `seconds`; annotations like `{packet}` are
//! dropped) unless the name already ends with it, and monotonic sums get
//! `_total`: `network.flow.bytes` (By) is `network_flow_bytes_total`,
//! `network.flow.tcp.rtt` (s) is `network_flow_tcp_rtt_seconds`. Attribute
//! names become label names the same way (`source.process.name` ->
//! `source_process_name`; a leading digit gets `key_`); two attributes that
//! become the same label have their values joined with `;`, in the order of
//! their names. The resource is the `target_info` gauge.
//!
//! The text is written here rather than with the `prometheus-client` crate:
//! that crate derives names itself from a base name and a unit (so it would
//! need the translated name split back apart), writes OpenMetrics with
//! `# UNIT` and `# EOF` lines, and keeps label sets as typed structs; the
//! 0.0.4 text format for counters and gauges is a few lines, and writing it
//! keeps the names exactly those of the specification and the output exact
//! for tests.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use processor::dns::{LatencyHistogram, LATENCY_BOUNDS_SECS};
use processor::WindowReport;

use crate::metrics::{dns_points, points, Attributes, Spec, Value};

/// The `Content-Type` of the exposition text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label names and values of one sample, sorted by name.
type Labels = Vec<(String, String)>;

/// Cumulative counters and last-window gauges of every series seen, and
/// their text.
#[derive(Debug)]
pub struct Exposition {
    /// `target_info`, written once.
    target_info: String,
    /// Per metric (by OpenTelemetry name), its samples.
    families: HashMap<&'static str, Family>,
    /// Per histogram metric, its running durations by labels.
    histograms: HashMap<&'static str, HistogramFamily>,
    idle_windows: u64,
    /// Windows added so far.
    windows: u64,
}

#[derive(Debug)]
struct Family {
    spec: &'static Spec,
    /// The Prometheus name.
    name: String,
    counter: bool,
    samples: BTreeMap<Labels, Sample>,
}

#[derive(Debug)]
struct HistogramFamily {
    spec: &'static Spec,
    /// The Prometheus name (without `_bucket`, `_sum`, `_count`).
    name: String,
    /// Per labels, the durations so far and the last window with some.
    samples: BTreeMap<Labels, (LatencyHistogram, u64)>,
}

#[derive(Debug)]
struct Sample {
    /// A counter's running total, or a gauge's last value.
    value: Value,
    /// The number of the last window with a point of this sample.
    seen: u64,
}

impl Exposition {
    /// Totals for an agent described by `resource` (the full resource, see
    /// [`crate::metrics::resource`]); a series idle for `idle_windows`
    /// windows is forgotten.
    pub fn new(resource: &BTreeMap<String, String>, idle_windows: u32) -> Exposition {
        let labels = labels(
            resource
                .iter()
                .map(|(key, value)| (key.as_str(), value.clone())),
        );
        let mut target_info = String::from(
            "# HELP target_info Target metadata\n# TYPE target_info gauge\ntarget_info",
        );
        write_labels(&mut target_info, &labels);
        target_info.push_str(" 1\n");
        Exposition {
            target_info,
            families: HashMap::new(),
            histograms: HashMap::new(),
            idle_windows: u64::from(idle_windows.max(1)),
            windows: 0,
        }
    }

    /// Adds a closed window: its sums into the running totals, its gauges in
    /// place of the previous window's. Then forgets the series idle for too
    /// long.
    pub fn add(&mut self, window: &WindowReport) {
        self.windows += 1;
        let now = self.windows;
        for family in self.families.values_mut().filter(|f| !f.counter) {
            family.samples.clear();
        }
        let families = &mut self.families;
        for series in &window.series {
            points(series, |spec, attrs, value| {
                add_point(families, spec, attrs, value, now)
            });
        }
        let histograms = &mut self.histograms;
        for series in &window.dns {
            dns_points(
                series,
                |spec, attrs, n| add_point(families, spec, attrs, Value::Sum(n), now),
                |spec, attrs, durations| {
                    let family = histograms
                        .entry(spec.name)
                        .or_insert_with(|| HistogramFamily {
                            spec,
                            name: metric_name(spec, false),
                            samples: BTreeMap::new(),
                        });
                    let sample = family
                        .samples
                        .entry(point_labels(attrs))
                        .or_insert_with(|| (LatencyHistogram::default(), now));
                    sample.0.merge(durations);
                    sample.1 = now;
                },
            );
        }
        let idle = self.idle_windows;
        for family in self.families.values_mut() {
            family.samples.retain(|_, s| now - s.seen < idle);
        }
        for family in self.histograms.values_mut() {
            family.samples.retain(|_, (_, seen)| now - *seen < idle);
        }
    }

    /// Samples held, over every metric.
    pub fn len(&self) -> usize {
        self.families
            .values()
            .map(|f| f.samples.len())
            .sum::<usize>()
            + self
                .histograms
                .values()
                .map(|f| f.samples.len())
                .sum::<usize>()
    }

    /// True before the first sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exposition text: `target_info`, then each metric with samples,
    /// by name, with `# HELP` and `# TYPE`.
    pub fn render(&self) -> String {
        let mut out = self.target_info.clone();
        let mut families: Vec<&Family> = self
            .families
            .values()
            .filter(|f| !f.samples.is_empty())
            .collect();
        families.sort_by(|a, b| a.name.cmp(&b.name));
        for family in families {
            let kind = if family.counter { "counter" } else { "gauge" };
            let help = escape(family.spec.description, false);
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n",
                name = family.name
            );
            for (labels, sample) in &family.samples {
                out.push_str(&family.name);
                write_labels(&mut out, labels);
                let _ = match sample.value {
                    Value::Sum(n) => writeln!(out, " {n}"),
                    Value::Gauge(v) => writeln!(out, " {}", float(v)),
                };
            }
        }
        let mut histograms: Vec<&HistogramFamily> = self
            .histograms
            .values()
            .filter(|f| !f.samples.is_empty())
            .collect();
        histograms.sort_by(|a, b| a.name.cmp(&b.name));
        for family in histograms {
            render_histogram(&mut out, family);
        }
        out
    }
}

/// Adds a Sum to its running total, or puts a Gauge in place.
fn add_point(
    families: &mut HashMap<&'static str, Family>,
    spec: &'static Spec,
    attrs: Attributes,
    value: Value,
    now: u64,
) {
    let family = families
        .entry(spec.name)
        .or_insert_with(|| Family::new(spec, value));
    let sample = family.samples.entry(point_labels(attrs)).or_insert(Sample {
        value: match value {
            Value::Sum(_) => Value::Sum(0),
            Value::Gauge(_) => value,
        },
        seen: now,
    });
    sample.seen = now;
    sample.value = match (sample.value, value) {
        (Value::Sum(total), Value::Sum(n)) => Value::Sum(total.saturating_add(n)),
        (_, value) => value,
    };
}

/// A histogram family: cumulative `_bucket{le=...}` lines, `_sum`, `_count`.
fn render_histogram(out: &mut String, family: &HistogramFamily) {
    let name = &family.name;
    let help = escape(family.spec.description, false);
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    for (labels, (durations, _)) in &family.samples {
        let mut below = 0;
        let bounds = LATENCY_BOUNDS_SECS.iter().map(|b| float(*b));
        for (bound, count) in bounds
            .chain(std::iter::once("+Inf".to_owned()))
            .zip(&durations.bucket_counts)
        {
            below += count;
            let mut with_le = labels.clone();
            with_le.push(("le".to_owned(), bound));
            let _ = write!(out, "{name}_bucket");
            write_labels(out, &with_le);
            let _ = writeln!(out, " {below}");
        }
        let _ = write!(out, "{name}_sum");
        write_labels(out, labels);
        let _ = writeln!(out, " {}", float(durations.sum_secs));
        let _ = write!(out, "{name}_count");
        write_labels(out, labels);
        let _ = writeln!(out, " {}", durations.count);
    }
}

impl Family {
    fn new(spec: &'static Spec, value: Value) -> Family {
        let counter = matches!(value, Value::Sum(_));
        Family {
            spec,
            name: metric_name(spec, counter),
            counter,
            samples: BTreeMap::new(),
        }
    }
}

/// The Prometheus name of `spec`: sanitised, with its unit and, for a
/// counter, `_total`.
pub fn metric_name(spec: &Spec, counter: bool) -> String {
    let mut name = String::new();
    for c in spec.name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        };
        // Runs of `_` are collapsed, as the translation does.
        if !(c == '_' && name.ends_with('_')) {
            name.push(c);
        }
    }
    if let Some(unit) = unit_word(spec.unit) {
        if !name.ends_with(&format!("_{unit}")) {
            name.push('_');
            name.push_str(unit);
        }
    }
    if counter && !name.ends_with("_total") {
        name.push_str("_total");
    }
    name
}

/// The unit as the word a Prometheus name ends with; none for a
/// dimensionless annotation like `{packet}`.
fn unit_word(unit: &str) -> Option<&str> {
    match unit {
        "" | "1" => None,
        "By" => Some("bytes"),
        "s" => Some("seconds"),
        "ms" => Some("milliseconds"),
        _ if unit.starts_with('{') => None,
        other => Some(other),
    }
}

/// An attribute name as a label name: characters outside `[a-zA-Z0-9_]`
/// become `_`, and a leading digit gets `key_` in front.
pub fn label_name(key: &str) -> String {
    let name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("key_{name}")
    } else {
        name
    }
}

/// A label value as the exposition format quotes it: backslash, double
/// quote and newline escaped. With `quotes` false (for `# HELP` text), the
/// double quote is left alone.
pub fn escape(value: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

/// The labels of a point.
fn point_labels(attrs: Attributes) -> Labels {
    labels(
        attrs
            .iter()
            .map(|(key, value)| (key.as_str(), value.to_string())),
    )
}

/// `(attribute name, value)` pairs as labels, sorted; values of attributes
/// that share a label name joined with `;` in the order of their names.
fn labels<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> Labels {
    let mut named: Vec<(String, &str, String)> = pairs
        .map(|(key, value)| (label_name(key), key, value))
        .collect();
    named.sort();
    let mut out: Labels = Vec::with_capacity(named.len());
    for (name, _, value) in named {
        match out.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(';');
                joined.push_str(&value);
            }
            _ => out.push((name, value)),
        }
    }
    out
}

fn write_labels(out: &mut String, labels: &Labels) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape(value, true));
    }
    out.push('}');
}

/// A float as the exposition format writes it.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use processor::{Attributes, FlowStats, Series};

    use super::*;
    use crate::metrics;

    fn resource() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("service.name".to_owned(), "flowtel".to_owned()),
            ("host.name".to_owned(), "node-1".to_owned()),
        ])
    }

    fn window(series: Vec<Series>) -> WindowReport {
        WindowReport {
            start: UNIX_EPOCH,
            end: UNIX_EPOCH + Duration::from_secs(60),
            series,
            overflowed_series: 0,
            dns: Vec::new(),
            overflowed_dns_series: 0,
        }
    }

    fn curl_to(port: i64, stats: FlowStats) -> Series {
        let attributes: Attributes = [
            ("network.transport", processor::AttributeValue::from("tcp")),
            (
                "source.process.name",
                processor::AttributeValue::String(Arc::from("cu\"rl\\\n")),
            ),
            ("destination.port", processor::AttributeValue::Int(port)),
        ]
        .into_iter()
        .collect();
        Series { attributes, stats }
    }

    fn lookups(code: &str, durations_ms: &[u64]) -> processor::dns::DnsSeries {
        let mut attributes = Attributes::new();
        attributes.set("dns.question.name", "example.com");
        attributes.set("dns.response.code", code);
        let mut stats = processor::dns::DnsStats {
            requests: durations_ms.len() as u64 + 1,
            ..Default::default()
        };
        for ms in durations_ms {
            stats.durations.record(Duration::from_millis(*ms));
        }
        processor::dns::DnsSeries { attributes, stats }
    }

    #[test]
    fn dns_lookups_are_a_counter_and_a_histogram_that_accumulate() {
        let mut exposition = Exposition::new(&resource(), 12);
        let mut w = window(Vec::new());
        w.dns = vec![lookups("NOERROR", &[2, 30])];
        exposition.add(&w);
        exposition.add(&w);
        let text = exposition.render();
        let labels = r#"dns_question_name="example.com",dns_response_code="NOERROR""#;
        assert!(
            text.contains("# TYPE dns_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("dns_requests_total{{{labels}}} 6\n")),
            "{text}"
        );
        assert!(
            text.contains("# TYPE dns_lookup_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "dns_lookup_duration_seconds_bucket{{{labels},le=\"0.0025\"}} 2\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "dns_lookup_duration_seconds_bucket{{{labels},le=\"0.05\"}} 4\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "dns_lookup_duration_seconds_bucket{{{labels},le=\"+Inf\"}} 4\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "dns_lookup_duration_seconds_count{{{labels}}} 4\n"
            )),
            "{text}"
        );
    }

    #[test]
    fn a_window_as_exposition_text() {
        let mut exposition = Exposition::new(&resource(), 12);
        let stats = FlowStats {
            bytes_sent: 100,
            bytes_received: 2000,
            packets_sent: 3,
            packets_received: 4,
            connections_opened: 1,
            ..FlowStats::default()
        };
        exposition.add(&window(vec![curl_to(80, stats)]));
        let port = r#"destination_port="80""#;
        let rest = r#"network_transport="tcp",source_process_name="cu\"rl\\\n""#;
        let labels = format!("{port},{rest}");
        let expected = format!(
            "# HELP target_info Target metadata\n\
             # TYPE target_info gauge\n\
             target_info{{host_name=\"node-1\",service_name=\"flowtel\"}} 1\n\
             # HELP network_flow_bytes_total Bytes the flow moved, by direction as seen from the source.\n\
             # TYPE network_flow_bytes_total counter\n\
             network_flow_bytes_total{{{port},network_io_direction=\"receive\",{rest}}} 2000\n\
             network_flow_bytes_total{{{port},network_io_direction=\"transmit\",{rest}}} 100\n\
             # HELP network_flow_connections_closed_total Connections closed.\n\
             # TYPE network_flow_connections_closed_total counter\n\
             network_flow_connections_closed_total{{{labels}}} 0\n\
             # HELP network_flow_connections_opened_total Connections opened.\n\
             # TYPE network_flow_connections_opened_total counter\n\
             network_flow_connections_opened_total{{{labels}}} 1\n\
             # HELP network_flow_packets_total TCP segments or UDP datagrams, by direction.\n\
             # TYPE network_flow_packets_total counter\n\
             network_flow_packets_total{{{port},network_io_direction=\"receive\",{rest}}} 4\n\
             network_flow_packets_total{{{port},network_io_direction=\"transmit\",{rest}}} 3\n\
             # HELP network_flow_tcp_retransmits_total TCP segments the source retransmitted.\n\
             # TYPE network_flow_tcp_retransmits_total counter\n\
             network_flow_tcp_retransmits_total{{{labels}}} 0\n"
        );
        assert_eq!(exposition.render(), expected);
    }

    #[test]
    fn every_metric_gets_its_prometheus_name() {
        let names: Vec<(String, bool)> = [
            (&metrics::BYTES, true),
            (&metrics::PACKETS, true),
            (&metrics::RETRANSMITS, true),
            (&metrics::OPENED, true),
            (&metrics::CLOSED, true),
            (&metrics::FAILED, true),
            (&metrics::RTT, false),
            (&metrics::RTT_VARIANCE, false),
        ]
        .into_iter()
        .map(|(spec, counter)| (metric_name(spec, counter), counter))
        .collect();
        assert_eq!(
            names.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            [
                "network_flow_bytes_total",
                "network_flow_packets_total",
                "network_flow_tcp_retransmits_total",
                "network_flow_connections_opened_total",
                "network_flow_connections_closed_total",
                "network_flow_connections_failed_total",
                "network_flow_tcp_rtt_seconds",
                "network_flow_tcp_rtt_variance_seconds",
            ]
        );
    }

    #[test]
    fn labels_are_sanitised_and_values_escaped() {
        assert_eq!(label_name("source.process.name"), "source_process_name");
        assert_eq!(label_name("network.io.direction"), "network_io_direction");
        assert_eq!(label_name("error.type"), "error_type");
        assert_eq!(label_name("k8s.pod-name/x"), "k8s_pod_name_x");
        assert_eq!(label_name("0day"), "key_0day");
        assert_eq!(escape("a\\b\"c\nd", true), "a\\\\b\\\"c\\nd");
        assert_eq!(escape("say \"hi\"\n", false), "say \"hi\"\\n");
        // Two attributes, one label: values joined in the order of their names.
        let joined = labels([("a_b", "2".to_owned()), ("a.b", "1".to_owned())].into_iter());
        assert_eq!(joined, [("a_b".to_owned(), "1;2".to_owned())]);
    }

    fn rtt(smoothed_us: u64, variance_us: u64) -> receiver::Rtt {
        receiver::Rtt {
            smoothed: Duration::from_micros(smoothed_us),
            variance: Duration::from_micros(variance_us),
        }
    }

    fn sample<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit_once(' ').unwrap().1)
            .collect()
    }

    #[test]
    fn totals_accumulate_across_windows_and_gauges_hold_the_last() {
        let mut exposition = Exposition::new(&resource(), 12);
        let mut stats = FlowStats {
            bytes_sent: 100,
            retransmits: 2,
            ..FlowStats::default()
        };
        stats.rtt.record(rtt(4_000, 1_000));
        exposition.add(&window(vec![curl_to(80, stats)]));
        let mut later = FlowStats {
            bytes_sent: 50,
            retransmits: 1,
            ..FlowStats::default()
        };
        later.rtt.record(rtt(2_000, 500));
        exposition.add(&window(vec![curl_to(80, later), curl_to(443, stats)]));
        let text = exposition.render();
        assert_eq!(
            sample(
                &text,
                "network_flow_bytes_total{destination_port=\"80\",network_io_direction=\"transmit\""
            ),
            ["150"]
        );
        assert_eq!(
            sample(
                &text,
                "network_flow_tcp_retransmits_total{destination_port=\"80\""
            ),
            ["3"]
        );
        assert_eq!(
            sample(
                &text,
                "network_flow_tcp_rtt_seconds{destination_port=\"80\""
            ),
            ["0.002"]
        );
        assert_eq!(
            sample(
                &text,
                "network_flow_tcp_rtt_variance_seconds{destination_port=\"443\""
            ),
            ["0.001"]
        );
        assert!(text.contains("# TYPE network_flow_tcp_rtt_seconds gauge\n"));
    }

    #[test]
    fn idle_series_are_forgotten_and_gauges_last_one_window() {
        let mut exposition = Exposition::new(&resource(), 2);
        let mut stats = FlowStats {
            bytes_sent: 10,
            ..FlowStats::default()
        };
        stats.rtt.record(rtt(4_000, 1_000));
        exposition.add(&window(vec![curl_to(80, stats)]));
        let with_rtt = exposition.len();
        exposition.add(&window(vec![]));
        assert_eq!(exposition.len(), with_rtt - 2, "the RTT gauges are gone");
        assert!(exposition.render().contains("} 10\n"), "still there");
        exposition.add(&window(vec![]));
        assert!(exposition.is_empty());
        assert!(!exposition.render().contains("network_flow"));
    }
}
