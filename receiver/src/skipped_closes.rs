//! Finds TCP connections whose close the kernel did not report: a program
//! run skipped (recursion, or the kernel's own limits) leaves the entry
//! open in the map, and nothing else would ever end it. The refresh walks
//! stamp each entry they see alive (`alive_ns`); an established entry that
//! two walks in a row of its namespace did not see has a socket that is gone.
//! Two, not one: an iterator that could not batch a hash bucket (no memory)
//! skips its sockets once, and a live connection must never be ended.

use foldhash::HashSet;

use crate::decode;
use crate::kernel::abi::ConnInfo;

/// One refresh: the namespaces it walked and when it began (CLOCK_MONOTONIC).
#[derive(Debug, Clone)]
struct Walk {
    namespaces: HashSet<u32>,
    began_ns: u64,
}

/// The last two refresh walks.
#[derive(Debug, Default)]
pub struct SkippedCloses {
    previous: Option<Walk>,
    last: Option<Walk>,
    found: u64,
}

impl SkippedCloses {
    /// Records a refresh that walked `namespaces`, begun at `began_ns`.
    pub fn walked(&mut self, namespaces: impl IntoIterator<Item = u32>, began_ns: u64) {
        self.previous = self.last.take();
        self.last = Some(Walk {
            namespaces: namespaces.into_iter().collect(),
            began_ns,
        });
    }

    /// Whether `info`'s socket is gone without a reported close; counts it.
    pub fn socket_gone(&mut self, info: &ConnInfo) -> bool {
        let (Some(previous), Some(last)) = (&self.previous, &self.last) else {
            return false;
        };
        let gone = decode::is_tcp(info)
            && !decode::is_closed(info)
            && decode::is_established(info)
            // Neither walk saw it alive, and it existed before both began.
            && info.alive_ns < previous.began_ns
            && info.first_seen_ns < previous.began_ns
            && previous.namespaces.contains(&info.netns)
            && last.namespaces.contains(&info.netns);
        self.found += u64::from(gone);
        gone
    }

    /// Connections found gone so far.
    pub fn found(&self) -> u64 {
        self.found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::abi;

    fn established(netns: u32, first_seen_ns: u64, alive_ns: u64) -> ConnInfo {
        ConnInfo {
            protocol: abi::IPPROTO_TCP,
            flags: abi::FLAG_ESTABLISHED,
            netns,
            first_seen_ns,
            alive_ns,
            ..ConnInfo::default()
        }
    }

    /// After two walks, of `first` then of `second`, begun at 100 and 200.
    fn walked_twice(first: u32, second: u32) -> SkippedCloses {
        let mut closes = SkippedCloses::default();
        closes.walked([first], 100);
        closes.walked([second], 200);
        closes
    }

    #[test]
    fn an_entry_unseen_by_two_walks_of_its_namespace_is_gone() {
        let mut closes = SkippedCloses::default();
        let entry = established(7, 10, 20);
        closes.walked([7], 100);
        assert!(!closes.socket_gone(&entry), "one walk is not enough");
        closes.walked([7], 200);
        assert!(closes.socket_gone(&entry));
        assert_eq!(closes.found(), 1);
    }

    #[test]
    fn an_entry_seen_alive_by_either_walk_stays() {
        let mut closes = walked_twice(7, 7);
        assert!(!closes.socket_gone(&established(7, 10, 150)));
        assert!(!closes.socket_gone(&established(7, 10, 250)));
        // Tracked after the first walk began: it may not have been there.
        assert!(!closes.socket_gone(&established(7, 120, 120)));
    }

    #[test]
    fn an_entry_in_a_namespace_either_walk_left_out_stays() {
        let mut closes = walked_twice(7, 8);
        assert!(!closes.socket_gone(&established(7, 10, 20)));
        assert!(!closes.socket_gone(&established(8, 10, 20)));
    }

    #[test]
    fn closed_connecting_and_udp_entries_are_never_gone() {
        let mut closes = walked_twice(7, 7);
        let mut closed = established(7, 10, 20);
        closed.flags |= abi::FLAG_CLOSED;
        let mut connecting = established(7, 10, 20);
        connecting.flags = 0;
        let mut udp = established(7, 10, 20);
        udp.protocol = libc::IPPROTO_UDP as u8;
        for entry in [closed, connecting, udp] {
            assert!(!closes.socket_gone(&entry));
        }
        assert_eq!(closes.found(), 0);
    }
}
