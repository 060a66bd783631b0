//! What is counted for a flow in one period: [`FlowStats`], with its
//! failed connections by reason and its RTT summary.

use std::time::Duration;

use receiver::{CloseError, ConnectionSample, ConnectionState, Counters, Rtt};

/// Failed connections by reason (`error.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionFailures {
    /// Refused: the peer answered the SYN with a RST.
    pub refused: u64,
    /// Reset, during the handshake or once established.
    pub reset: u64,
    /// The handshake timed out.
    pub timeout: u64,
    /// Any other socket error.
    pub other: u64,
}

impl ConnectionFailures {
    /// Counts one failure.
    pub fn record(&mut self, error: CloseError) {
        match error {
            CloseError::Refused => self.refused += 1,
            CloseError::Reset => self.reset += 1,
            CloseError::Timeout => self.timeout += 1,
            CloseError::Other(_) => self.other += 1,
        }
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.other
    }

    /// The reasons with a nonzero count, as (`error.type`, count), in a fixed
    /// order.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            (CloseError::Refused.as_str(), self.refused),
            (CloseError::Reset.as_str(), self.reset),
            (CloseError::Timeout.as_str(), self.timeout),
            (CloseError::Other(0).as_str(), self.other),
        ]
        .into_iter()
        .filter(|&(_, n)| n > 0)
    }

    fn merge(&mut self, other: &ConnectionFailures) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.timeout += other.timeout;
        self.other += other.other;
    }
}

/// RTT estimates of the samples of one period, kept as sums so that periods
/// add up; read as means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RttSummary {
    samples: u64,
    smoothed_ns: u128,
    variance_ns: u128,
}

impl RttSummary {
    /// Adds one sample's estimate.
    pub fn record(&mut self, rtt: Rtt) {
        self.samples += 1;
        self.smoothed_ns += rtt.smoothed().as_nanos();
        self.variance_ns += rtt.variance().as_nanos();
    }

    /// How many samples carried an estimate.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Mean smoothed RTT; `None` when no sample carried one.
    pub fn mean(&self) -> Option<Duration> {
        mean(self.smoothed_ns, self.samples)
    }

    /// Mean RTT variance (jitter); `None` when no sample carried one.
    pub fn mean_variance(&self) -> Option<Duration> {
        mean(self.variance_ns, self.samples)
    }

    fn merge(&mut self, other: &RttSummary) {
        self.samples += other.samples;
        self.smoothed_ns += other.smoothed_ns;
        self.variance_ns += other.variance_ns;
    }
}

fn mean(sum_ns: u128, n: u64) -> Option<Duration> {
    if n == 0 {
        return None;
    }
    let ns = sum_ns / u128::from(n);
    Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
}

/// What the connections of one flow did in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Bytes from source to destination.
    pub bytes_sent: u64,
    /// Bytes from destination to source.
    pub bytes_received: u64,
    /// TCP segments / UDP datagrams sent.
    pub packets_sent: u64,
    /// TCP segments / UDP datagrams received.
    pub packets_received: u64,
    /// TCP segments the source retransmitted.
    pub retransmits: u64,
    /// Connections the receiver saw open, counted at their first sample.
    pub connections_opened: u64,
    /// Connections that closed, counted at their closing sample.
    pub connections_closed: u64,
    /// Connections that failed: attempts that never got established and
    /// ended in error, and established connections closed by a reset.
    pub connections_failed: ConnectionFailures,
    /// RTT of the samples that carried one and had activity in the period.
    pub rtt: RttSummary,
}

impl FlowStats {
    /// The contribution of one sample whose counters grew by `delta`;
    /// `first_sight` when it is the connection's first sample.
    pub fn of_sample(sample: &ConnectionSample, delta: &Counters, first_sight: bool) -> FlowStats {
        let mut stats = FlowStats {
            bytes_sent: delta.bytes_sent,
            bytes_received: delta.bytes_received,
            packets_sent: delta.packets_sent,
            packets_received: delta.packets_received,
            retransmits: delta.retransmits,
            ..FlowStats::default()
        };
        if first_sight && sample.seen_opening {
            stats.connections_opened = 1;
        }
        if let ConnectionState::Closed { error } = sample.state {
            stats.connections_closed = 1;
            if let Some(failure) = sample.failed_attempt() {
                stats.connections_failed.record(failure);
            } else if error == Some(CloseError::Reset) {
                stats.connections_failed.record(CloseError::Reset);
            }
        }
        // An idle connection's RTT says nothing about this period and would
        // keep every idle flow in the report: only active samples count.
        if stats.has_activity() {
            if let Some(rtt) = sample.rtt {
                stats.rtt.record(rtt);
            }
        }
        stats
    }

