//! Rust mirrors of the structs and constants in
//! `bpf-programs/flowtel_types.h`. `layout_matches_c` checks every size,
//! offset and constant against what the C compiler produced at build time
//! (`layout.c`), and the programs' names are checked against the object in
//! `kernel::programs`: a change on one side alone fails a unit test.

/// `FT_FLAG_*`
pub const FLAG_SEEN_OPEN: u8 = 1 << 0;
pub const FLAG_ESTABLISHED: u8 = 1 << 1;
pub const FLAG_CLOSED: u8 = 1 << 2;

/// `FT_DIR_*`
pub const DIR_OUTGOING: u8 = 1;
pub const DIR_INCOMING: u8 = 2;

/// `FT_EVENT_*`
pub const EVENT_CLOSED: u32 = 1;
pub const EVENT_RELEASED: u32 = 2;

/// `FT_STAT_*`
pub const STAT_MAP_FULL: usize = 0;
pub const STAT_CLOSE_DEFERRED: usize = 1;
pub const STAT_RELEASE_LOST: usize = 2;
pub const STAT_UNTRACKED: usize = 3;
pub const STAT_INSERT_FAILED: usize = 4;
pub const STAT_CGROUP_LOST: usize = 5;
pub const STAT_DNS_LOST: usize = 6;
#[cfg(test)]
pub const STAT_COUNT: usize = 7;
/// `FT_SETTING_SEND_PEERS`: the settings map's index.
pub const SETTING_SEND_PEERS: u32 = 0;
/// `FT_SETTING_TEST_MISS_TCP_CLOSES`: for tests, closes go unreported.
pub const SETTING_TEST_MISS_TCP_CLOSES: u32 = 1;
/// `FT_SETTING_DNS_IN_UDP`: the UDP programs capture DNS too.
pub const SETTING_DNS_IN_UDP: u32 = 2;
/// `FT_SETTING_COUNT`: the settings map's size.
pub const SETTING_COUNT: u32 = 3;

/// `FT_CGROUP_*`
pub const CGROUP_MADE: u32 = 1;
pub const CGROUP_REMOVED: u32 = 2;
pub const CGROUP_PATH_LEN: usize = 512;

pub const AF_INET: u16 = libc::AF_INET as u16;
pub const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnKey {
    pub cookie: u64,
    pub peer_addr: [u8; 16],
    pub peer_port: u16,
    pub peer_family: u16,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnInfo {
    pub first_seen_ns: u64,
    pub cgroup_id: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    pub base_bytes_sent: u64,
    pub base_bytes_received: u64,
    pub tcp_segs_out: u32,
    pub tcp_segs_in: u32,
    pub tcp_total_retrans: u32,
    pub base_segs_out: u32,
    pub base_segs_in: u32,
    pub base_total_retrans: u32,
    pub srtt_us: u32,
    pub rttvar_us: u32,
    pub netns: u32,
    pub pid: u32,
    pub close_err: i32,
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub protocol: u8,
    pub tcp_state: u8,
    pub direction: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// TCP: when a walk or the handshake last saw the connection alive.
    pub alive_ns: u64,
    /// TCP: when a program last saw the counters grow (or first saw it).
    pub moved_ns: u64,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    pub comm: [u8; 16],
}

/// `struct netns_seen`: a network namespace that holds tracked TCP
/// connections (map `tcp_netns`, keyed by its inode).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct NetnsSeen {
    pub last_ns: u64,
    pub pid: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnEvent {
    pub kind: u32,
    pub _pad: u32,
    pub key: ConnKey,
    pub info: ConnInfo,
}

// SAFETY: plain C structs of integers and byte arrays with explicit padding:
// every bit pattern is a valid value.
unsafe impl aya::Pod for ConnKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ConnInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for NetnsSeen {}
// SAFETY: as above.
unsafe impl aya::Pod for ConnEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for CgroupEvent {}

/// A record of a ring buffer: a plain C struct, valid for any bit pattern.
pub trait Record: aya::Pod {
    /// Reads a record; None when it is too short.
    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked above, `Pod` types are valid for any
        // bit pattern, and read_unaligned makes no alignment assumption.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }
}

impl Record for ConnEvent {}
impl Record for CgroupEvent {}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CgroupEvent {
    pub id: u64,
    pub kind: u32,
    pub _pad: u32,
    pub path: [u8; CGROUP_PATH_LEN],
}

impl CgroupEvent {
    /// The path, up to its NUL; None when it is not UTF-8.
    pub fn path(&self) -> Option<&str> {
        let end = self
            .path
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.path.len());
        std::str::from_utf8(&self.path[..end]).ok()
    }
}

// SAFETY: as above.
unsafe impl aya::Pod for DnsEvent {}
impl Record for DnsEvent {}

