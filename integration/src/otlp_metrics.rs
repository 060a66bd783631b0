//! What the OTLP receiver got, flattened for assertions: one [`Point`] per
//! data point, with its metric, resource and scope.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, NumberDataPoint};

/// What kind of metric a point belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A Sum, with its `AggregationTemporality` number and monotonicity.
    Sum {
        /// 1 = delta, 2 = cumulative.
        temporality: i32,
        /// Whether the sum only grows.
        monotonic: bool,
    },
    /// A Gauge.
    Gauge,
    /// Anything else (flowtel sends none).
    Other,
}

/// A point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A double.
    Double(f64),
}

/// One data point, with everything around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The metric's name.
    pub metric: String,
    /// The metric's unit.
    pub unit: String,
    /// Sum or Gauge.
    pub kind: Kind,
    /// The point's attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// The resource's attributes, values as text.
    pub resource: BTreeMap<String, String>,
    /// The scope's name and version.
    pub scope: (String, String),
    /// `start_time_unix_nano`.
    pub start_ns: u64,
    /// `time_unix_nano`.
    pub time_ns: u64,
    /// The value.
    pub value: Value,
}

impl Point {
    /// The value as an integer; panics for a double.
    pub fn int(&self) -> i64 {
        match self.value {
            Value::Int(n) => n,
            Value::Double(d) => panic!("{} is a double ({d}), not an integer", self.metric),
        }
    }

    /// An attribute's text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    /// Whether the point is of a flow of this (the test's) process.
    pub fn of_this_process(&self) -> bool {
        self.attribute("source.process.pid") == Some(&std::process::id().to_string())
    }

    /// Whether the point is of a flow to or from `port`.
    pub fn at_port(&self, port: u16) -> bool {
        let port = port.to_string();
        self.attribute("destination.port") == Some(&port)
            || self.attribute("source.port") == Some(&port)
    }
}

/// Sum of this process's `network.flow.bytes` points for one direction
/// (`transmit` or `receive`) of the flows to or from `port`.
pub fn flow_bytes(points: &[Point], port: u16, direction: &str) -> i64 {
    points
        .iter()
        .filter(|p| p.metric == "network.flow.bytes" && p.of_this_process() && p.at_port(port))
        .filter(|p| p.attribute("network.io.direction") == Some(direction))
        .map(Point::int)
        .sum()
}

/// The scope of the agent's own health metrics.
pub const HEALTH_SCOPE: &str = "flowtel.health";

/// Every flow point of `requests` (the health metrics left out).
pub fn points(requests: &[ExportMetricsServiceRequest]) -> Vec<Point> {
    let mut all = every_point(requests);
    all.retain(|p| p.scope.0 != HEALTH_SCOPE);
    all
}

/// Every point of the agent's health metrics in `requests`.
pub fn health_points(requests: &[ExportMetricsServiceRequest]) -> Vec<Point> {
    let mut all = every_point(requests);
    all.retain(|p| p.scope.0 == HEALTH_SCOPE);
    all
}

fn every_point(requests: &[ExportMetricsServiceRequest]) -> Vec<Point> {
    let mut out = Vec::new();
    for request in requests {
        for rm in &request.resource_metrics {
            let resource = rm
                .resource
                .as_ref()
                .map(|r| texts(&r.attributes))
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                let scope = sm
                    .scope
                    .as_ref()
                    .map(|s| (s.name.clone(), s.version.clone()))
                    .unwrap_or_default();
                for m in &sm.metrics {
                    let (kind, data_points): (Kind, &[NumberDataPoint]) = match &m.data {
                        Some(metric::Data::Sum(sum)) => (
                            Kind::Sum {
                                temporality: sum.aggregation_temporality,
                                monotonic: sum.is_monotonic,
                            },
                            &sum.data_points,
                        ),
                        Some(metric::Data::Gauge(gauge)) => (Kind::Gauge, &gauge.data_points),
                        _ => (Kind::Other, &[]),
                    };
                    for p in data_points {
                        out.push(Point {
                            metric: m.name.clone(),
                            unit: m.unit.clone(),
                            kind,
                            attributes: texts(&p.attributes),
                            resource: resource.clone(),
                            scope: scope.clone(),
                            start_ns: p.start_time_unix_nano,
                            time_ns: p.time_unix_nano,
                            value: match p.value {
                                Some(number_data_point::Value::AsInt(n)) => Value::Int(n),
                                Some(number_data_point::Value::AsDouble(d)) => Value::Double(d),
                                None => Value::Double(f64::NAN),
                            },
                        });
                    }
                }
            }
        }
    }
    out
}

/// `requests` reduced to the data points `keep` selects (metrics left
/// without points are dropped): a readable excerpt of a window.
pub fn only_points(
    request: &ExportMetricsServiceRequest,
    keep: impl Fn(&BTreeMap<String, String>) -> bool,
) -> ExportMetricsServiceRequest {
    let mut request = request.clone();
    for rm in &mut request.resource_metrics {
        for sm in &mut rm.scope_metrics {
            for m in &mut sm.metrics {
                let points = match &mut m.data {
                    Some(metric::Data::Sum(sum)) => &mut sum.data_points,
                    Some(metric::Data::Gauge(gauge)) => &mut gauge.data_points,
                    _ => continue,
                };
                points.retain(|p| keep(&texts(&p.attributes)));
            }
            sm.metrics.retain(|m| match &m.data {
                Some(metric::Data::Sum(sum)) => !sum.data_points.is_empty(),
                Some(metric::Data::Gauge(gauge)) => !gauge.data_points.is_empty(),
                _ => false,
            });
        }
    }
    request
}

fn texts(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                Some(any_value::Value::IntValue(n)) => n.to_string(),
                Some(any_value::Value::BoolValue(b)) => b.to_string(),
                Some(any_value::Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}
