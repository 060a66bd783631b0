//! A window's DNS series on the console: a table under the flows', and one
//! JSON object per series.

use std::fmt::Write as _;

use processor::dns::DnsSeries;
use processor::AttributeValue;

use super::units::rtt_text;

/// The text of an attribute, `-` when the series has none.
fn text(series: &DnsSeries, name: &str) -> String {
    match series.attributes.get(name) {
        Some(AttributeValue::String(s)) => s.to_string(),
        Some(other) => other.to_string(),
        None => "-".to_owned(),
    }
}

/// `-- dns --` and one row per series, most requests first.
pub(super) fn table(out: &mut String, series: &[DnsSeries]) {
    if series.is_empty() {
        return;
    }
    let lookups: u64 = series.iter().map(|s| s.stats.requests).sum();
    let _ = writeln!(
        out,
        "-- dns: {lookups} lookups in {} series --",
        series.len()
    );
    let mut sorted: Vec<&DnsSeries> = series.iter().collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.stats.requests));
    let _ = writeln!(
        out,
        "{:>8}  {:<9}  {:<5}  {:<40}  {:<16}  {:<16}  {:>9}",
        "REQUESTS", "CODE", "TYPE", "NAME", "SERVER", "PROCESS", "MEAN"
    );
    for s in sorted {
        let mean = match s.stats.durations.count {
            0 => "-".to_owned(),
            n => rtt_text(std::time::Duration::from_secs_f64(
                s.stats.durations.sum_secs / n as f64,
            )),
        };
        let _ = writeln!(
            out,
            "{:>8}  {:<9}  {:<5}  {:<40}  {:<16}  {:<16}  {:>9}",
            s.stats.requests,
            text(s, "dns.response.code"),
            text(s, "dns.question.type"),
            text(s, "dns.question.name"),
            text(s, "destination.address"),
            text(s, "source.process.name"),
            mean
        );
    }
}

/// The JSON record of one DNS series.
#[derive(serde::Serialize)]
pub(super) struct DnsRecord<'a> {
    record: &'static str,
    start: &'a str,
    end: &'a str,
    attributes: super::json::AttributeMap<'a>,
    /// Lookups, answered or timed out.
    requests: u64,
    /// Answered lookups, whose durations follow.
    answered: u64,
    duration_mean_us: Option<u64>,
    duration_max_us: Option<u64>,
}

impl<'a> DnsRecord<'a> {
    pub(super) fn new(start: &'a str, end: &'a str, series: &'a DnsSeries) -> DnsRecord<'a> {
        let d = &series.stats.durations;
        let micros = |secs: f64| (secs * 1e6).round() as u64;
        DnsRecord {
            record: "dns",
            start,
            end,
            attributes: super::json::AttributeMap(&series.attributes),
            requests: series.stats.requests,
            answered: d.count,
            duration_mean_us: (d.count > 0).then(|| micros(d.sum_secs / d.count as f64)),
            duration_max_us: (d.count > 0).then(|| micros(d.max_secs)),
        }
    }
}
