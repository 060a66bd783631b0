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
