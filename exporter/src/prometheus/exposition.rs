//! The running totals of every series, and their text in the Prometheus
//! exposition format (version 0.0.4), named as [`super::names`] says and
//! written with [`super::text`].

//!
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use processor::dns::{LatencyHistogram, LATENCY_BOUNDS_SECS};
use processor::WindowReport;

use super::names::{labels, metric_name, point_labels, Labels};
use super::text::{escape, float, write_labels};
use crate::metrics::{dns_points, points, Attributes, Spec, Value};

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use processor::{Attributes, FlowStats, Series};

    use super::*;

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

    fn rtt(smoothed_us: u32, variance_us: u32) -> receiver::Rtt {
        receiver::Rtt::from_micros(smoothed_us, variance_us)
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
