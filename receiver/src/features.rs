//! What the agent counts, feature by feature, and how. Each eBPF program
//! belongs to one feature; a program the kernel refuses switches its
//! feature to a fallback or turns it off, with one warning line, instead
//! of stopping the agent. Only [`Feature::TcpConnections`] is required.

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

    fn index(self) -> usize {
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

/// How a feature works on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Works as designed, through `via`.
    On { via: String },
    /// Works another way (`via`) because the first was refused (`why`).
    Fallback { via: String, why: String },
    /// Does not work, because `why`.
    Off { why: String },
}

impl State {
    pub fn level(&self) -> Level {
        match self {
            State::On { .. } => Level::On,
            State::Fallback { .. } => Level::Fallback,
            State::Off { .. } => Level::Off,
        }
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

/// Every feature's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    states: Vec<State>,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            states: Feature::ALL
                .iter()
                .map(|_| State::Off {
                    why: "not loaded".to_owned(),
                })
                .collect(),
        }
    }
}

impl Features {
    pub fn set(&mut self, feature: Feature, state: State) {
        self.states[feature.index()] = state;
    }

    pub fn get(&self, feature: Feature) -> &State {
        &self.states[feature.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Feature, &State)> {
        Feature::ALL.iter().copied().zip(self.states.iter())
    }

    /// The levels alone, for the health metrics.
    pub fn levels(&self) -> Levels {
        let mut levels = Levels::default();
        for (feature, state) in self.iter() {
            levels.0[feature.index()] = state.level();
        }
        levels
    }

    /// One line per feature that is not on, for the log.
    pub fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.iter().filter_map(|(feature, state)| match state {
            State::On { .. } => None,
            State::Fallback { via, why } => Some(format!(
                "feature {feature}: fallback to {via}, because {why}"
            )),
            State::Off { why } => Some(format!(
                "feature {feature}: off, because {why}; {}",
                feature.loss()
            )),
        })
    }
}

/// Every feature's level; cheap to copy into each poll's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Levels([Level; Feature::ALL.len()]);

impl Levels {
    pub fn get(&self, feature: Feature) -> Level {
        self.0[feature.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Feature, Level)> + '_ {
        Feature::ALL.iter().copied().zip(self.0.iter().copied())
    }
}

/// The programs a test asks the loader to treat as refused by the kernel
/// (`FLOWTEL_TEST_REFUSE_PROGRAMS=name,name`; `conntrack` for feature
/// nat's netlink reads): for tests of the fallbacks only, never needed in
/// production.
pub fn refused_for_test(program: &str) -> bool {
    std::env::var(REFUSE_FOR_TEST)
        .map(|names| names.split(',').any(|name| name.trim() == program))
        .unwrap_or(false)
}

pub const REFUSE_FOR_TEST: &str = "FLOWTEL_TEST_REFUSE_PROGRAMS";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_feature_starts_off_and_takes_its_state() {
        let mut features = Features::default();
        assert!(features.iter().all(|(_, s)| s.level() == Level::Off));
        features.set(
            Feature::Udp,
            State::Fallback {
                via: "kprobes".into(),
                why: "refused".into(),
            },
        );
        assert_eq!(features.levels().get(Feature::Udp), Level::Fallback);
        assert_eq!(features.levels().get(Feature::TcpLiveBytes), Level::Off);
    }

    #[test]
    fn a_feature_that_is_off_says_what_is_lost() {
        let mut features = Features::default();
        for feature in Feature::ALL {
            features.set(feature, State::On { via: "x".into() });
        }
        features.set(
            Feature::TcpLiveBytes,
            State::Off {
                why: "the kernel refused flowtel_tcp_refresh: Operation not permitted".into(),
            },
        );
        let warnings: Vec<String> = features.warnings().collect();
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].starts_with("feature tcp live bytes: off, because the kernel refused")
                && warnings[0].ends_with("appear only when it closes"),
            "{}",
            warnings[0]
        );
    }
}
