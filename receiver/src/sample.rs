//! The contract between the receiver and the processor: one cumulative
//! snapshot of one connection, plain data that tests build by hand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use health::PollHealth;

/// Transport protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Tcp,
    Udp,
}

impl Transport {
    /// The OpenTelemetry `network.transport` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// Who opened the connection, as seen from the local end. For UDP, who
/// moved the conversation's first datagram the agent saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The local end connected out (TCP `connect`), or sent first (UDP).
    Outgoing,
    /// The remote end connected in (TCP `accept`), or sent first (UDP).
    Incoming,
    /// Not seen: a TCP connection that was open before the agent started.
    Unknown,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outgoing => "outgoing",
            Direction::Incoming => "incoming",
            Direction::Unknown => "unknown",
        }
    }
}

/// Why a connection ended in error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CloseError {
    /// The peer answered the SYN with a RST (ECONNREFUSED).
    Refused,
    /// The connection was reset (ECONNRESET, EPIPE).
    Reset,
    /// The handshake or a retransmission timed out (ETIMEDOUT).
    Timeout,
    /// Any other socket error, by errno.
    Other(i32),
}

impl CloseError {
    /// Classifies the socket error (`sk_err`) the kernel left on the socket.
    pub fn from_errno(errno: i32) -> Option<CloseError> {
        match errno {
            0 => None,
            libc::ECONNREFUSED => Some(CloseError::Refused),
            libc::ECONNRESET | libc::EPIPE => Some(CloseError::Reset),
            libc::ETIMEDOUT => Some(CloseError::Timeout),
            other => Some(CloseError::Other(other)),
        }
    }

    /// The OpenTelemetry `error.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseError::Refused => "refused",
            CloseError::Reset => "reset",
            CloseError::Timeout => "timeout",
            CloseError::Other(_) => "other",
        }
    }
}

/// Where a connection is in its life at the time of the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    Open,
    /// Closed; `error` is set when it ended with a socket error. A TCP
    /// connection that was never established and closed with an error is a
    /// failed connection attempt.
    Closed {
        error: Option<CloseError>,
    },
}

/// Identity of one tracked connection. Unique for the life of the agent: a
/// reused 5-tuple or socket gets a new `first_seen_ns`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct ConnectionId {
    /// The kernel's socket cookie: never reused while the kernel runs.
    pub socket_cookie: u64,
    /// For unconnected UDP sockets one socket talks to many peers; each peer
    /// is its own connection. Unspecified for TCP.
    pub peer: Option<SocketAddr>,
    /// CLOCK_MONOTONIC nanoseconds when the kernel began tracking it.
    pub first_seen_ns: u64,
}

/// The process that owns a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProcessInfo {
    /// Thread-group id; 0 when no process context was ever seen.
    pub pid: u32,
    /// Process name (`comm`), from the kernel at first sight, so that it is
    /// known even when the process is gone by the time user space looks.
    pub name: String,
    /// Container id, from the process's cgroup path, where there is one.
    pub container_id: Option<String>,
    /// The Kubernetes pod's UID, from the process's cgroup path, where
    /// there is one.
    pub pod_uid: Option<String>,
}

/// Cumulative counters of one connection since the agent began tracking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Bytes the local end sent (accepted by `send*`).
    pub bytes_sent: u64,
    /// Bytes the local end received (returned by `recv*`).
    pub bytes_received: u64,
    /// TCP segments / UDP datagrams sent.
    pub packets_sent: u64,
    /// TCP segments / UDP datagrams received.
    pub packets_received: u64,
    /// TCP segments the local end retransmitted.
    pub retransmits: u64,
}

/// The kernel's smoothed RTT estimate of a TCP connection (as in `tcp_info`),
/// in the kernel's own unit: 8 bytes in each of a poll's samples, not 32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtt {
    smoothed_us: u32,
    variance_us: u32,
}

impl Rtt {
    pub fn from_micros(smoothed_us: u32, variance_us: u32) -> Rtt {
        Rtt {
            smoothed_us,
            variance_us,
        }
    }

    pub fn smoothed(&self) -> Duration {
        Duration::from_micros(self.smoothed_us.into())
    }

    /// The mean deviation.
    pub fn variance(&self) -> Duration {
        Duration::from_micros(self.variance_us.into())
    }
}

/// One cumulative snapshot of one connection.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionSample {
    pub id: ConnectionId,
    /// Inode number of the network namespace.
    pub netns: u32,
    pub transport: Transport,
    /// The local end (the source, in flowtel's model). IPv4-mapped IPv6
    /// addresses are reported as IPv4.
    pub local: SocketAddr,
    /// The remote end (the destination).
    pub remote: SocketAddr,
    pub direction: Direction,
    pub process: Arc<ProcessInfo>,
    pub counters: Counters,
    /// TCP only, once the kernel has an estimate.
    pub rtt: Option<Rtt>,
    /// True when the agent saw the connection open (so it counts as opened).
    pub seen_opening: bool,
    /// True once the TCP handshake completed.
    pub established: bool,
    pub state: ConnectionState,
    /// What NAT rewrote of the connection, from conntrack; `None` without
    /// NAT. Boxed: most samples have none, and every sample would pay its
    /// 64 bytes.
    pub translation: Option<Box<Translation>>,
}

/// What NAT rewrote of a connection, as its local end sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Translation {
    /// The remote end as it really is: the server a DNAT sent the bytes
    /// to, or, for a server behind SNAT or masquerade, the real client.
    pub destination: Option<SocketAddr>,
    /// The local end as the remote end saw it: the address a masquerade
    /// gave a client, or the virtual address a client of a server behind
    /// DNAT connected to.
    pub source: Option<SocketAddr>,
}

impl ConnectionSample {
    /// What NAT rewrote, empty when nothing was.
    pub fn translation(&self) -> Translation {
        self.translation.as_deref().copied().unwrap_or_default()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, ConnectionState::Closed { .. })
    }

    /// A connection attempt that never got established and ended in error.
    pub fn failed_attempt(&self) -> Option<CloseError> {
        match self.state {
            ConnectionState::Closed { error: Some(e) } if !self.established => Some(e),
            _ => None,
        }
    }
}

/// What one poll of the kernel found.
#[derive(Debug, Clone, Default)]
pub struct Poll {
    /// When the poll read the maps.
    pub at: Option<SystemTime>,
    /// Every connection closed since the last poll, and every open one
    /// that is new or whose counters moved since the last poll read them.
    /// A closed connection appears exactly once, with its final counters.
    pub samples: Vec<ConnectionSample>,
    /// The open connections that did not move since the last poll: their
    /// last sample stands. With `samples`, every connection still tracked.
    pub quiet: Vec<ConnectionId>,
    pub health: PollHealth,
    /// Which ports are servers', for collapsing UDP client ports.
    pub ports: crate::PortFacts,
    /// The DNS messages seen at client sockets since the last poll, in the
    /// order they were read (feature dns).
    pub dns: Vec<crate::DnsMessage>,
    /// CLOCK_MONOTONIC, in nanoseconds, at the end of the poll: the clock
    /// of [`DnsMessage::at_ns`](crate::DnsMessage), for lookup timeouts.
    pub monotonic_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_stays_small() {
        // A poll holds one per connection that moved: at 240,000 a poll,
        // each byte here is 240 kB of the agent's peak memory.
        assert!(std::mem::size_of::<ConnectionSample>() <= 200);
    }
}