/// `FT_DNS_*`: a DNS message's direction, and the most of one copied.
pub const DNS_QUERY: u8 = 1;
#[cfg(test)]
pub const DNS_ANSWER: u8 = 2;
pub const DNS_CAPTURE: usize = 512;

/// `struct dns_event`: a DNS message seen at a client socket
/// (ring buffer `dns_events`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct DnsEvent {
    pub ktime_ns: u64,
    pub cookie: u64,
    pub netns: u32,
    pub pid: u32,
    pub length: u32,
    pub captured: u32,
    pub family: u16,
    pub client_port: u16,
    pub server_port: u16,
    pub protocol: u8,
    pub direction: u8,
    pub client_addr: [u8; 16],
    pub server_addr: [u8; 16],
    pub comm: [u8; 16],
    pub message: [u8; DNS_CAPTURE],
}

impl DnsEvent {
    /// The copied part of the message (never more than the buffer holds,
    /// whatever `captured` says).
    pub fn copied(&self) -> &[u8] {
        &self.message[..(self.captured as usize).min(DNS_CAPTURE)]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::mem::{offset_of, size_of};

    use super::*;

    const C_LAYOUT: &str = include_str!(concat!(env!("OUT_DIR"), "/c_layout.txt"));

    #[test]
    fn layout_matches_c() {
        let c: HashMap<&str, usize> = C_LAYOUT
            .lines()
            .map(|line| {
                let (name, value) = line.split_once(' ').expect("name value");
                (name, value.parse().expect("number"))
            })
            .collect();
        let rust: &[(&str, usize)] = &[
            ("conn_key", size_of::<ConnKey>()),
            ("conn_key.cookie", offset_of!(ConnKey, cookie)),
            ("conn_key.peer_addr", offset_of!(ConnKey, peer_addr)),
            ("conn_key.peer_port", offset_of!(ConnKey, peer_port)),
            ("conn_key.peer_family", offset_of!(ConnKey, peer_family)),
            ("conn_info", size_of::<ConnInfo>()),
            (
                "conn_info.first_seen_ns",
                offset_of!(ConnInfo, first_seen_ns),
            ),
            ("conn_info.cgroup_id", offset_of!(ConnInfo, cgroup_id)),
            ("conn_info.bytes_sent", offset_of!(ConnInfo, bytes_sent)),
            (
                "conn_info.bytes_received",
                offset_of!(ConnInfo, bytes_received),
            ),
            ("conn_info.packets_sent", offset_of!(ConnInfo, packets_sent)),
            (
                "conn_info.packets_received",
                offset_of!(ConnInfo, packets_received),
            ),
            (
                "conn_info.base_bytes_sent",
                offset_of!(ConnInfo, base_bytes_sent),
            ),
            (
                "conn_info.base_bytes_received",
                offset_of!(ConnInfo, base_bytes_received),
            ),
            ("conn_info.tcp_segs_out", offset_of!(ConnInfo, tcp_segs_out)),
            ("conn_info.tcp_segs_in", offset_of!(ConnInfo, tcp_segs_in)),
            (
                "conn_info.tcp_total_retrans",
                offset_of!(ConnInfo, tcp_total_retrans),
            ),
            (
                "conn_info.base_segs_out",
                offset_of!(ConnInfo, base_segs_out),
            ),
            ("conn_info.base_segs_in", offset_of!(ConnInfo, base_segs_in)),
            (
                "conn_info.base_total_retrans",
                offset_of!(ConnInfo, base_total_retrans),
            ),
            ("conn_info.srtt_us", offset_of!(ConnInfo, srtt_us)),
            ("conn_info.rttvar_us", offset_of!(ConnInfo, rttvar_us)),
            ("conn_info.netns", offset_of!(ConnInfo, netns)),
            ("conn_info.pid", offset_of!(ConnInfo, pid)),
            ("conn_info.close_err", offset_of!(ConnInfo, close_err)),
            ("conn_info.family", offset_of!(ConnInfo, family)),
            ("conn_info.local_port", offset_of!(ConnInfo, local_port)),
            ("conn_info.remote_port", offset_of!(ConnInfo, remote_port)),
            ("conn_info.protocol", offset_of!(ConnInfo, protocol)),
            ("conn_info.tcp_state", offset_of!(ConnInfo, tcp_state)),
            ("conn_info.direction", offset_of!(ConnInfo, direction)),
            ("conn_info.flags", offset_of!(ConnInfo, flags)),
            ("conn_info.alive_ns", offset_of!(ConnInfo, alive_ns)),
            ("conn_info.moved_ns", offset_of!(ConnInfo, moved_ns)),
            ("conn_info.local_addr", offset_of!(ConnInfo, local_addr)),
            ("conn_info.remote_addr", offset_of!(ConnInfo, remote_addr)),
            ("conn_info.comm", offset_of!(ConnInfo, comm)),
            ("conn_event", size_of::<ConnEvent>()),
            ("conn_event.kind", offset_of!(ConnEvent, kind)),
            ("conn_event.key", offset_of!(ConnEvent, key)),
            ("conn_event.info", offset_of!(ConnEvent, info)),
            ("FT_FLAG_SEEN_OPEN", FLAG_SEEN_OPEN.into()),
            ("FT_FLAG_ESTABLISHED", FLAG_ESTABLISHED.into()),
            ("FT_FLAG_CLOSED", FLAG_CLOSED.into()),
            ("FT_DIR_OUTGOING", DIR_OUTGOING.into()),
            ("FT_DIR_INCOMING", DIR_INCOMING.into()),
            ("FT_EVENT_CLOSED", EVENT_CLOSED as usize),
            ("FT_EVENT_RELEASED", EVENT_RELEASED as usize),
            ("FT_STAT_MAP_FULL", STAT_MAP_FULL),
            ("FT_STAT_CLOSE_DEFERRED", STAT_CLOSE_DEFERRED),
            ("FT_STAT_RELEASE_LOST", STAT_RELEASE_LOST),
            ("FT_STAT_UNTRACKED", STAT_UNTRACKED),
            ("FT_STAT_INSERT_FAILED", STAT_INSERT_FAILED),
            ("FT_STAT_COUNT", STAT_COUNT),
            ("FT_STAT_CGROUP_LOST", STAT_CGROUP_LOST),
            ("FT_SETTING_SEND_PEERS", SETTING_SEND_PEERS as usize),
            (
                "FT_SETTING_TEST_MISS_TCP_CLOSES",
                SETTING_TEST_MISS_TCP_CLOSES as usize,
            ),
            ("FT_SETTING_DNS_IN_UDP", SETTING_DNS_IN_UDP as usize),
            ("FT_SETTING_COUNT", SETTING_COUNT as usize),
            ("FT_CGROUP_MADE", CGROUP_MADE as usize),
            ("FT_CGROUP_REMOVED", CGROUP_REMOVED as usize),
            ("FT_CGROUP_PATH_LEN", CGROUP_PATH_LEN),
            ("cgroup_event", size_of::<CgroupEvent>()),
            ("cgroup_event.id", offset_of!(CgroupEvent, id)),
            ("cgroup_event.kind", offset_of!(CgroupEvent, kind)),
            ("cgroup_event.path", offset_of!(CgroupEvent, path)),
            ("dns_event", size_of::<DnsEvent>()),
            ("dns_event.ktime_ns", offset_of!(DnsEvent, ktime_ns)),
            ("dns_event.cookie", offset_of!(DnsEvent, cookie)),
            ("dns_event.netns", offset_of!(DnsEvent, netns)),
            ("dns_event.pid", offset_of!(DnsEvent, pid)),
            ("dns_event.length", offset_of!(DnsEvent, length)),
            ("dns_event.captured", offset_of!(DnsEvent, captured)),
            ("dns_event.family", offset_of!(DnsEvent, family)),
            ("dns_event.client_port", offset_of!(DnsEvent, client_port)),
            ("dns_event.server_port", offset_of!(DnsEvent, server_port)),
            ("dns_event.protocol", offset_of!(DnsEvent, protocol)),
            ("dns_event.direction", offset_of!(DnsEvent, direction)),
            ("dns_event.client_addr", offset_of!(DnsEvent, client_addr)),
            ("dns_event.server_addr", offset_of!(DnsEvent, server_addr)),
            ("dns_event.comm", offset_of!(DnsEvent, comm)),
            ("dns_event.message", offset_of!(DnsEvent, message)),
            ("FT_DNS_QUERY", DNS_QUERY.into()),
            ("FT_DNS_ANSWER", DNS_ANSWER.into()),
            ("FT_DNS_CAPTURE", DNS_CAPTURE),
            ("FT_STAT_DNS_LOST", STAT_DNS_LOST),
            ("netns_seen", size_of::<NetnsSeen>()),
            ("netns_seen.last_ns", offset_of!(NetnsSeen, last_ns)),
            ("netns_seen.pid", offset_of!(NetnsSeen, pid)),
        ];
        for (name, value) in rust {
            assert_eq!(
                c.get(name),
                Some(value),
                "{name}: C says {:?}, Rust {value}",
                c.get(name)
            );
        }
        assert_eq!(
            c.len(),
            rust.len() + 1,
            "a C field has no Rust check (udp_peer is kernel-only)"
        );
    }

    #[test]
    fn short_ring_buffer_record_is_refused() {
        assert!(ConnEvent::from_bytes(&[0u8; 8]).is_none());
        let bytes = [0u8; size_of::<ConnEvent>()];
        assert_eq!(ConnEvent::from_bytes(&bytes).map(|e| e.kind), Some(0));
    }
}
