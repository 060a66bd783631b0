//! Cumulative per-connection counters to per-poll deltas.

use std::collections::hash_map::Entry;

// SipHash (std's default) was a fifth of the processor's time; the keys are
// kernel socket cookies, and foldhash is still seeded per map.
use foldhash::HashMap;

use receiver::{ConnectionId, ConnectionSample, Counters};

/// What one sample added since the previous sample of the same connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleDelta {
    /// The counters' growth since the previous sample; the full value at
    /// first sight.
    pub counters: Counters,
    /// The first sample of this connection id.
    pub first_sight: bool,
    /// At least one counter went backwards and was counted from zero.
    pub reset: bool,
}

/// Remembers the last cumulative [`Counters`] of every open connection and
/// turns each new sample into a [`SampleDelta`].
///
/// Rules:
/// - a connection id seen for the first time counts its full value (the
///   receiver starts counting at zero when it first sees a connection, so a
///   reused 5-tuple with a new id counts fully too);
/// - a counter that goes backwards never yields a negative delta: it is
///   taken as a reset and its new value is counted (each counter on its own,
///   so that one glitching counter does not recount the others);
/// - a closed connection is forgotten after its (final) sample;
/// - a quiet connection (open, its counters unchanged since the last poll,
///   so the receiver sent only its id) keeps its last counters;
/// - a connection absent from a poll, neither sampled nor quiet, was reaped
///   by the receiver and is forgotten.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    last: HashMap<ConnectionId, Seen>,
    poll: u64,
    resets: u64,
}

#[derive(Debug)]
struct Seen {
    counters: Counters,
    /// The poll number that last saw this connection.
    poll: u64,
}

impl DeltaTracker {
    /// An empty tracker.
    pub fn new() -> DeltaTracker {
        DeltaTracker::default()
    }

    /// Takes every sample of one poll, calls `each` with the sample and its
    /// delta, keeps the `quiet` connections as they were, then forgets the
    /// connections the poll did not mention.
    pub fn track_poll<'a>(
        &mut self,
        samples: &'a [ConnectionSample],
        quiet: &[ConnectionId],
        mut each: impl FnMut(&'a ConnectionSample, SampleDelta),
    ) {
        self.poll += 1;
        let poll = self.poll;
        if self.last.is_empty() {
            // The first poll (of an agent started on a busy host) brings
            // every connection at once: one table of the final size, not a
            // table that doubles while all the samples are held, with the
            // old and new tables side by side at each doubling.
            self.last
                .reserve(samples.iter().filter(|s| !s.is_closed()).count());
        }
        for id in quiet {
            // One not remembered has nothing counted yet: its first sample,
            // when it moves or closes, counts it in full.
            if let Some(seen) = self.last.get_mut(id) {
                seen.poll = poll;
            }
        }
        for sample in samples {
            let delta = match self.last.entry(sample.id) {
                Entry::Occupied(mut seen) => {
                    let (counters, reset) = growth(seen.get().counters, sample.counters);
                    if sample.is_closed() {
                        seen.remove();
                    } else {
                        *seen.get_mut() = Seen {
                            counters: sample.counters,
                            poll,
                        };
                    }
                    SampleDelta {
                        counters,
                        first_sight: false,
                        reset,
                    }
                }
                Entry::Vacant(slot) => {
                    if !sample.is_closed() {
                        slot.insert(Seen {
                            counters: sample.counters,
                            poll,
                        });
                    }
                    SampleDelta {
                        counters: sample.counters,
                        first_sight: true,
                        reset: false,
                    }
                }
            };
            if delta.reset {
                self.resets += 1;
            }
            each(sample, delta);
        }
        self.last.retain(|_, seen| seen.poll == poll);
    }

    /// The last counters of every remembered connection: what has been
    /// counted of each so far.
    pub fn baselines(&self) -> impl Iterator<Item = (ConnectionId, Counters)> + '_ {
        self.last.iter().map(|(id, seen)| (*id, seen.counters))
    }

    /// A tracker that takes `baselines` as already counted (a checkpoint of
    /// an earlier agent whose kernel counters this one continues).
    pub fn resuming(baselines: impl IntoIterator<Item = (ConnectionId, Counters)>) -> DeltaTracker {
        DeltaTracker {
            last: baselines
                .into_iter()
                .map(|(id, counters)| (id, Seen { counters, poll: 0 }))
                .collect(),
            poll: 0,
            resets: 0,
        }
    }

    /// Connections remembered (open at the last poll).
    pub fn len(&self) -> usize {
        self.last.len()
    }

    /// True when no connection is remembered.
    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }

    /// Samples, since the tracker was made, in which a counter went backwards.
    pub fn counter_resets(&self) -> u64 {
        self.resets
    }
}

