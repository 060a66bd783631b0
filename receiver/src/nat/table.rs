//! The translated conntrack entries of every namespace read, bounded, by
//! the (protocol, local port, remote) of the sockets that can see them and
//! then their local address: a UDP server bound to 0.0.0.0 or [::] knows
//! its port but not which of its addresses a datagram came to.

use foldhash::HashMap;
use std::net::{IpAddr, SocketAddr};

use super::entry::{Ends, Tracked};
use crate::sample::{Translation, Transport};

/// The most translated connections held: two keys each, about 400 bytes
/// a connection, so about 26 MiB when full. Past it new ones are counted
/// as dropped, not held.
pub const MAX_TRANSLATED: usize = 65_536;

/// (protocol, local port, remote), the remote in its canonical form (an
/// IPv4 peer of a dual-stack socket is plain IPv4, as conntrack has it).
type Key = (Transport, u16, SocketAddr);

#[derive(Debug, Clone, Copy)]
struct Held {
    netns: u32,
    /// The local address of this view (canonical).
    local: IpAddr,
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

fn key(transport: Transport, local_port: u16, remote: SocketAddr) -> Key {
    let remote = SocketAddr::new(remote.ip().to_canonical(), remote.port());
    (transport, local_port, remote)
}

fn key_of(transport: Transport, view: Ends) -> Key {
    key(transport, view.source.port(), view.destination)
}

impl Held {
    fn is_view(&self, netns: u32, view: Ends) -> bool {
        self.netns == netns && self.local == view.source.ip().to_canonical()
    }

    /// Whether a socket bound to `local` sees this view: its own address,
    /// or any when it is bound to the unspecified one.
    fn seen_from(&self, local: IpAddr) -> bool {
        local.is_unspecified() || local.to_canonical() == self.local
    }
}

impl Table {
    /// Holds a translated entry of namespace `netns` (a repeat is no new one).
    pub fn insert(&mut self, netns: u32, tracked: &Tracked) {
        let [(first, _), _] = tracked.views();
        let fresh = !self
            .held
            .get(&key_of(tracked.transport, first))
            .is_some_and(|all| all.iter().any(|h| h.is_view(netns, first)));
        if fresh && self.connections >= MAX_TRANSLATED {
            self.dropped += 1;
            return;
        }
        if fresh {
            self.connections += 1;
        }
        for (view, translation) in tracked.views() {
            let all = self
                .held
                .entry(key_of(tracked.transport, view))
                .or_default();
            let held = Held {
                netns,
                local: view.source.ip().to_canonical(),
                translation,
                gone_at: None,
                seen_by_resync: self.resyncs,
            };
            match all.iter_mut().find(|h| h.is_view(netns, view)) {
                Some(old) => *old = held,
                None => all.push(held),
            }
        }
    }

    /// The kernel destroyed the entry: it stays until two more polls ended.
    pub fn destroyed(&mut self, netns: u32, tracked: &Tracked) {
        for (view, _) in tracked.views() {
            if let Some(all) = self.held.get_mut(&key_of(tracked.transport, view)) {
                for held in all.iter_mut().filter(|h| h.is_view(netns, view)) {
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
        let all = self.held.get(&key(transport, local.port(), remote))?;
        let mut seen = all.iter().filter(|h| h.seen_from(local.ip()));
        let first = seen.next()?;
        std::iter::once(first)
            .chain(seen)
            .find(|h| h.netns == netns)
            .or(Some(first))
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
    fn a_server_bound_to_the_unspecified_address_finds_its_entry_by_port() {
        let mut table = Table::default();
        table.insert(7, &dnat(40000));
        let client: SocketAddr = "10.253.7.1:40000".parse().unwrap();
        let found = |local: &str| {
            let local = local.parse().unwrap();
            table.translation(7, Transport::Tcp, local, client)
        };
        let dialled = Some("10.253.9.9:80".parse().unwrap());
        assert_eq!(found("0.0.0.0:8080").and_then(|t| t.source), dialled);
        assert_eq!(found("[::]:8080").and_then(|t| t.source), dialled);
        assert_eq!(found("10.253.7.2:8080").and_then(|t| t.source), dialled);
        assert_eq!(found("10.253.7.3:8080"), None, "another address");
        assert_eq!(found("0.0.0.0:8081"), None, "another port");
        let mapped = "[::ffff:10.253.7.1]:40000".parse().unwrap();
        let dual_stack = table.translation(7, Transport::Tcp, "[::]:8080".parse().unwrap(), mapped);
        assert_eq!(dual_stack.and_then(|t| t.source), dialled);
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
