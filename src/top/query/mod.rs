//! `flowtel top`'s query: which flows (`--where`, [`filter`]), how they are
//! grouped into rows (`--group-by`, [`group`]) and in which order
//! (`--sort`, [`sort`]). Pure functions of a poll's resolved flows, so that
//! they are tested without a kernel.

mod filter;
mod group;
mod sort;

use std::time::Duration;

use processor::{Attributes, FlowStats};

pub use filter::Filter;
pub use group::{GroupBy, DEFAULT_GROUP_BY};
pub use sort::Sort;

/// Checks an attribute name written in `part` of an option.
pub(super) fn attribute_name(name: &str, part: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err(format!("{part:?} has no attribute name"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        return Err(format!(
            "attribute name {name:?} in {part:?} may only have letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(name.to_owned())
}

/// One row: the flows sharing a group key, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The value of each group-by attribute.
    pub key: Vec<String>,
    /// The flows' stats, summed.
    pub stats: FlowStats,
    /// How many flows were summed.
    pub flows: usize,
}

impl Row {
    /// Bytes both ways per second over `period`; 0 for an empty period.
    pub fn bandwidth(&self, period: Duration) -> f64 {
        self.stats.bandwidth_bps(period) / 8.0
    }
}

/// Groups `flows` (attributes and stats of one poll, already filtered) by
/// `group_by` and sorts the rows by `sort`, largest first; rows that tie
/// are ordered by their key.
pub fn rows<'a>(
    flows: impl IntoIterator<Item = &'a (Attributes, FlowStats)>,
    group_by: &GroupBy,
    sort: Sort,
) -> Vec<Row> {
    let mut rows: std::collections::HashMap<Vec<String>, Row> = std::collections::HashMap::new();
    for (attributes, stats) in flows {
        let key = group_by.key(attributes);
        let row = rows.entry(key).or_insert_with_key(|key| Row {
            key: key.clone(),
            stats: FlowStats::default(),
            flows: 0,
        });
        row.stats.merge(stats);
        row.flows += 1;
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by(|a, b| {
        sort.compare(&a.stats, &b.stats)
            .then_with(|| a.key.cmp(&b.key))
    });
    rows
}

#[cfg(test)]
pub(super) mod test_flows {
    use processor::{Attributes, FlowStats};

    pub fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().copied().collect()
    }

    pub fn flow(pairs: &[(&str, &str)], sent: u64, received: u64) -> (Attributes, FlowStats) {
        let stats = FlowStats {
            bytes_sent: sent,
            bytes_received: received,
            ..FlowStats::default()
        };
        (attrs(pairs), stats)
    }
}

#[cfg(test)]
mod tests {
    use receiver::Rtt;

    use super::test_flows::flow;
    use super::*;

    #[test]
    fn flows_with_one_key_are_summed_into_one_row() {
        let flows = [
            flow(
                &[
                    ("source.process.name", "curl"),
                    ("destination.service", "web"),
                ],
                100,
                10,
            ),
            flow(
                &[
                    ("source.process.name", "curl"),
                    ("destination.address", "10.0.0.9"),
                ],
                5,
                1,
            ),
            flow(
                &[
                    ("source.process.name", "curl"),
                    ("destination.service", "web"),
                ],
                50,
                20,
            ),
        ];
        let rows = rows(&flows, &GroupBy::default(), Sort::Bytes);
        let keys: Vec<&[String]> = rows.iter().map(|r| r.key.as_slice()).collect();
        assert_eq!(
            keys,
            [
                ["curl".to_owned(), "web".to_owned()].as_slice(),
                ["curl".to_owned(), "10.0.0.9".to_owned()].as_slice(),
            ]
        );
        assert_eq!(
            (rows[0].stats.bytes_sent, rows[0].stats.bytes_received),
            (150, 30)
        );
        assert_eq!(rows[0].flows, 2);
        assert_eq!(rows[1].flows, 1);
        assert_eq!(rows[0].bandwidth(Duration::from_secs(2)), 90.0);
    }

    fn sorted(flows: &[(Attributes, FlowStats)], sort: Sort) -> Vec<String> {
        let by_name = GroupBy::parse("source.process.name").unwrap();
        rows(flows, &by_name, sort)
            .into_iter()
            .map(|r| r.key[0].clone())
            .collect()
    }

    #[test]
    fn rows_sort_largest_first_by_the_chosen_column() {
        let rtt = |ms: u32| Rtt::from_micros(ms * 1000, 0);
        let mut flows = vec![
            flow(&[("source.process.name", "a")], 100, 1),
            flow(&[("source.process.name", "b")], 10, 500),
            flow(&[("source.process.name", "c")], 50, 0),
            flow(&[("source.process.name", "d")], 0, 0),
        ];
        flows[0].1.retransmits = 1;
        flows[2].1.retransmits = 7;
        flows[2].1.connections_opened = 3;
        flows[1].1.connections_opened = 1;
        flows[0].1.rtt.record(rtt(5));
        flows[2].1.rtt.record(rtt(40));
        assert_eq!(sorted(&flows, Sort::Bytes), ["b", "a", "c", "d"]);
        assert_eq!(sorted(&flows, Sort::Bandwidth), ["b", "a", "c", "d"]);
        assert_eq!(sorted(&flows, Sort::Sent), ["a", "c", "b", "d"]);
        assert_eq!(sorted(&flows, Sort::Received), ["b", "a", "c", "d"]);
        assert_eq!(sorted(&flows, Sort::Retransmits), ["c", "a", "b", "d"]);
        // Rows without an RTT last, by key.
        assert_eq!(sorted(&flows, Sort::Rtt), ["c", "a", "b", "d"]);
        assert_eq!(sorted(&flows, Sort::Connections), ["c", "b", "a", "d"]);
    }
}