/// `now - before`, field by field; a field that went backwards counts its
/// new value.
fn growth(before: Counters, now: Counters) -> (Counters, bool) {
    let mut reset = false;
    let mut field = |before: u64, now: u64| match now.checked_sub(before) {
        Some(d) => d,
        None => {
            reset = true;
            now
        }
    };
    let counters = Counters {
        bytes_sent: field(before.bytes_sent, now.bytes_sent),
        bytes_received: field(before.bytes_received, now.bytes_received),
        packets_sent: field(before.packets_sent, now.packets_sent),
        packets_received: field(before.packets_received, now.packets_received),
        retransmits: field(before.retransmits, now.retransmits),
    };
    (counters, reset)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_samples::{closed, counters, open};

    fn deltas(tracker: &mut DeltaTracker, samples: &[ConnectionSample]) -> Vec<SampleDelta> {
        let mut out = Vec::new();
        tracker.track_poll(samples, &[], |_, d| out.push(d));
        out
    }

    #[test]
    fn new_connection_counts_its_full_value() {
        let mut tracker = DeltaTracker::new();
        let d = deltas(&mut tracker, &[open(1, counters(100, 50))]);
        assert_eq!(d[0].counters, counters(100, 50));
        assert!(d[0].first_sight);
    }

    #[test]
    fn later_samples_count_the_growth() {
        let mut tracker = DeltaTracker::new();
        deltas(&mut tracker, &[open(1, counters(100, 50))]);
        let d = deltas(&mut tracker, &[open(1, counters(250, 60))]);
        assert_eq!(d[0].counters, counters(150, 10));
        assert!(!d[0].first_sight);
        let d = deltas(&mut tracker, &[open(1, counters(250, 60))]);
        assert_eq!(d[0].counters, Counters::default());
    }

    #[test]
    fn counter_going_backwards_counts_new_value_never_negative() {
        let mut tracker = DeltaTracker::new();
        deltas(&mut tracker, &[open(1, counters(1000, 500))]);
        let d = deltas(&mut tracker, &[open(1, counters(40, 600))]);
        assert_eq!(d[0].counters, counters(40, 100));
        assert!(d[0].reset);
        assert_eq!(tracker.counter_resets(), 1);
        // Tracking continues from the new value.
        let d = deltas(&mut tracker, &[open(1, counters(45, 600))]);
        assert_eq!(d[0].counters, counters(5, 0));
    }

    #[test]
    fn closed_connection_contributes_its_last_bytes_then_is_forgotten() {
        let mut tracker = DeltaTracker::new();
        deltas(&mut tracker, &[open(1, counters(100, 10))]);
        let d = deltas(&mut tracker, &[closed(1, counters(130, 12), None)]);
        assert_eq!(d[0].counters, counters(30, 2));
        assert!(tracker.is_empty());
    }

    #[test]
    fn connection_opened_and_closed_between_polls_counts_fully() {
        let mut tracker = DeltaTracker::new();
        let d = deltas(&mut tracker, &[closed(7, counters(64, 32), None)]);
        assert_eq!(d[0].counters, counters(64, 32));
        assert!(d[0].first_sight);
        assert!(tracker.is_empty());
    }

    #[test]
    fn reused_tuple_with_new_id_counts_fully() {
        let mut tracker = DeltaTracker::new();
        deltas(&mut tracker, &[open(1, counters(5000, 5000))]);
        deltas(&mut tracker, &[closed(1, counters(6000, 6000), None)]);
        // Same socket cookie and 5-tuple, new first_seen_ns: a new connection.
        let mut again = open(1, counters(300, 200));
        again.id.first_seen_ns += 1;
        let d = deltas(&mut tracker, &[again]);
        assert_eq!(d[0].counters, counters(300, 200));
        assert!(d[0].first_sight);
        assert!(!d[0].reset);
    }

    #[test]
    fn connections_missing_from_a_poll_are_forgotten() {
        let mut tracker = DeltaTracker::new();
        deltas(
            &mut tracker,
            &[open(1, counters(1, 1)), open(2, counters(2, 2))],
        );
        assert_eq!(tracker.len(), 2);
        deltas(&mut tracker, &[open(2, counters(3, 3))]);
        assert_eq!(tracker.len(), 1);
        // Were id 1 to come back it would count as new.
        let d = deltas(&mut tracker, &[open(1, counters(10, 10))]);
        assert!(d[0].first_sight);
        assert_eq!(d[0].counters, counters(10, 10));
    }

    #[test]
    fn a_quiet_connection_keeps_its_counters_across_polls() {
        let mut tracker = DeltaTracker::new();
        let first = open(1, counters(100, 50));
        let id = first.id;
        deltas(&mut tracker, &[first]);
        for _ in 0..3 {
            let mut out = Vec::new();
            tracker.track_poll(&[], &[id], |_, d| out.push(d));
            assert!(out.is_empty(), "a quiet connection has no sample");
            assert_eq!(tracker.len(), 1);
        }
        let d = deltas(&mut tracker, &[open(1, counters(130, 50))]);
        assert_eq!(d[0].counters, counters(30, 0));
        assert!(!d[0].first_sight);
    }

    #[test]
    fn a_quiet_connection_never_sampled_counts_in_full_when_it_moves() {
        let mut tracker = DeltaTracker::new();
        let id = open(4, counters(0, 0)).id;
        tracker.track_poll(&[], &[id], |_, _| {});
        assert!(tracker.is_empty(), "nothing counted, nothing to remember");
        let d = deltas(&mut tracker, &[open(4, counters(70, 7))]);
        assert!(d[0].first_sight);
        assert_eq!(d[0].counters, counters(70, 7));
    }
}
