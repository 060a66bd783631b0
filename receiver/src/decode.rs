//! Turns the kernel's raw connection records into [`ConnectionSample`]s.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::kernel::abi::{self, ConnInfo, ConnKey};
use crate::{
    CloseError, ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, ProcessInfo,
    Rtt, Transport,
};

/// Whether the record is the connection's last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    StillOpen,
    /// TCP reached CLOSE, or a UDP socket was released.
    Closed,
}

/// Whether the kernel marked the record closed (TCP reached CLOSE).
pub fn is_closed(info: &ConnInfo) -> bool {
    info.flags & abi::FLAG_CLOSED != 0
}

/// Whether a TCP entry saw its handshake complete (or was found connected).
pub fn is_established(info: &ConnInfo) -> bool {
    info.flags & abi::FLAG_ESTABLISHED != 0
}

pub fn is_tcp(info: &ConnInfo) -> bool {
    info.protocol == abi::IPPROTO_TCP
}

/// Whether an open entry may hold something the poll that read the map at
/// `last_read_ns` (CLOCK_MONOTONIC) did not see: always for UDP (not
/// stamped), for TCP when the connection is newer than that read or its
/// counters grew since. One that did not is quiet: its last sample stands.
pub fn moved_since(info: &ConnInfo, last_read_ns: u64) -> bool {
    !is_tcp(info) || info.first_seen_ns >= last_read_ns || info.moved_ns >= last_read_ns
}

/// The identity of the connection an entry tracks.
pub fn connection_id(key: &ConnKey, info: &ConnInfo) -> ConnectionId {
    ConnectionId {
        socket_cookie: key.cookie,
        peer: peer(key),
        first_seen_ns: info.first_seen_ns,
    }
}

/// An unconnected UDP socket's peer, which its key carries.
fn peer(key: &ConnKey) -> Option<SocketAddr> {
    (key.peer_family != 0).then(|| socket_addr(key.peer_family, &key.peer_addr, key.peer_port))
}

