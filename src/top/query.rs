//! `flowtel top`'s query: which flows (`--where`), how they are grouped into
//! rows (`--group-by`) and in which order (`--sort`). Pure functions of a
//! poll's resolved flows, so that they are tested without a kernel.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use processor::{Attributes, FlowStats};
use regex::Regex;

/// The group-by of `flowtel top` when none is given.
pub const DEFAULT_GROUP_BY: &str = "source.process.name,destination.service";

/// What a row shows for an attribute a flow does not have, when there is
/// no fallback for it.
pub const NO_VALUE: &str = "-";

/// Attributes shown in place of a missing one: a flow whose destination no
/// mapping names is shown by its address, and so is one whose address no
/// DNS answer named.
const FALLBACKS: [(&str, &str); 3] = [
    ("destination.service", "destination.address"),
    ("source.service", "source.address"),
    ("destination.domain", "destination.address"),
];

/// One `--where` condition's comparison.
#[derive(Debug, Clone)]
enum Test {
    /// `attr=value`: the attribute has exactly this value.
    Equals(String),
    /// `attr!=value`: the attribute has another value, or none.
    NotEquals(String),
    /// `attr=~regex`: the attribute has a value the regex finds a match in.
    Matches(Regex),
}

/// One `--where` condition.
#[derive(Debug, Clone)]
struct Condition {
    attribute: String,
    test: Test,
}

impl Condition {
    fn matches(&self, attributes: &Attributes) -> bool {
        let value = attributes.get(&self.attribute).map(ToString::to_string);
        match (&self.test, value) {
            (Test::Equals(wanted), Some(value)) => *wanted == value,
            (Test::NotEquals(unwanted), Some(value)) => *unwanted != value,
            (Test::Matches(regex), Some(value)) => regex.is_match(&value),
            // An attribute the flow does not have has no value: it equals
            // nothing, matches no regex and differs from every value.
            (Test::Equals(_) | Test::Matches(_), None) => false,
            (Test::NotEquals(_), None) => true,
        }
    }
}

/// `--where`: conditions joined with commas, all of which a flow must meet.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    conditions: Vec<Condition>,
    text: String,
}

impl Filter {
    /// Parses `attr=value,attr!=value,attr=~regex`. The error is one line
    /// naming the condition that is wrong.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let conditions = text
            .split(',')
            .map(|part| parse_condition(part, text))
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            conditions,
            text: text.to_owned(),
        })
    }

    /// True when the flow with these attributes meets every condition (and
    /// for a filter with none).
    pub fn matches(&self, attributes: &Attributes) -> bool {
        self.conditions.iter().all(|c| c.matches(attributes))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.conditions.is_empty() {
            f.write_str("all flows")
        } else {
            f.write_str(&self.text)
        }
    }
}

fn parse_condition(part: &str, whole: &str) -> Result<Condition, String> {
    let part = part.trim();
    if part.is_empty() {
        return Err(format!(
            "empty condition in {whole:?}: conditions are joined by single commas"
        ));
    }
    let Some(at) = part.find('=') else {
        return Err(format!(
            "{part:?} has no operator: use attr=value, attr!=value or attr=~regex"
        ));
    };
    let (name, test) = match (part[..at].strip_suffix('!'), &part[at + 1..]) {
        (Some(name), value) => (name, Test::NotEquals(value.to_owned())),
        (None, rest) => match rest.strip_prefix('~') {
            Some(pattern) => {
                let regex = Regex::new(pattern)
                    .map_err(|e| format!("{part:?} has an invalid regex: {}", regex_problem(&e)))?;
                (&part[..at], Test::Matches(regex))
            }
            None => (&part[..at], Test::Equals(rest.to_owned())),
        },
    };
    Ok(Condition {
        attribute: attribute_name(name.trim(), part)?,
        test,
    })
}

/// The one line of a regex error that says what is wrong (its Display
/// repeats the pattern over several lines).
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or_default())
        .trim()
        .to_owned()
}

