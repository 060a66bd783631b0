//! A window's lookups folded into series of `dns.requests` and
//! `dns.lookup.duration`, keyed by the client, the server, the question and
//! the outcome; held to the window's series cap like the flows' series.

use foldhash::HashMap;

use super::{DnsLookup, LatencyHistogram};
use crate::series::OVERFLOW_ATTRIBUTE;
use crate::{AttributeValue, Attributes};

/// The attributes of a DNS series.
pub const DNS_ATTRIBUTES: [&str; 8] = [
    "network.transport",
    "network.namespace",
    "source.address",
    "source.process.name",
    "destination.address",
    "dns.question.name",
    "dns.question.type",
    "dns.response.code",
];

/// What the lookups of one series did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DnsStats {
    /// Lookups, answered or timed out (`dns.requests`).
    pub requests: u64,
    /// How long the answered ones took (`dns.lookup.duration`).
    pub durations: LatencyHistogram,
}

impl DnsStats {
    /// Adds `other`'s lookups.
    pub fn merge(&mut self, other: &DnsStats) {
        self.requests += other.requests;
        self.durations.merge(&other.durations);
    }
}

/// One DNS series of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsSeries {
    /// Its key: [`DNS_ATTRIBUTES`] (those the lookups had), or only
    /// `flowtel.overflow=true` for the series over the cap.
    pub attributes: Attributes,
    /// What its lookups did.
    pub stats: DnsStats,
}

/// The DNS side's losses, cumulative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsHealth {
    /// Queries not matched because the pending table was full.
    pub pending_overflowed: u64,
    /// Answers to no query seen.
    pub unmatched_answers: u64,
    /// Names not kept because the name cache was full.
    pub names_dropped: u64,
    /// Queries awaiting their answer, now.
    pub pending: u64,
}

/// A lookup's series key.
pub fn attributes(lookup: &DnsLookup) -> Attributes {
    let mut a = Attributes::new();
    a.set("network.transport", lookup.transport.as_str());
    a.set(
        "network.namespace",
        AttributeValue::Int(lookup.netns.into()),
    );
    a.set(
        "source.address",
        lookup.client.ip().to_canonical().to_string(),
    );
    if !lookup.process_name.is_empty() {
        a.set("source.process.name", &*lookup.process_name);
    }
    a.set(
        "destination.address",
        lookup.server.ip().to_canonical().to_string(),
    );
    if let Some(question) = &lookup.question {
        a.set("dns.question.name", &*question.name);
        a.set("dns.question.type", &*question.record_type);
    }
    a.set("dns.response.code", lookup.outcome);
    a
}

/// The window's DNS series, at most `max_series`: beyond it the smallest
/// (by requests) are summed into one overflow series. Returns how many
/// series went into it.
pub fn fold_dns(
    grouped: HashMap<Attributes, DnsStats>,
    max_series: usize,
) -> (Vec<DnsSeries>, u64) {
    let mut series: Vec<DnsSeries> = grouped
        .into_iter()
        .map(|(attributes, stats)| DnsSeries { attributes, stats })
        .collect();
    if series.len() <= max_series {
        return (series, 0);
    }
    series.sort_by(|a, b| {
        b.stats
            .requests
            .cmp(&a.stats.requests)
            .then_with(|| a.attributes.cmp(&b.attributes))
    });
    let kept = max_series;
    let mut overflow = DnsSeries {
        attributes: Attributes::new(),
        stats: DnsStats::default(),
    };
    overflow
        .attributes
        .set(OVERFLOW_ATTRIBUTE, AttributeValue::Bool(true));
    let folded = series.split_off(kept);
    for s in &folded {
        overflow.stats.merge(&s.stats);
    }
    series.push(overflow);
    (series, folded.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Attributes {
        let mut a = Attributes::new();
        a.set("dns.question.name", name);
        a
    }

    #[test]
    fn series_over_the_cap_are_summed_into_one() {
        let mut grouped = HashMap::default();
        for (name, n) in [("a", 5), ("b", 1), ("c", 2)] {
            grouped.insert(
                key(name),
                DnsStats {
                    requests: n,
                    ..DnsStats::default()
                },
            );
        }
        let (series, overflowed) = fold_dns(grouped, 1);
        assert_eq!(overflowed, 2);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].attributes, key("a"));
        assert_eq!(series[1].stats.requests, 3);
        assert_eq!(
            series[1].attributes.get(OVERFLOW_ATTRIBUTE),
            Some(&AttributeValue::Bool(true))
        );
    }
}
