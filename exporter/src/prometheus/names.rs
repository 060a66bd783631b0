//! OpenTelemetry names as Prometheus names and labels.
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

use crate::metrics::{Attributes, Spec};

/// Label names and values of one sample, sorted by name.
pub(super) type Labels = Vec<(String, String)>;

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

/// The labels of a point.
pub(super) fn point_labels(attrs: Attributes) -> Labels {
    labels(
        attrs
            .iter()
            .map(|(key, value)| (key.as_str(), value.to_string())),
    )
}

/// `(attribute name, value)` pairs as labels, sorted; values of attributes
/// that share a label name joined with `;` in the order of their names.
pub(super) fn labels<'a>(pairs: impl Iterator<Item = (&'a str, String)>) -> Labels {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics;

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
    fn labels_are_sanitised_and_joined() {
        assert_eq!(label_name("source.process.name"), "source_process_name");
        assert_eq!(label_name("network.io.direction"), "network_io_direction");
        assert_eq!(label_name("error.type"), "error_type");
        assert_eq!(label_name("k8s.pod-name/x"), "k8s_pod_name_x");
        assert_eq!(label_name("0day"), "key_0day");
        // Two attributes, one label: values joined in the order of their names.
        let joined = labels([("a_b", "2".to_owned()), ("a.b", "1".to_owned())].into_iter());
        assert_eq!(joined, [("a_b".to_owned(), "1;2".to_owned())]);
    }
}