/// Checks an attribute name written in `part` of an option.
fn attribute_name(name: &str, part: &str) -> Result<String, String> {
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

/// `--group-by`: the attributes a row is keyed by, in column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBy(Vec<String>);

impl GroupBy {
    /// Parses `attr,attr,...`; the error is one line naming the bad part.
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        let mut names: Vec<String> = Vec::new();
        for part in text.split(',') {
            let name = part.trim();
            if name.is_empty() {
                return Err(format!(
                    "empty attribute name in {text:?}: names are joined by single commas"
                ));
            }
            let name = attribute_name(name, name)?;
            if names.contains(&name) {
                return Err(format!("{name:?} is named twice in {text:?}"));
            }
            names.push(name);
        }
        Ok(GroupBy(names))
    }

    /// The attribute names, in column order.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The group-bys the `g` key cycles through: this one, then by
    /// destination address and port, then by process name alone (each once).
    pub fn presets(&self) -> Vec<GroupBy> {
        let mut presets = vec![self.clone()];
        for preset in [
            "destination.address,destination.port",
            "source.process.name",
        ] {
            let preset = GroupBy::parse(preset).expect("the presets are valid");
            if !presets.contains(&preset) {
                presets.push(preset);
            }
        }
        presets
    }

    /// A flow's row key: the value of each attribute, with the fallbacks.
    pub fn key(&self, attributes: &Attributes) -> Vec<String> {
        self.0.iter().map(|name| value(attributes, name)).collect()
    }
}

