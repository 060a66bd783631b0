//! What the processor hands to the exporters: plain data that tests build by
//! hand.

use std::time::{Duration, SystemTime};

use health::PollHealth;

use crate::dns::{DnsHealth, DnsSeries};
use crate::{FlowKey, FlowStats, Series};

/// One flow and what it did in a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Whom the connections were between.
    pub key: FlowKey,
    /// What they did.
    pub stats: FlowStats,
}

/// The flows active between two polls, with the deltas since the previous
/// poll.
#[derive(Debug, Clone, PartialEq)]
pub struct PollReport {
    /// When the previous poll read the kernel (the processor's start for the
    /// first poll).
    pub start: SystemTime,
    /// When this poll read the kernel.
    pub end: SystemTime,
    /// Every flow with activity in the period, in no particular order.
    pub flows: Vec<Flow>,
    /// The receiver's losses and load at this poll (cumulative).
    pub health: PollHealth,
    /// Samples of this poll in which a counter went backwards (counted as a
    /// reset, see [`DeltaTracker`](crate::DeltaTracker)).
    pub counter_resets: u64,
    /// Lookups finished in this poll (answered or timed out).
    pub dns_lookups: u64,
    /// The DNS side's losses (cumulative) and pending queries.
    pub dns_health: DnsHealth,
}

impl PollReport {
    /// The length of the period.
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}

/// One closed window: the series active in it, summed over its polls.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowReport {
    /// The window's aligned start (a multiple of the interval), also for the
    /// first window, which the agent saw only from its start on.
    pub start: SystemTime,
    /// The window's aligned end; the time of the last poll for a window
    /// flushed at shutdown.
    pub end: SystemTime,
    /// Every series with activity in the window, in no particular order;
    /// with more than `max_series`, the last is the overflow series.
    pub series: Vec<Series>,
    /// How many series went into the overflow series.
    pub overflowed_series: u64,
    /// The window's DNS lookups as `dns.*` series; with more than
    /// `max_series`, the last is the overflow series.
    pub dns: Vec<DnsSeries>,
    /// How many DNS series went into the DNS overflow series.
    pub overflowed_dns_series: u64,
}

impl WindowReport {
    /// The length of the window.
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }
}