    /// Adds another period's or connection's stats to these.
    pub fn merge(&mut self, other: &FlowStats) {
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.packets_sent += other.packets_sent;
        self.packets_received += other.packets_received;
        self.retransmits += other.retransmits;
        self.connections_opened += other.connections_opened;
        self.connections_closed += other.connections_closed;
        self.connections_failed.merge(&other.connections_failed);
        self.rtt.merge(&other.rtt);
    }

    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_sent + self.bytes_received
    }

    /// True when anything was counted besides RTT.
    pub fn has_activity(&self) -> bool {
        self.bytes_sent
            | self.bytes_received
            | self.packets_sent
            | self.packets_received
            | self.retransmits
            | self.connections_opened
            | self.connections_closed
            | self.connections_failed.total()
            != 0
    }

    /// Bytes both ways over `period`, in bits per second; 0 for an empty
    /// period.
    pub fn bandwidth_bps(&self, period: Duration) -> f64 {
        let seconds = period.as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        self.bytes() as f64 * 8.0 / seconds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_samples::{closed, counters, open};

    #[test]
    fn opened_counts_once_at_first_sight_when_seen_opening() {
        let sample = open(1, counters(1, 1));
        assert_eq!(
            FlowStats::of_sample(&sample, &sample.counters, true).connections_opened,
            1
        );
        assert_eq!(
            FlowStats::of_sample(&sample, &sample.counters, false).connections_opened,
            0
        );
        let mut preexisting = open(1, counters(1, 1));
        preexisting.seen_opening = false;
        let stats = FlowStats::of_sample(&preexisting, &preexisting.counters, true);
        assert_eq!(stats.connections_opened, 0);
    }

    #[test]
    fn closed_counts_at_the_closing_sample() {
        let sample = closed(1, counters(0, 0), None);
        let stats = FlowStats::of_sample(&sample, &Counters::default(), false);
        assert_eq!(stats.connections_closed, 1);
        assert_eq!(stats.connections_failed.total(), 0);
        assert!(stats.has_activity());
    }

    #[test]
    fn failed_attempts_count_by_reason() {
        for (error, expect) in [
            (
                CloseError::Refused,
                ConnectionFailures {
                    refused: 1,
                    ..Default::default()
                },
            ),
            (
                CloseError::Timeout,
                ConnectionFailures {
                    timeout: 1,
                    ..Default::default()
                },
            ),
            (
                CloseError::Reset,
                ConnectionFailures {
                    reset: 1,
                    ..Default::default()
                },
            ),
            (
                CloseError::Other(113),
                ConnectionFailures {
                    other: 1,
                    ..Default::default()
                },
            ),
        ] {
            let mut sample = closed(1, Counters::default(), Some(error));
            sample.established = false;
            let stats = FlowStats::of_sample(&sample, &sample.counters, true);
            assert_eq!(stats.connections_failed, expect, "{error:?}");
            assert_eq!(stats.connections_closed, 1);
        }
    }

    #[test]
    fn established_connection_reset_counts_as_failed_reset() {
        let sample = closed(1, counters(10, 10), Some(CloseError::Reset));
        assert!(sample.established);
        let stats = FlowStats::of_sample(&sample, &Counters::default(), false);
        assert_eq!(stats.connections_failed.reset, 1);
        assert_eq!(stats.connections_failed.total(), 1);
    }

    #[test]
    fn established_connection_closed_by_other_errors_is_not_failed() {
        let sample = closed(1, counters(10, 10), Some(CloseError::Timeout));
        let stats = FlowStats::of_sample(&sample, &Counters::default(), false);
        assert_eq!(stats.connections_failed.total(), 0);
        assert_eq!(stats.connections_closed, 1);
    }

    #[test]
    fn nonzero_failures_list_only_counted_reasons() {
        let failures = ConnectionFailures {
            refused: 2,
            timeout: 1,
            ..Default::default()
        };
        let listed: Vec<_> = failures.nonzero().collect();
        assert_eq!(listed, [("refused", 2), ("timeout", 1)]);
        assert_eq!(ConnectionFailures::default().nonzero().count(), 0);
    }

    #[test]
    fn rtt_is_the_mean_of_active_samples_carrying_one() {
        let rtt = |us| Rtt::from_micros(us, us / 10);
        let mut a = open(1, counters(10, 0));
        a.rtt = Some(rtt(100));
        let mut b = open(2, counters(10, 0));
        b.rtt = Some(rtt(300));
        let c = open(3, counters(10, 0)); // no estimate yet
        let mut idle = open(4, Counters::default());
        idle.rtt = Some(rtt(9000));

        let mut stats = FlowStats::default();
        for s in [&a, &b, &c, &idle] {
            stats.merge(&FlowStats::of_sample(s, &s.counters, false));
        }
        assert_eq!(stats.rtt.samples(), 2);
        assert_eq!(stats.rtt.mean(), Some(Duration::from_micros(200)));
        assert_eq!(stats.rtt.mean_variance(), Some(Duration::from_micros(20)));
        assert_eq!(FlowStats::default().rtt.mean(), None);
    }

    #[test]
    fn bandwidth_is_bits_over_the_period() {
        let stats = FlowStats {
            bytes_sent: 1000,
            bytes_received: 250,
            ..Default::default()
        };
        assert_eq!(stats.bandwidth_bps(Duration::from_secs(10)), 1000.0);
        assert_eq!(stats.bandwidth_bps(Duration::ZERO), 0.0);
    }
}
