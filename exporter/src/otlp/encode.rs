//! A closed window as OTLP metrics: the names, units and attributes of
//! `metrics.rs`, the window's own start and end on every point.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use processor::dns::{DnsSeries, LatencyHistogram, LATENCY_BOUNDS_SECS};
use processor::{AttributeValue, Series, WindowReport};

use crate::metrics::{dns_points, points, resource, Attributes, Spec, Value};

use super::config::Temporality;

/// The instrumentation scope's name.
pub const SCOPE_NAME: &str = "flowtel";

/// Series per request: a window with more is split into several requests,
/// which keeps each under the 4 MiB a gRPC server accepts by default
/// (a series is at most 11 points of about 200 bytes).
pub const FLOWS_PER_REQUEST: usize = 1000;

/// Builds the requests of each window; keeps the running totals for
/// cumulative temporality.
#[derive(Debug)]
pub struct Encoder {
    resource: Resource,
    temporality: Temporality,
    flows_per_request: usize,
    /// Cumulative only: per series, when it was first seen and its total.
    totals: HashMap<SeriesId, RunningTotal>,
    /// Cumulative only: per histogram series, when it was first seen and
    /// its durations so far.
    histogram_totals: HashMap<SeriesId, (u64, LatencyHistogram)>,
}

/// A series: a metric name and its point's attributes.
type SeriesId = (&'static str, Attributes);

#[derive(Debug, Clone, Copy)]
struct RunningTotal {
    start_ns: u64,
    value: u64,
}

impl Encoder {
    /// An encoder for `resource_attributes` (host.name, service.name and
    /// service.version are added unless given) and `temporality`.
    pub fn new(
        resource_attributes: &BTreeMap<String, String>,
        temporality: Temporality,
    ) -> Encoder {
        Encoder {
            resource: Resource {
                attributes: resource(resource_attributes)
                    .into_iter()
                    .map(|(k, v)| string(&k, v))
                    .collect(),
                ..Resource::default()
            },
            temporality,
            flows_per_request: FLOWS_PER_REQUEST,
            totals: HashMap::new(),
            histogram_totals: HashMap::new(),
        }
    }

    /// The resource's attributes (host.name, service.name, ...), for the
    /// health metrics to carry the same.
    pub fn resource_attributes(&self) -> BTreeMap<String, String> {
        self.resource
            .attributes
            .iter()
            .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
                _ => None,
            })
            .collect()
    }

    /// Splits windows after `n` flows instead of [`FLOWS_PER_REQUEST`].
    pub fn with_flows_per_request(mut self, n: usize) -> Encoder {
        self.flows_per_request = n.max(1);
        self
    }

    /// The requests that carry `window`: one, or several for a large
    /// window; none for an empty one.
    pub fn encode(&mut self, window: &WindowReport) -> Vec<ExportMetricsServiceRequest> {
        let start_ns = unix_nanos(window.start);
        let end_ns = unix_nanos(window.end);
        let mut requests: Vec<ExportMetricsServiceRequest> = window
            .series
            .chunks(self.flows_per_request)
            .map(|series| self.request(series, start_ns, end_ns))
            .collect();
        for dns in window.dns.chunks(self.flows_per_request) {
            requests.push(self.dns_request(dns, start_ns, end_ns));
        }
        requests
    }

    fn request(
        &mut self,
        series: &[Series],
        start_ns: u64,
        end_ns: u64,
    ) -> ExportMetricsServiceRequest {
        let mut metrics = Metrics::default();
        for one in series {
            points(one, |spec, attrs, value| match value {
                Value::Sum(n) => add(&mut metrics.sums, spec, attrs, n),
                Value::Gauge(v) => add(&mut metrics.gauges, spec, attrs, v),
            });
        }
        let metrics = metrics.into_otlp(self, start_ns, end_ns);
        self.wrap(metrics)
    }

    /// The request of a window's DNS series: `dns.requests` and
    /// `dns.lookup.duration`.
    fn dns_request(
        &mut self,
        series: &[DnsSeries],
        start_ns: u64,
        end_ns: u64,
    ) -> ExportMetricsServiceRequest {
        let mut metrics = Metrics::default();
        for one in series {
            dns_points(
                one,
                |spec, attrs, n| add(&mut metrics.sums, spec, attrs, n),
                |spec, attrs, h| add(&mut metrics.histograms, spec, attrs, h.clone()),
            );
        }
        let metrics = metrics.into_otlp(self, start_ns, end_ns);
        self.wrap(metrics)
    }

    fn wrap(&self, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    /// The durations and start time a Histogram point carries.
    fn histogram_point(
        &mut self,
        id: SeriesId,
        delta: LatencyHistogram,
        start_ns: u64,
    ) -> (u64, LatencyHistogram) {
        match self.temporality {
            Temporality::Delta => (start_ns, delta),
            Temporality::Cumulative => {
                let total = self
                    .histogram_totals
                    .entry(id)
                    .or_insert_with(|| (start_ns, LatencyHistogram::default()));
                total.1.merge(&delta);
                (total.0, total.1.clone())
            }
        }
    }

    /// The value and start time a Sum point carries.
    fn sum_point(&mut self, id: SeriesId, delta: u64, start_ns: u64) -> (u64, u64) {
        match self.temporality {
            Temporality::Delta => (start_ns, delta),
            Temporality::Cumulative => {
                let total = self
                    .totals
                    .entry(id)
                    .or_insert(RunningTotal { start_ns, value: 0 });
                total.value += delta;
                (total.start_ns, total.value)
            }
        }
    }
}