impl Default for GroupBy {
    fn default() -> GroupBy {
        GroupBy::parse(DEFAULT_GROUP_BY).expect("the default group-by is valid")
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// The value a row shows for `name`: the flow's own, else its fallback's
/// (`destination.service` -> `destination.address`, `source.service` ->
/// `source.address`), else [`NO_VALUE`].
pub fn value(attributes: &Attributes, name: &str) -> String {
    let fallback = FALLBACKS
        .iter()
        .find(|(missing, _)| *missing == name)
        .map(|(_, instead)| *instead);
    attributes
        .get(name)
        .or_else(|| fallback.and_then(|instead| attributes.get(instead)))
        .map_or_else(|| NO_VALUE.to_owned(), ToString::to_string)
}

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
    fn compare(self, a: &FlowStats, b: &FlowStats) -> Ordering {
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
mod tests {
    use receiver::Rtt;

    use super::*;
    use processor::AttributeValue;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs.iter().copied().collect()
    }

    fn flow(pairs: &[(&str, &str)], sent: u64, received: u64) -> (Attributes, FlowStats) {
        let stats = FlowStats {
            bytes_sent: sent,
            bytes_received: received,
            ..FlowStats::default()
        };
        (attrs(pairs), stats)
    }

    fn parse_error(text: &str) -> String {
        Filter::parse(text).unwrap_err()
    }

    #[test]
    fn where_takes_equals_not_equals_and_regex() {
        let filter = Filter::parse(
            "destination.port=5432,source.process.name!=sshd,destination.service=~^pg",
        )
        .unwrap();
        let mut a = Attributes::new();
        a.set("destination.port", AttributeValue::Int(5432));
        a.set("source.process.name", "psql");
        a.set("destination.service", "pg-main");
        assert!(filter.matches(&a));
        a.set("source.process.name", "sshd");
        assert!(!filter.matches(&a));
        a.set("source.process.name", "psql");
        a.set("destination.service", "main-pg");
        assert!(!filter.matches(&a));
        assert_eq!(
            filter.to_string(),
            "destination.port=5432,source.process.name!=sshd,destination.service=~^pg"
        );
    }

    #[test]
    fn where_trims_spaces_and_keeps_empty_values() {
        let filter = Filter::parse(" source.service = ").unwrap();
        assert!(filter.matches(&attrs(&[("source.service", "")])));
        assert!(!filter.matches(&attrs(&[("source.service", "web")])));
    }

    #[test]
    fn an_unknown_attribute_has_no_value() {
        let flow = attrs(&[("source.process.name", "curl")]);
        assert!(!Filter::parse("pod=web").unwrap().matches(&flow));
        assert!(!Filter::parse("pod=~.*").unwrap().matches(&flow));
        assert!(Filter::parse("pod!=web").unwrap().matches(&flow));
    }

    #[test]
    fn no_filter_matches_everything() {
        let filter = Filter::default();
        assert!(filter.matches(&Attributes::new()));
        assert_eq!(filter.to_string(), "all flows");
    }

    #[test]
    fn bad_where_says_which_part_is_wrong() {
        assert_eq!(
            parse_error("destination.port=53,sshd"),
            "\"sshd\" has no operator: use attr=value, attr!=value or attr=~regex"
        );
        assert_eq!(parse_error("=5432"), "\"=5432\" has no attribute name");
        assert_eq!(parse_error("!=5432"), "\"!=5432\" has no attribute name");
        assert_eq!(
            parse_error("a=1,,b=2"),
            "empty condition in \"a=1,,b=2\": conditions are joined by single commas"
        );
        assert_eq!(
            parse_error(""),
            "empty condition in \"\": conditions are joined by single commas"
        );
        assert_eq!(
            parse_error("destination.service=~(pg"),
            "\"destination.service=~(pg\" has an invalid regex: unclosed group"
        );
        assert_eq!(
            parse_error("dest port=1"),
            "attribute name \"dest port\" in \"dest port=1\" may only have letters, digits, '.', '_' and '-'"
        );
        for text in ["a", "a=~(", "a=1,,", "b c=1"] {
            assert!(!parse_error(text).contains('\n'), "{text}");
        }
    }

    #[test]
    fn group_by_parses_names_in_order() {
        let g = GroupBy::parse("destination.port, source.process.name").unwrap();
        assert_eq!(g.names(), ["destination.port", "source.process.name"]);
        assert_eq!(g.to_string(), "destination.port,source.process.name");
        assert_eq!(GroupBy::default().to_string(), DEFAULT_GROUP_BY);
    }

    #[test]
    fn bad_group_by_says_which_part_is_wrong() {
        assert_eq!(
            GroupBy::parse("a,,b").unwrap_err(),
            "empty attribute name in \"a,,b\": names are joined by single commas"
        );
        assert_eq!(
            GroupBy::parse("a,a").unwrap_err(),
            "\"a\" is named twice in \"a,a\""
        );
        assert_eq!(
            GroupBy::parse("a=b").unwrap_err(),
            "attribute name \"a=b\" in \"a=b\" may only have letters, digits, '.', '_' and '-'"
        );
    }

    #[test]
    fn presets_start_with_the_given_group_by_and_never_repeat() {
        let given = GroupBy::default();
        let presets: Vec<String> = given.presets().iter().map(ToString::to_string).collect();
        assert_eq!(
            presets,
            [
                DEFAULT_GROUP_BY,
                "destination.address,destination.port",
                "source.process.name"
            ]
        );
        let by_process = GroupBy::parse("source.process.name").unwrap();
        assert_eq!(by_process.presets().len(), 2);
    }

    #[test]
    fn a_missing_service_falls_back_to_the_address() {
        let named = attrs(&[
            ("destination.service", "postgres"),
            ("destination.address", "10.0.0.5"),
            ("source.address", "10.0.0.1"),
        ]);
        let unnamed = attrs(&[
            ("destination.address", "10.0.0.6"),
            ("source.address", "10.0.0.1"),
        ]);
        assert_eq!(value(&named, "destination.service"), "postgres");
        assert_eq!(value(&unnamed, "destination.service"), "10.0.0.6");
        assert_eq!(value(&unnamed, "source.service"), "10.0.0.1");
        let looked_up = attrs(&[
            ("destination.domain", "db.example.com"),
            ("destination.address", "10.0.0.5"),
        ]);
        assert_eq!(value(&looked_up, "destination.domain"), "db.example.com");
        assert_eq!(value(&unnamed, "destination.domain"), "10.0.0.6");
        // No fallback for other attributes.
        assert_eq!(value(&unnamed, "destination.port"), NO_VALUE);
        assert_eq!(value(&unnamed, "source.process.name"), NO_VALUE);
    }

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
        let rtt = |ms| Rtt {
            smoothed: Duration::from_millis(ms),
            variance: Duration::ZERO,
        };
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
