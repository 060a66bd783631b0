//! The features: each thing the agent counts or knows, and the level each
//! works at on this kernel. The receiver decides the levels; the health
//! metrics and the console carry them.

use std::fmt;

/// One thing the agent counts or knows, backed by one or more programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// TCP connections opened, closed and failed, with their bytes at close
    /// (the state tracepoint).
    TcpConnections,
    /// An open TCP connection's bytes at each poll (the TCP iterator).
    TcpLiveBytes,
    /// TCP connections older than the agent (the TCP iterator, at start).
    ExistingConnections,
    /// The process that holds each socket (the task_file iterator).
    SocketOwners,
    /// TCP counters brought up to date at each retransmission.
    Retransmits,
    /// UDP datagrams and bytes.
    Udp,
    /// The peer of each datagram of an unconnected UDP socket, and the new
    /// peer of a re-connected one.
    UdpPeers,
    /// The end of a UDP socket's conversations.
    UdpRelease,
    /// The container and pod of a connection's process, from its cgroup,
    /// named when the cgroup is made (so even when the process is gone).
    Containers,
    /// The peer NAT really sent a connection to (conntrack, no program).
    Nat,
    /// The host's DNS lookups: names of remote addresses, DNS metrics.
    Dns,
}

impl Feature {
    pub const ALL: [Feature; 11] = [
        Feature::TcpConnections,
        Feature::TcpLiveBytes,
        Feature::ExistingConnections,
        Feature::SocketOwners,
        Feature::Retransmits,
        Feature::Udp,
        Feature::UdpPeers,
        Feature::UdpRelease,
        Feature::Containers,
        Feature::Nat,
        Feature::Dns,
    ];

    /// The feature's name in `flowtel check`, logs and the health metrics.
    pub fn name(self) -> &'static str {
        match self {
            Feature::TcpConnections => "tcp connections",
            Feature::TcpLiveBytes => "tcp live bytes",
            Feature::ExistingConnections => "existing connections",
            Feature::SocketOwners => "socket owners",
            Feature::Retransmits => "retransmits",
            Feature::Udp => "udp",
            Feature::UdpPeers => "udp peers",
            Feature::UdpRelease => "udp release",
            Feature::Containers => "containers",
            Feature::Nat => "nat",
            Feature::Dns => "dns",
        }
    }

    /// What a user loses while the feature is off.
    pub fn loss(self) -> &'static str {
        match self {
            Feature::TcpConnections => "nothing can be counted",
            Feature::TcpLiveBytes => {
                "an open TCP connection's bytes appear only when it closes"
            }
            Feature::ExistingConnections => {
                "TCP connections opened before the agent started are not counted"
            }
            Feature::SocketOwners => {
                "accepted connections keep their listener's process; connections older than the agent have none"
            }
            Feature::Retransmits => "retransmits are read at each poll and at close only",
            Feature::Udp => "UDP is not counted",
            Feature::UdpPeers => {
                "datagrams of an unconnected UDP socket count under the socket, without their peer, and a re-connected socket's new peer takes the old one's flow"
            }
            Feature::UdpRelease => {
                "a closed UDP socket's flows end when they have been idle for a while"
            }
            Feature::Containers => {
                "a connection's container is read from /proc at the next poll: a process that has exited by then has none"
            }
            Feature::Nat => {
                "connections through DNAT, port forwards or masquerade show only the address the socket used, not the peer the bytes reached"
            }
            Feature::Dns => {
                "flows have no destination.domain and there are no dns.* metrics"
            }
        }
    }

    /// Its place in [`Feature::ALL`].
    pub fn index(self) -> usize {
        Feature::ALL
            .iter()
            .position(|f| *f == self)
            .expect("every feature is in ALL")
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A state's level, as the health metrics carry it (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Level {
    #[default]
    Off = 0,
    Fallback = 1,
    On = 2,
}

/// Every feature's level; cheap to copy into each poll's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Levels([Level; Feature::ALL.len()]);

impl Levels {
    /// Sets `feature`'s level.
    pub fn set(&mut self, feature: Feature, level: Level) {
        self.0[feature.index()] = level;
    }

    pub fn get(&self, feature: Feature) -> Level {
        self.0[feature.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Feature, Level)> + '_ {
        Feature::ALL.iter().copied().zip(self.0.iter().copied())
    }
}
