//! The translated conntrack entries of every namespace read, bounded, by
//! the (protocol, local, remote) of the sockets that can see them.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::entry::{Ends, Tracked};
use crate::sample::{Translation, Transport};

/// The most translated connections held: two keys each, about 400 bytes
/// a connection, so about 26 MiB when full. Past it new ones are counted
/// as dropped, not held.
pub const MAX_TRANSLATED: usize = 65_536;

type Key = (Transport, SocketAddr, SocketAddr);

#[derive(Debug, Clone, Copy)]
struct Held {
    netns: u32,
    translation: Translation,
    /// The poll at which the kernel destroyed the entry, if it did.
    gone_at: Option<u64>,
    /// The resync that last saw it.
    seen_by_resync: u64,
}

/// Translated entries, and the counts of what could not be held.
#[derive(Debug, Default)]
pub struct Table {
    held: HashMap<Key, Vec<Held>>,
    connections: usize,
    /// Polls ended: an entry destroyed stays for two of them, so that a
    /// connection that closed just before its entry went is still read
    /// with its translation.
    polls: u64,
    resyncs: u64,
    pub dropped: u64,
}

fn key(transport: Transport, ends: Ends) -> Key {
    (transport, ends.source, ends.destination)
}

impl Table {
    /// Holds a translated entry of namespace `netns` (a repeat is no new one).
    pub fn insert(&mut self, netns: u32, tracked: &Tracked) {
        let [(first, _), _] = tracked.views();
        let fresh = !self
            .held
            .get(&key(tracked.transport, first))
            .is_some_and(|all| all.iter().any(|h| h.netns == netns));
        if fresh && self.connections >= MAX_TRANSLATED {
            self.dropped += 1;
            return;
        }
        if fresh {
            self.connections += 1;
        }
        for (ends, translation) in tracked.views() {
            let all = self.held.entry(key(tracked.transport, ends)).or_default();
            let held = Held {
                netns,
                translation,
                gone_at: None,
                seen_by_resync: self.resyncs,
            };
            match all.iter_mut().find(|h| h.netns == netns) {
                Some(old) => *old = held,
                None => all.push(held),
            }
        }
    }

    /// The kernel destroyed the entry: it stays until two more polls ended.
    pub fn destroyed(&mut self, netns: u32, tracked: &Tracked) {
        for (ends, _) in tracked.views() {
            if let Some(all) = self.held.get_mut(&key(tracked.transport, ends)) {
                for held in all.iter_mut().filter(|h| h.netns == netns) {
                    held.gone_at.get_or_insert(self.polls);
                }
            }
        }
    }

    /// A resync of `netns` begins: what its dump does not list again was
    /// destroyed while the events were lost.
    pub fn begin_resync(&mut self) -> u64 {
        self.resyncs += 1;
        self.resyncs
    }

    /// The resync's dump is complete.
    pub fn end_resync(&mut self, netns: u32, resync: u64) {
        let polls = self.polls;
        for held in self.held.values_mut().flatten() {
            if held.netns == netns && held.seen_by_resync < resync {
                held.gone_at.get_or_insert(polls);
            }
        }
    }

    /// What NAT rewrote for the socket (`local`, `remote`) of namespace
    /// `netns`: an entry of its own namespace first (DNAT in its output
    /// chain), else of another one (a router namespace on this host).
    pub fn translation(
        &self,
        netns: u32,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Option<Translation> {
        let all = self.held.get(&(transport, local, remote))?;
        all.iter()
            .find(|h| h.netns == netns)
            .or_else(|| all.first())
            .map(|h| h.translation)
    }

    /// Ends a poll: forgets the entries destroyed two polls ago or more.
    pub fn end_poll(&mut self) {
        self.polls += 1;
        let polls = self.polls;
        let before: usize = self.held.values().map(Vec::len).sum();
        self.held.retain(|_, all| {
            all.retain(|h| h.gone_at.is_none_or(|at| polls < at + 2));
            !all.is_empty()
        });
        let after: usize = self.held.values().map(Vec::len).sum();
        self.connections -= (before - after) / 2;
    }

    /// Forgets a namespace (it is gone).
    pub fn forget(&mut self, netns: u32) {
        let before: usize = self.held.values().map(Vec::len).sum();
        self.held.retain(|_, all| {
            all.retain(|h| h.netns != netns);
            !all.is_empty()
        });
        let after: usize = self.held.values().map(Vec::len).sum();
        self.connections -= (before - after) / 2;
    }

    /// Translated connections held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.connections
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dnat(client_port: u16) -> Tracked {
        let ends = |s: String, d: &str| Ends {
            source: s.parse().unwrap(),
            destination: d.parse().unwrap(),
        };
        Tracked {
            transport: Transport::Tcp,
            original: ends(format!("10.253.7.1:{client_port}"), "10.253.9.9:80"),
            reply: Ends {
                source: "10.253.7.2:8080".parse().unwrap(),
                destination: format!("10.253.7.1:{client_port}").parse().unwrap(),
            },
        }
    }

    fn lookup(table: &Table, netns: u32, port: u16) -> Option<Translation> {
        table.translation(
            netns,
            Transport::Tcp,
            format!("10.253.7.1:{port}").parse().unwrap(),
            "10.253.9.9:80".parse().unwrap(),
        )
    }

    #[test]
    fn a_destroyed_entry_stays_for_two_polls() {
        let mut table = Table::default();
        table.insert(7, &dnat(40000));
        table.destroyed(7, &dnat(40000));
        table.end_poll();
        assert!(lookup(&table, 7, 40000).is_some(), "read at the next poll");
        table.end_poll();
        assert!(lookup(&table, 7, 40000).is_none());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn the_socket_namespace_comes_first_and_another_serves_otherwise() {
        let mut table = Table::default();
        table.insert(7, &dnat(40000));
        assert!(lookup(&table, 9, 40000).is_some());
        assert!(lookup(&table, 7, 40001).is_none());
        table.forget(7);
        assert!(lookup(&table, 7, 40000).is_none());
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn past_the_bound_new_entries_are_counted_not_held() {
        let mut table = Table::default();
        for port in 0..MAX_TRANSLATED {
            table.insert(1, &dnat(port as u16));
            table.insert(1, &dnat(port as u16)); // a repeat is no new one
        }
        assert_eq!(table.len(), MAX_TRANSLATED);
        table.insert(2, &dnat(1));
        assert_eq!((table.len(), table.dropped), (MAX_TRANSLATED, 1));
    }

    #[test]
    fn a_resync_ends_the_entries_its_dump_no_longer_lists() {
        let mut table = Table::default();
        table.insert(1, &dnat(40000));
        table.insert(1, &dnat(40001));
        let resync = table.begin_resync();
        table.insert(1, &dnat(40001));
        table.end_resync(1, resync);
        table.end_poll();
        table.end_poll();
        assert!(lookup(&table, 1, 40000).is_none());
        assert!(lookup(&table, 1, 40001).is_some());
    }
}
