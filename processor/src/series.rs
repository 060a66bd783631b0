//! A closed window's flows folded into series: each flow named by the
//! mappings, keyed by the selected attributes only, and the count of series
//! held to the cardinality limit.

use std::hash::BuildHasher;

use foldhash::HashMap;

use crate::{AttributeValue, Attributes, FlowKey, FlowStats, Resolver};

/// The attribute that marks the series holding what went over the limit.
pub const OVERFLOW_ATTRIBUTE: &str = "flowtel.overflow";

/// One series of a window: its attributes and what its flows did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The selected attributes that key the series.
    pub attributes: Attributes,
    /// The sum over the flows of the series.
    pub stats: FlowStats,
}

impl Series {
    /// True for the series that holds what went over the limit.
    pub fn is_overflow(&self) -> bool {
        self.attributes.get(OVERFLOW_ATTRIBUTE) == Some(&AttributeValue::Bool(true))
    }
}

/// A flow as a series of its own: all its attributes, no mapping.
impl From<crate::Flow> for Series {
    fn from(flow: crate::Flow) -> Series {
        Series {
            attributes: flow.key.attributes(),
            stats: flow.stats,
        }
    }
}

/// The series of a window and how many went into the overflow series.
#[derive(Debug)]
pub(crate) struct Folded {
    pub series: Vec<Series>,
    pub overflowed: u64,
}

/// Groups `flows` into series by the `selected` attributes (all when
/// `None`). When there are more than `max_series`, the biggest (by bytes)
/// keep their own series and the rest are summed into one overflow series:
/// nothing is dropped.
pub(crate) fn fold_series<S: BuildHasher>(
    flows: std::collections::HashMap<FlowKey, FlowStats, S>,
    resolver: &Resolver,
    selected: Option<&[String]>,
    max_series: usize,
) -> Folded {
    let mut grouped: HashMap<Attributes, FlowStats> = HashMap::default();
    for (key, stats) in flows {
        let mut attributes = resolver.attributes(&key);
        if let Some(selected) = selected {
            attributes.retain(|name| selected.iter().any(|s| s == name));
        }
        grouped.entry(attributes).or_default().merge(&stats);
    }
    let mut series: Vec<Series> = grouped
        .into_iter()
        .map(|(attributes, stats)| Series { attributes, stats })
        .collect();
    if series.len() <= max_series {
        return Folded {
            series,
            overflowed: 0,
        };
    }
    // Biggest first; ties broken by attributes so the cut is reproducible.
    series.sort_by(|a, b| {
        b.stats
            .bytes()
            .cmp(&a.stats.bytes())
            .then_with(|| a.attributes.cmp(&b.attributes))
    });
    let rest = series.split_off(max_series);
    let mut overflow = Series {
        attributes: [(OVERFLOW_ATTRIBUTE, AttributeValue::Bool(true))]
            .into_iter()
            .collect(),
        stats: FlowStats::default(),
    };
    for s in &rest {
        overflow.stats.merge(&s.stats);
    }
    series.push(overflow);
    Folded {
        series,
        overflowed: rest.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use receiver::{Direction, ProcessInfo, Transport};

    use super::*;
    use crate::mapping::{AttributeMap, Cidr, Mappings};
    use crate::NetworkType;

    fn flow(process: &str, remote: &str, port: u16, bytes: u64) -> (FlowKey, FlowStats) {
        let key = FlowKey {
            transport: Transport::Tcp,
            network_type: NetworkType::Ipv4,
            netns: 1,
            direction: Direction::Outgoing,
            source_address: "10.0.0.1".parse().unwrap(),
            source_port: None,
            source_process: Arc::new(ProcessInfo {
                pid: 7,
                name: process.into(),
                container_id: None,
                pod_uid: None,
            }),
            destination_address: remote.parse().unwrap(),
            destination_port: Some(port),
            translation: Default::default(),
            destination_domain: None,
        };
        let stats = FlowStats {
            bytes_sent: bytes,
            connections_opened: 1,
            ..FlowStats::default()
        };
        (key, stats)
    }

    fn consul_resolver() -> Resolver {
        let mut mappings = Mappings::default();
        mappings.cidrs.insert(
            Cidr("10.1.0.0/16".parse().unwrap()),
            AttributeMap([("service".to_owned(), "consul".to_owned())].into()),
        );
        Resolver::new(&mappings)
    }

    fn selection(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn text(series: &Series, name: &str) -> Option<String> {
        series.attributes.get(name).map(ToString::to_string)
    }

    #[test]
    fn flows_are_summed_into_the_selected_attributes_only() {
        let flows: std::collections::HashMap<_, _> = [
            flow("web", "10.1.0.5", 8500, 100),
            flow("web", "10.1.9.9", 8300, 20),
            flow("web", "192.168.1.1", 443, 7),
            flow("cron", "10.1.0.5", 8500, 3),
        ]
        .into_iter()
        .collect();
        let selected = selection(&["source.process.name", "destination.service"]);
        let folded = fold_series(flows, &consul_resolver(), Some(&selected), 100);
        assert_eq!(folded.overflowed, 0);
        let mut rows: Vec<_> = folded
            .series
            .iter()
            .map(|s| {
                assert!(s.attributes.len() <= 2, "{:?}", s.attributes);
                (
                    text(s, "source.process.name").unwrap(),
                    text(s, "destination.service"),
                    s.stats.bytes_sent,
                    s.stats.connections_opened,
                )
            })
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                ("cron".into(), Some("consul".into()), 3, 1),
                ("web".into(), None, 7, 1),
                ("web".into(), Some("consul".into()), 120, 2),
            ]
        );
    }

    #[test]
    fn without_a_selection_every_flow_keeps_all_its_attributes() {
        let flows: std::collections::HashMap<_, _> =
            [flow("web", "10.1.0.5", 8500, 100)].into_iter().collect();
        let folded = fold_series(flows, &consul_resolver(), None, 100);
        let series = &folded.series[0];
        assert_eq!(text(series, "destination.port").as_deref(), Some("8500"));
        assert_eq!(
            text(series, "destination.service").as_deref(),
            Some("consul")
        );
        assert_eq!(text(series, "source.process.pid").as_deref(), Some("7"));
    }

    #[test]
    fn beyond_the_limit_the_smallest_series_overflow_and_nothing_is_lost() {
        let flows: std::collections::HashMap<_, _> = (1..=5u16)
            .map(|port| flow("web", "10.9.0.1", port, u64::from(port) * 10))
            .collect();
        let folded = fold_series(flows, &Resolver::default(), None, 3);
        assert_eq!(folded.series.len(), 4, "3 series and the overflow");
        assert_eq!(folded.overflowed, 2);
        let kept: Vec<u64> = folded.series[..3]
            .iter()
            .map(|s| s.stats.bytes_sent)
            .collect();
        assert_eq!(kept, vec![50, 40, 30], "the biggest keep their series");
        let overflow = &folded.series[3];
        assert!(overflow.is_overflow());
        assert_eq!(overflow.attributes.len(), 1);
        assert_eq!(overflow.stats.bytes_sent, 20 + 10);
        assert_eq!(overflow.stats.connections_opened, 2);
        let total: u64 = folded.series.iter().map(|s| s.stats.bytes_sent).sum();
        assert_eq!(total, 150);
    }
}
