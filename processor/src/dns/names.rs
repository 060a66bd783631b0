//! Names for addresses, per network namespace, from the A and AAAA answers
//! of the lookups seen there (the name asked, not the CNAME's target). An
//! entry lives for its TTL, and beyond it while flows to the address go on
//! (each [`NameCache::name`] marks it used); the cache is bounded, and a
//! name that finds it full of live entries is dropped and counted.

use std::net::IpAddr;
use std::sync::Arc;

use foldhash::HashMap;
use receiver::DnsAnswer;

#[derive(Debug)]
struct Entry {
    name: Arc<str>,
    expires_ns: u64,
    used_ns: u64,
}

/// Address to name, per network namespace (its inode).
#[derive(Debug)]
pub struct NameCache {
    entries: HashMap<(u32, IpAddr), Entry>,
    capacity: usize,
    /// The time of the last [`sweep`](NameCache::sweep).
    swept_ns: u64,
    /// Names not kept because the cache was full (cumulative).
    pub dropped: u64,
}

impl NameCache {
    /// An empty cache of at most `capacity` addresses.
    pub fn new(capacity: usize) -> NameCache {
        NameCache {
            entries: HashMap::default(),
            capacity,
            swept_ns: 0,
            dropped: 0,
        }
    }

    /// Addresses with a name.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no address has a name.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Remembers that `name` resolved to each of `answers` in `netns` at
    /// `at_ns` (CLOCK_MONOTONIC).
    pub fn learn(&mut self, netns: u32, name: &str, answers: &[DnsAnswer], at_ns: u64) {
        let mut shared: Option<Arc<str>> = None;
        for answer in answers {
            let key = (netns, answer.address.to_canonical());
            if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
                self.sweep(at_ns);
                if self.entries.len() >= self.capacity {
                    self.dropped += 1;
                    continue;
                }
            }
            let name = shared.get_or_insert_with(|| Arc::from(name)).clone();
            let expires_ns = at_ns.saturating_add(u64::from(answer.ttl_secs) * 1_000_000_000);
            self.entries.insert(
                key,
                Entry {
                    name,
                    expires_ns,
                    used_ns: at_ns,
                },
            );
        }
    }

    /// The name of `address` in `netns`, marking it used at `now_ns`.
    pub fn name(&mut self, netns: u32, address: IpAddr, now_ns: u64) -> Option<Arc<str>> {
        let entry = self.entries.get_mut(&(netns, address.to_canonical()))?;
        entry.used_ns = entry.used_ns.max(now_ns);
        Some(Arc::clone(&entry.name))
    }

    /// Forgets the entries past their TTL that no flow used since the
    /// previous sweep.
    pub fn sweep(&mut self, now_ns: u64) {
        let since = self.swept_ns;
        self.entries
            .retain(|_, entry| entry.expires_ns > now_ns || entry.used_ns > since);
        self.swept_ns = now_ns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn answer(ip: &str, ttl_secs: u32) -> DnsAnswer {
        DnsAnswer {
            address: ip.parse().unwrap(),
            ttl_secs,
        }
    }

    #[test]
    fn names_are_per_namespace_and_live_for_their_ttl_or_while_used() {
        let mut cache = NameCache::new(8);
        cache.learn(
            1,
            "a.example",
            &[answer("192.0.2.1", 10), answer("192.0.2.2", 10)],
            0,
        );
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(cache.name(1, ip, S).as_deref(), Some("a.example"));
        assert_eq!(cache.name(2, ip, S), None, "another namespace");
        cache.sweep(5 * S);
        assert_eq!(cache.len(), 2);
        cache.name(1, ip, 12 * S);
        cache.sweep(20 * S);
        assert_eq!(cache.len(), 1, "the unused one went at its TTL");
        cache.sweep(30 * S);
        assert!(cache.is_empty(), "unused since the last sweep");
    }

    #[test]
    fn a_full_cache_makes_room_from_expired_entries_or_drops_the_name() {
        let mut cache = NameCache::new(1);
        cache.learn(1, "a", &[answer("192.0.2.1", 1)], 0);
        cache.learn(1, "b", &[answer("192.0.2.2", 1)], S / 2);
        assert_eq!(cache.dropped, 1);
        cache.learn(1, "c", &[answer("192.0.2.3", 1)], 2 * S);
        assert_eq!(cache.dropped, 1);
        assert_eq!(
            cache
                .name(1, "192.0.2.3".parse().unwrap(), 2 * S)
                .as_deref(),
            Some("c")
        );
    }
}
