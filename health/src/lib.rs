//! The agent's health at a poll: what the kernel side lost and how loaded
//! it is, what the name sources beside it failed at, and each feature's
//! level. Plain data that the receiver fills, the agent completes, the
//! processor's poll report carries and the exporters read: the one type
//! these stages share about health, so that none reaches into another.

mod features;

use std::time::Duration;

pub use features::{Feature, Level, Levels};

/// Losses and load of the kernel side, cumulative since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollHealth {
    /// New TCP connections not tracked because the connection map was full.
    pub connections_dropped: u64,
    /// Events (sends, receives, state changes) on sockets left out of the
    /// full connection map: UDP sockets and connections older than the agent
    /// show up here, once per event, since they have no opening to count.
    pub untracked_events: u64,
    /// Close events that found the ring buffer full (kept in the map instead:
    /// nothing lost, only delayed to the next poll).
    pub close_events_deferred: u64,
    /// UDP socket releases that found the ring buffer full: those sockets'
    /// flows end when they have been idle (swept), not at once.
    pub udp_releases_lost: u64,
    /// Established TCP connections whose close no program reported (the
    /// kernel skipped the state program's run), found gone by the next walk
    /// of their namespace and ended there: what they moved after the walk
    /// before is lost.
    pub tcp_closes_missed: u64,
    /// New entries the kernel refused though the map had room (a busy or
    /// timed-out bucket lock, twice): those events were not counted.
    pub insert_failures: u64,
    /// Container cgroups made or removed that flowtel could not keep (its
    /// ring buffer or table full): their connections show no container.
    pub cgroups_lost: u64,
    /// DNS messages the kernel could not hand over (its ring buffer full).
    pub dns_lost: u64,
    /// Records of the DNS ring buffer that were no DNS message flowtel can
    /// read: cut below a header, compression loops, wrong counts, ...
    pub dns_malformed: u64,
    /// DNS messages read but not held, because more than the inbox's
    /// bound arrived between two polls.
    pub dns_overflowed: u64,
    /// Runs of the tracing programs the kernel skipped (a run of the same
    /// program under way on that CPU): their events were not counted.
    pub runs_missed: u64,
    /// Network namespaces with tracked TCP connections that the last poll
    /// could not enter: their open connections' bytes wait for the close.
    pub namespaces_unreachable: u64,
    /// Conntrack sockets that overflowed (ENOBUFS): each was read again
    /// by a dump, since NAT events were lost.
    pub nat_resyncs: u64,
    /// Translated conntrack entries not held because the table was full:
    /// those connections show no translation.
    pub nat_entries_dropped: u64,
    /// Failed requests to the container runtime's API (missing socket,
    /// timeout, error status, garbage), and containers left out of its
    /// full index: those containers have no name. Set by the agent, which
    /// runs that source beside the receiver.
    pub container_runtime_errors: u64,
    /// Kubernetes watches started again from a new list (410 Gone, a lost
    /// resource version); the agent fills it in from `processor.kubernetes`.
    pub kubernetes_relists: u64,
    /// Kubernetes objects skipped because they could not be read.
    pub kubernetes_objects_malformed: u64,
    /// Failed requests to the Kubernetes API server (each retried).
    pub kubernetes_api_errors: u64,
    /// Each feature's level (on, fallback, off).
    pub features: Levels,
    /// Entries in the connection map at the poll.
    pub tracked_connections: u64,
    /// Capacity of the connection map.
    pub map_capacity: u64,
    /// How long this poll took to read the maps and the ring buffer.
    pub poll_duration: Duration,
}
