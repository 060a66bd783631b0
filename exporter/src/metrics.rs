//! flowtel's metrics (README, Exporting), shared by the exporters that name them: what each
//! series of a closed window becomes (which metric, which extra attribute,
//! which value) and the resource that describes this agent. The OTLP
//! encoder turns these points into OTLP data points; the Prometheus exporter
//! into exposition-format samples.

use std::collections::BTreeMap;

use processor::dns::{DnsSeries, LatencyHistogram};
use processor::{AttributeValue, Series};

/// One of flowtel's metrics.
#[derive(Debug, PartialEq, Eq)]
pub struct Spec {
    /// The OpenTelemetry name, e.g. `network.flow.bytes`.
    pub name: &'static str,
    /// The UCUM unit, e.g. `By`, `s`, `{packet}`.
    pub unit: &'static str,
    /// One sentence for people.
    pub description: &'static str,
}

/// `network.flow.bytes`.
pub static BYTES: Spec = Spec {
    name: "network.flow.bytes",
    unit: "By",
    description: "Bytes the flow moved, by direction as seen from the source.",
};
/// `network.flow.packets`.
pub static PACKETS: Spec = Spec {
    name: "network.flow.packets",
    unit: "{packet}",
    description: "TCP segments or UDP datagrams, by direction.",
};
/// `network.flow.tcp.retransmits`.
pub static RETRANSMITS: Spec = Spec {
    name: "network.flow.tcp.retransmits",
    unit: "{segment}",
    description: "TCP segments the source retransmitted.",
};
/// `network.flow.connections.opened`.
pub static OPENED: Spec = Spec {
    name: "network.flow.connections.opened",
    unit: "{connection}",
    description: "Connections opened.",
};
/// `network.flow.connections.closed`.
pub static CLOSED: Spec = Spec {
    name: "network.flow.connections.closed",
    unit: "{connection}",
    description: "Connections closed.",
};
/// `network.flow.connections.failed`.
pub static FAILED: Spec = Spec {
    name: "network.flow.connections.failed",
    unit: "{connection}",
    description: "Connections that failed, by error.type.",
};
/// `network.flow.tcp.rtt`.
pub static RTT: Spec = Spec {
    name: "network.flow.tcp.rtt",
    unit: "s",
    description: "Mean smoothed TCP round-trip time of the flow's active connections.",
};
/// `network.flow.tcp.rtt.variance`.
pub static RTT_VARIANCE: Spec = Spec {
    name: "network.flow.tcp.rtt.variance",
    unit: "s",
    description: "Mean TCP round-trip time variance (jitter).",
};

/// `dns.requests`.
pub static DNS_REQUESTS: Spec = Spec {
    name: "dns.requests",
    unit: "{request}",
    description: "DNS lookups of this host's clients, answered (by dns.response.code) or timed out (dns.response.code=timeout).",
};
/// `dns.lookup.duration`.
pub static DNS_LOOKUP_DURATION: Spec = Spec {
    name: "dns.lookup.duration",
    unit: "s",
    description: "Time from a DNS query to its answer, for answered lookups.",
};

/// Calls `sum` with the `dns.requests` point of `series` and `histogram`
/// with its `dns.lookup.duration` point, when it has answered lookups.
pub fn dns_points(
    series: &DnsSeries,
    mut sum: impl FnMut(&'static Spec, Attributes, u64),
    mut histogram: impl FnMut(&'static Spec, Attributes, &LatencyHistogram),
) {
    let attrs: Attributes = series
        .attributes
        .iter()
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect();
    if series.stats.durations.count > 0 {
        histogram(&DNS_LOOKUP_DURATION, attrs.clone(), &series.stats.durations);
    }
    sum(&DNS_REQUESTS, attrs, series.stats.requests);
}

/// A point's attributes: the series' own (sorted by name), then the
/// point's extra one (`network.io.direction`, `error.type`) if any.
pub type Attributes = Vec<(String, AttributeValue)>;

/// A point's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// What a monotonic Sum (a counter) grew by in the window.
    Sum(u64),
    /// A Gauge's value for the window.
    Gauge(f64),
}

/// Calls `emit` with every point `series` makes, sums before gauges.
pub fn points(series: &Series, mut emit: impl FnMut(&'static Spec, Attributes, Value)) {
    let attrs: Attributes = series
        .attributes
        .iter()
        .map(|(name, value)| (name.to_owned(), value.clone()))
        .collect();
    let with = |name: &str, value: &str| {
        let mut a = attrs.clone();
        a.push((name.to_owned(), AttributeValue::from(value)));
        a
    };
    let s = &series.stats;
    for (spec, sent, received) in [
        (&BYTES, s.bytes_sent, s.bytes_received),
        (&PACKETS, s.packets_sent, s.packets_received),
    ] {
        emit(
            spec,
            with("network.io.direction", "transmit"),
            Value::Sum(sent),
        );
        emit(
            spec,
            with("network.io.direction", "receive"),
            Value::Sum(received),
        );
    }
    // UDP has no retransmits; a series that sums both transports away shows
    // them when there were some.
    let transport = series.attributes.get("network.transport");
    if transport == Some(&AttributeValue::from("tcp")) || (transport.is_none() && s.retransmits > 0)
    {
        emit(&RETRANSMITS, attrs.clone(), Value::Sum(s.retransmits));
    }
    emit(&OPENED, attrs.clone(), Value::Sum(s.connections_opened));
    emit(&CLOSED, attrs.clone(), Value::Sum(s.connections_closed));
    for (error_type, n) in s.connections_failed.nonzero() {
        emit(&FAILED, with("error.type", error_type), Value::Sum(n));
    }
    if let (Some(rtt), Some(var)) = (s.rtt.mean(), s.rtt.mean_variance()) {
        emit(&RTT, attrs.clone(), Value::Gauge(rtt.as_secs_f64()));
        emit(&RTT_VARIANCE, attrs, Value::Gauge(var.as_secs_f64()));
    }
}

/// The resource: `service.name`, `service.version` and `host.name`, then
/// `extra` (which wins).
pub fn resource(extra: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut attributes = BTreeMap::new();
    attributes.insert("service.name".to_owned(), "flowtel".to_owned());
    attributes.insert(
        "service.version".to_owned(),
        env!("CARGO_PKG_VERSION").to_owned(),
    );
    attributes.insert("host.name".to_owned(), host_name());
    attributes.extend(extra.clone());
    attributes
}

/// This host's name, from the kernel (`/proc/sys/kernel/hostname`).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
