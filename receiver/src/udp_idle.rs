//! UDP entries whose socket's release the kernel could not report (the
//! ring buffer was full, or the release hook is off) would stay in the
//! connection map until the agent restarts. A UDP entry that has moved
//! nothing for the idle timeout is swept instead: its last counts are
//! taken once, like a released socket's, and a later datagram on the same
//! socket starts a new entry from zero.

use foldhash::{HashMap, HashMapExt};
use std::time::{Duration, Instant};

use crate::kernel::abi::{ConnInfo, ConnKey};

pub struct IdleUdp {
    timeout: Duration,
    /// Per entry (key and first sight): its datagram count and since when.
    seen: HashMap<(ConnKey, u64), Activity>,
    poll: u64,
}

struct Activity {
    datagrams: u64,
    since: Instant,
    poll: u64,
}

impl IdleUdp {
    pub fn new(timeout: Duration) -> IdleUdp {
        IdleUdp {
            timeout,
            seen: HashMap::new(),
            poll: 0,
        }
    }

    /// Whether the UDP entry has moved nothing for the timeout, as of `now`.
    pub fn is_idle(&mut self, key: &ConnKey, info: &ConnInfo, now: Instant) -> bool {
        let datagrams = info.packets_sent + info.packets_received;
        let poll = self.poll;
        let activity = self
            .seen
            .entry((*key, info.first_seen_ns))
            .or_insert(Activity {
                datagrams,
                since: now,
                poll,
            });
        activity.poll = poll;
        if activity.datagrams != datagrams {
            activity.datagrams = datagrams;
            activity.since = now;
        }
        now.duration_since(activity.since) >= self.timeout
    }

    /// Forgets the entries this poll did not see (gone, or swept).
    pub fn end_poll(&mut self) {
        let poll = self.poll;
        self.seen.retain(|_, activity| activity.poll == poll);
        self.poll += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(datagrams: u64) -> (ConnKey, ConnInfo) {
        let key = ConnKey {
            cookie: 9,
            ..ConnKey::default()
        };
        let info = ConnInfo {
            first_seen_ns: 1,
            packets_sent: datagrams,
            ..ConnInfo::default()
        };
        (key, info)
    }

    #[test]
    fn an_entry_is_idle_after_the_timeout_without_a_datagram() {
        let mut idle = IdleUdp::new(Duration::from_secs(60));
        let start = Instant::now();
        let (key, info) = entry(3);
        assert!(!idle.is_idle(&key, &info, start));
        idle.end_poll();
        assert!(!idle.is_idle(&key, &info, start + Duration::from_secs(59)));
        idle.end_poll();
        let (_, moved) = entry(4);
        assert!(!idle.is_idle(&key, &moved, start + Duration::from_secs(61)));
        idle.end_poll();
        assert!(idle.is_idle(&key, &moved, start + Duration::from_secs(121)));
    }

    #[test]
    fn entries_not_seen_in_a_poll_are_forgotten() {
        let mut idle = IdleUdp::new(Duration::from_secs(60));
        let (key, info) = entry(1);
        idle.is_idle(&key, &info, Instant::now());
        idle.end_poll();
        idle.end_poll();
        assert!(idle.seen.is_empty());
    }
}