pub fn decode(
    key: &ConnKey,
    info: &ConnInfo,
    ending: Ending,
    process: Arc<ProcessInfo>,
) -> ConnectionSample {
    let transport = if is_tcp(info) {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let id = connection_id(key, info);
    let remote = id
        .peer
        .unwrap_or_else(|| socket_addr(info.family, &info.remote_addr, info.remote_port));
    let local = socket_addr(info.family, &info.local_addr, info.local_port);
    let direction = match info.direction {
        abi::DIR_OUTGOING => Direction::Outgoing,
        abi::DIR_INCOMING => Direction::Incoming,
        _ => Direction::Unknown,
    };
    let state = match ending {
        Ending::StillOpen => ConnectionState::Open,
        Ending::Closed => ConnectionState::Closed {
            error: CloseError::from_errno(info.close_err),
        },
    };
    ConnectionSample {
        id,
        netns: info.netns,
        transport,
        local,
        remote,
        direction,
        process,
        counters: counters(info, transport),
        rtt: (transport == Transport::Tcp && info.srtt_us > 0)
            .then(|| Rtt::from_micros(info.srtt_us, info.rttvar_us)),
        seen_opening: info.flags & abi::FLAG_SEEN_OPEN != 0,
        established: is_established(info),
        state,
        translation: Default::default(),
    }
}

fn counters(info: &ConnInfo, transport: Transport) -> Counters {
    match transport {
        Transport::Udp => Counters {
            bytes_sent: info.bytes_sent,
            bytes_received: info.bytes_received,
            packets_sent: info.packets_sent,
            packets_received: info.packets_received,
            retransmits: 0,
        },
        // The kernel's own counters, less what they held when the agent first
        // saw a connection that was already open.
        Transport::Tcp => Counters {
            bytes_sent: info.bytes_sent,
            bytes_received: info.bytes_received,
            packets_sent: info.tcp_segs_out.saturating_sub(info.base_segs_out).into(),
            packets_received: info.tcp_segs_in.saturating_sub(info.base_segs_in).into(),
            retransmits: info
                .tcp_total_retrans
                .saturating_sub(info.base_total_retrans)
                .into(),
        },
    }
}

/// An address as the kernel stores it: IPv4 in the first four bytes, IPv6 in
/// all sixteen. IPv4-mapped IPv6 (a dual-stack socket talking IPv4) is IPv4.
fn socket_addr(family: u16, bytes: &[u8; 16], port: u16) -> SocketAddr {
    let ip = if family == abi::AF_INET {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        let v6 = Ipv6Addr::from(*bytes);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    };
    SocketAddr::new(ip, port)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn tcp_info() -> ConnInfo {
        let mut info = ConnInfo {
            family: abi::AF_INET,
            protocol: abi::IPPROTO_TCP,
            local_port: 40000,
            remote_port: 80,
            ..ConnInfo::default()
        };
        info.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        info.remote_addr[..4].copy_from_slice(&[10, 0, 0, 2]);
        info
    }

    #[test]
    fn decodes_an_ipv4_tcp_connection() {
        let mut info = tcp_info();
        info.bytes_sent = 100;
        info.tcp_segs_out = 7;
        info.base_segs_out = 2;
        info.tcp_total_retrans = 3;
        info.srtt_us = 250;
        info.direction = abi::DIR_OUTGOING;
        info.flags = abi::FLAG_SEEN_OPEN | abi::FLAG_ESTABLISHED;
        let sample = decode(
            &ConnKey::default(),
            &info,
            Ending::StillOpen,
            Arc::default(),
        );
        assert_eq!(sample.local, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(sample.remote, "10.0.0.2:80".parse().unwrap());
        assert_eq!(sample.counters.packets_sent, 5);
        assert_eq!(sample.counters.retransmits, 3);
        assert_eq!(sample.direction, Direction::Outgoing);
        assert!(sample.seen_opening && sample.established);
        assert_eq!(sample.rtt.unwrap().smoothed(), Duration::from_micros(250));
        assert_eq!(sample.state, ConnectionState::Open);
    }

    #[test]
    fn a_tcp_entry_is_quiet_only_when_nothing_moved_since_the_last_read() {
        let mut info = tcp_info();
        info.first_seen_ns = 1_000;
        info.moved_ns = 1_500;
        assert!(moved_since(&info, 0), "the first poll reads everything");
        assert!(moved_since(&info, 1_500), "moved as the last poll read");
        assert!(!moved_since(&info, 2_000), "nothing since");
        info.first_seen_ns = 2_000;
        info.moved_ns = 2_000;
        assert!(moved_since(&info, 2_000), "new since the last read");
        let mut udp = tcp_info();
        udp.protocol = libc::IPPROTO_UDP as u8;
        assert!(moved_since(&udp, u64::MAX), "UDP is not stamped");
    }

    #[test]
    fn reports_ipv4_mapped_ipv6_as_ipv4() {
        let mut info = tcp_info();
        info.family = libc::AF_INET6 as u16;
        info.remote_addr = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets();
        info.local_addr = Ipv6Addr::LOCALHOST.octets();
        let sample = decode(
            &ConnKey::default(),
            &info,
            Ending::StillOpen,
            Arc::default(),
        );
        assert_eq!(sample.remote, "192.0.2.1:80".parse().unwrap());
        assert_eq!(sample.local, "[::1]:40000".parse().unwrap());
    }

    #[test]
    fn an_unconnected_udp_peer_comes_from_the_key() {
        let mut info = tcp_info();
        info.protocol = libc::IPPROTO_UDP as u8;
        info.remote_port = 0;
        info.remote_addr = [0; 16];
        let mut key = ConnKey {
            cookie: 9,
            peer_family: abi::AF_INET,
            peer_port: 5353,
            ..ConnKey::default()
        };
        key.peer_addr[..4].copy_from_slice(&[127, 0, 0, 9]);
        let sample = decode(&key, &info, Ending::StillOpen, Arc::default());
        assert_eq!(sample.remote, "127.0.0.9:5353".parse().unwrap());
        assert_eq!(sample.id.peer, Some(sample.remote));
        assert_eq!(sample.transport, Transport::Udp);
    }

    #[test]
    fn a_refused_connect_is_a_failed_attempt() {
        let mut info = tcp_info();
        info.flags = abi::FLAG_SEEN_OPEN | abi::FLAG_CLOSED;
        info.close_err = libc::ECONNREFUSED;
        let sample = decode(&ConnKey::default(), &info, Ending::Closed, Arc::default());
        assert_eq!(sample.failed_attempt(), Some(CloseError::Refused));
    }
}
