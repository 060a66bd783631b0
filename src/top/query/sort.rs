//! `--sort`: the column `top`'s rows are ordered by, largest first.

use std::cmp::Ordering;

use clap::ValueEnum;
use processor::FlowStats;

/// `--sort`: the column rows are sorted by, largest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Sort {
    /// Bytes both ways.
    Bytes,
    /// Bytes sent.
    Sent,
    /// Bytes received.
    Received,
    /// Bytes both ways per second.
    Bandwidth,
    /// TCP retransmitted segments.
    Retransmits,
    /// Mean round-trip time.
    Rtt,
    /// Connections opened.
    Connections,
}

impl Sort {
    const ALL: [Sort; 7] = [
        Sort::Bytes,
        Sort::Sent,
        Sort::Received,
        Sort::Bandwidth,
        Sort::Retransmits,
        Sort::Rtt,
        Sort::Connections,
    ];

    /// The next column, for the `s` key.
    pub fn next(self) -> Sort {
        let at = Sort::ALL.iter().position(|&s| s == self).unwrap_or(0);
        Sort::ALL[(at + 1) % Sort::ALL.len()]
    }

    /// The name `--sort` takes.
    pub fn name(self) -> &'static str {
        match self {
            Sort::Bytes => "bytes",
            Sort::Sent => "sent",
            Sort::Received => "received",
            Sort::Bandwidth => "bandwidth",
            Sort::Retransmits => "retransmits",
            Sort::Rtt => "rtt",
            Sort::Connections => "connections",
        }
    }

    /// Orders `a` before `b` when it is larger in this column. A row without
    /// an RTT comes after every row with one.
    pub(super) fn compare(self, a: &FlowStats, b: &FlowStats) -> Ordering {
        let count = |s: &FlowStats| match self {
            Sort::Bytes | Sort::Bandwidth => s.bytes(),
            Sort::Sent => s.bytes_sent,
            Sort::Received => s.bytes_received,
            Sort::Retransmits => s.retransmits,
            Sort::Connections => s.connections_opened,
            Sort::Rtt => 0,
        };
        match self {
            Sort::Rtt => b.rtt.mean().cmp(&a.rtt.mean()),
            _ => count(b).cmp(&count(a)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sort_key_cycles_through_every_column() {
        let mut sort = Sort::Bytes;
        let mut seen = vec![sort.name()];
        for _ in 1..Sort::ALL.len() {
            sort = sort.next();
            seen.push(sort.name());
        }
        assert_eq!(
            seen,
            [
                "bytes",
                "sent",
                "received",
                "bandwidth",
                "retransmits",
                "rtt",
                "connections"
            ]
        );
        assert_eq!(sort.next(), Sort::Bytes);
        for sort in Sort::ALL {
            assert_eq!(Sort::from_str(sort.name(), false), Ok(sort));
        }
    }
}