/// Points of each metric, in the order metrics first appear.
type Points<V> = Vec<(&'static Spec, Vec<(Attributes, V)>)>;

/// Points gathered per metric.
#[derive(Default)]
struct Metrics {
    sums: Points<u64>,
    gauges: Points<f64>,
    histograms: Points<LatencyHistogram>,
}

fn add<V>(points: &mut Points<V>, spec: &'static Spec, attrs: Attributes, value: V) {
    match points.iter_mut().find(|(s, _)| s.name == spec.name) {
        Some((_, list)) => list.push((attrs, value)),
        None => points.push((spec, vec![(attrs, value)])),
    }
}

impl Metrics {
    fn into_otlp(self, encoder: &mut Encoder, start_ns: u64, end_ns: u64) -> Vec<Metric> {
        let temporality = match encoder.temporality {
            Temporality::Delta => AggregationTemporality::Delta,
            Temporality::Cumulative => AggregationTemporality::Cumulative,
        };
        let mut out = Vec::new();
        for (spec, points) in self.sums {
            let data_points = points
                .into_iter()
                .map(|(attrs, delta)| {
                    let (start, value) =
                        encoder.sum_point((spec.name, attrs.clone()), delta, start_ns);
                    point(
                        attrs,
                        start,
                        end_ns,
                        number_data_point::Value::AsInt(value as i64),
                    )
                })
                .collect();
            out.push(metric(
                spec,
                metric::Data::Sum(Sum {
                    data_points,
                    aggregation_temporality: temporality as i32,
                    is_monotonic: true,
                }),
            ));
        }
        for (spec, points) in self.gauges {
            let data_points = points
                .into_iter()
                .map(|(attrs, v)| {
                    point(
                        attrs,
                        start_ns,
                        end_ns,
                        number_data_point::Value::AsDouble(v),
                    )
                })
                .collect();
            out.push(metric(spec, metric::Data::Gauge(Gauge { data_points })));
        }
        for (spec, points) in self.histograms {
            let data_points = points
                .into_iter()
                .map(|(attrs, delta)| {
                    let (start, h) =
                        encoder.histogram_point((spec.name, attrs.clone()), delta, start_ns);
                    HistogramDataPoint {
                        attributes: attrs.into_iter().map(|(k, v)| attribute(&k, v)).collect(),
                        start_time_unix_nano: start,
                        time_unix_nano: end_ns,
                        count: h.count,
                        sum: Some(h.sum_secs),
                        bucket_counts: h.bucket_counts,
                        explicit_bounds: LATENCY_BOUNDS_SECS.to_vec(),
                        min: Some(h.min_secs),
                        max: Some(h.max_secs),
                        ..HistogramDataPoint::default()
                    }
                })
                .collect();
            out.push(metric(
                spec,
                metric::Data::Histogram(Histogram {
                    data_points,
                    aggregation_temporality: temporality as i32,
                }),
            ));
        }
        out
    }
}

fn metric(spec: &Spec, data: metric::Data) -> Metric {
    Metric {
        name: spec.name.to_owned(),
        description: spec.description.to_owned(),
        unit: spec.unit.to_owned(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

fn point(
    attrs: Attributes,
    start_ns: u64,
    end_ns: u64,
    value: number_data_point::Value,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs.into_iter().map(|(k, v)| attribute(&k, v)).collect(),
        start_time_unix_nano: start_ns,
        time_unix_nano: end_ns,
        value: Some(value),
        ..NumberDataPoint::default()
    }
}

/// Ports and pids go out as integers, as the semantic conventions type
/// them; names as strings.
fn attribute(key: &str, value: AttributeValue) -> KeyValue {
    let value = match value {
        AttributeValue::String(s) => any_value::Value::StringValue(s.to_string()),
        AttributeValue::Int(n) => any_value::Value::IntValue(n),
        AttributeValue::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn string(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..KeyValue::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use processor::{Flow, FlowKey, FlowStats, NetworkType};
    use receiver::{Direction, ProcessInfo, Transport};

    use super::*;

    const T0: u64 = 1_700_000_000;

    pub(crate) fn window(start_s: u64, len_s: u64, flows: Vec<Flow>) -> WindowReport {
        WindowReport {
            start: UNIX_EPOCH + Duration::from_secs(start_s),
            end: UNIX_EPOCH + Duration::from_secs(start_s + len_s),
            series: flows.into_iter().map(processor::Series::from).collect(),
            overflowed_series: 0,
            dns: Vec::new(),
            overflowed_dns_series: 0,
        }
    }

    pub(crate) fn curl_to(port: u16, sent: u64, received: u64) -> Flow {
        Flow {
            key: FlowKey {
                transport: Transport::Tcp,
                network_type: NetworkType::Ipv4,
                netns: 1,
                direction: Direction::Outgoing,
                source_address: "10.0.0.1".parse().unwrap(),
                source_port: None,
                source_process: Arc::new(ProcessInfo {
                    pid: 123,
                    name: "curl".into(),
                    container_id: None,
                    pod_uid: None,
                }),
                destination_address: "10.0.0.2".parse().unwrap(),
                destination_port: Some(port),
                translation: Default::default(),
                destination_domain: None,
            },
            stats: FlowStats {
                bytes_sent: sent,
                bytes_received: received,
                connections_opened: 1,
                ..FlowStats::default()
            },
        }
    }

    fn metric<'a>(request: &'a ExportMetricsServiceRequest, name: &str) -> &'a Metric {
        request.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    fn sum(m: &Metric) -> &Sum {
        match &m.data {
            Some(Data::Sum(sum)) => sum,
            other => panic!("{} is not a Sum: {other:?}", m.name),
        }
    }

    fn attr<'a>(point: &'a NumberDataPoint, key: &str) -> Option<&'a any_value::Value> {
        point
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn int(point: &NumberDataPoint) -> i64 {
        match point.value {
            Some(number_data_point::Value::AsInt(n)) => n,
            other => panic!("not an integer: {other:?}"),
        }
    }

    #[test]
    fn a_window_is_one_request_with_resource_scope_and_window_timestamps() {
        let mut encoder = Encoder::new(
            &BTreeMap::from([("deployment.environment".to_owned(), "test".to_owned())]),
            Temporality::Delta,
        );
        let requests = encoder.encode(&window(T0, 60, vec![curl_to(80, 100, 2000)]));
        assert_eq!(requests.len(), 1);
        let rm = &requests[0].resource_metrics[0];
        let resource: BTreeMap<_, _> = rm
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|kv| kv.key.as_str())
            .map(|k| (k, ()))
            .collect();
        for key in [
            "host.name",
            "service.name",
            "service.version",
            "deployment.environment",
        ] {
            assert!(resource.contains_key(key), "resource lacks {key}");
        }
        let scope = rm.scope_metrics[0].scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("flowtel", env!("CARGO_PKG_VERSION"))
        );

        let bytes = metric(&requests[0], "network.flow.bytes");
        assert_eq!(bytes.unit, "By");
        let bytes = sum(bytes);
        assert!(bytes.is_monotonic);
        assert_eq!(
            bytes.aggregation_temporality,
            AggregationTemporality::Delta as i32
        );
        let by_direction: BTreeMap<_, _> = bytes
            .data_points
            .iter()
            .map(|p| {
                (
                    format!("{:?}", attr(p, "network.io.direction").unwrap()),
                    int(p),
                )
            })
            .collect();
        assert_eq!(
            by_direction.values().copied().collect::<Vec<_>>(),
            [2000, 100]
        );
        for p in &bytes.data_points {
            assert_eq!(p.start_time_unix_nano, T0 * 1_000_000_000);
            assert_eq!(p.time_unix_nano, (T0 + 60) * 1_000_000_000);
            assert_eq!(
                attr(p, "destination.port"),
                Some(&any_value::Value::IntValue(80))
            );
            assert_eq!(attr(p, "source.port"), None, "collapsed");
            assert_eq!(
                attr(p, "network.transport"),
                Some(&any_value::Value::StringValue("tcp".into()))
            );
        }
        let opened = metric(&requests[0], "network.flow.connections.opened");
        assert_eq!(opened.unit, "{connection}");
        assert_eq!(int(&sum(opened).data_points[0]), 1);
    }

    #[test]
    fn dns_series_are_a_sum_and_a_histogram() {
        let mut encoder = Encoder::new(&BTreeMap::new(), Temporality::Cumulative);
        let mut attributes = processor::Attributes::new();
        attributes.set("dns.question.name", "example.com");
        attributes.set("dns.response.code", "timeout");
        let mut stats = processor::dns::DnsStats {
            requests: 3,
            ..Default::default()
        };
        stats.durations.record(std::time::Duration::from_millis(4));
        let mut w = window(0, 60, Vec::new());
        w.dns = vec![processor::dns::DnsSeries { attributes, stats }];
        encoder.encode(&w);
        let requests = encoder.encode(&w);
        assert_eq!(requests.len(), 1);
        let sum = sum(metric(&requests[0], "dns.requests"));
        assert_eq!(int(&sum.data_points[0]), 6, "cumulative");
        assert_eq!(metric(&requests[0], "dns.requests").unit, "{request}");
        let duration = metric(&requests[0], "dns.lookup.duration");
        assert_eq!(duration.unit, "s");
        let Some(metric::Data::Histogram(h)) = &duration.data else {
            panic!("dns.lookup.duration is a histogram: {duration:?}");
        };
        assert_eq!(h.data_points[0].count, 2);
        assert_eq!(
            h.data_points[0].explicit_bounds.len() + 1,
            h.data_points[0].bucket_counts.len()
        );
        assert_eq!(h.data_points[0].bucket_counts[3], 2, "4ms is at most 5ms");
    }

    #[test]
    fn an_empty_window_sends_nothing_and_a_large_one_is_split() {
        let mut encoder =
            Encoder::new(&BTreeMap::new(), Temporality::Delta).with_flows_per_request(2);
        assert!(encoder.encode(&window(T0, 60, vec![])).is_empty());
        let flows = (1..=5).map(|p| curl_to(p, 1, 1)).collect();
        assert_eq!(encoder.encode(&window(T0, 60, flows)).len(), 3);
    }

    #[test]
    fn cumulative_sums_keep_a_running_total_from_the_series_first_window() {
        let mut encoder = Encoder::new(&BTreeMap::new(), Temporality::Cumulative);
        let first = encoder.encode(&window(T0, 60, vec![curl_to(80, 100, 0)]));
        let second = encoder.encode(&window(T0 + 60, 60, vec![curl_to(80, 50, 0)]));
        let transmit = |r: &ExportMetricsServiceRequest| {
            sum(metric(r, "network.flow.bytes"))
                .data_points
                .iter()
                .find(|p| {
                    attr(p, "network.io.direction")
                        == Some(&any_value::Value::StringValue("transmit".into()))
                })
                .cloned()
                .unwrap()
        };
        let (a, b) = (transmit(&first[0]), transmit(&second[0]));
        assert_eq!((int(&a), int(&b)), (100, 150));
        assert_eq!(a.start_time_unix_nano, b.start_time_unix_nano);
        assert_eq!(b.time_unix_nano, (T0 + 120) * 1_000_000_000);
        assert_eq!(
            sum(metric(&second[0], "network.flow.bytes")).aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
    }
}
