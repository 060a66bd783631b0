//! The `receiver` section of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which family of kernel hooks feeds the connection maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeSet {
    /// Tracepoints where the kernel has them (6.3+), kprobes otherwise.
    #[default]
    Auto,
    /// BTF tracepoints `sock:sock_send_length`, `sock:sock_recv_length` (6.3+).
    Tracepoint,
    /// kprobes on `udp_sendmsg`, `skb_consume_udp`, ... (kernels before 6.3).
    Kprobe,
}

/// Settings of the kernel side.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Which hooks to use. Default: `auto`.
    pub probes: ProbeSet,
    /// Count UDP. Default: true. UDP has no per-socket counters, so each
    /// datagram is counted as it moves; on kernels without kprobes (the
    /// tracepoint set) that hook runs on every TCP send and receive too, at
    /// about 0.1 µs each. `false` attaches nothing per send or receive: TCP
    /// is then counted from its sockets' own counters alone.
    pub udp: bool,
    /// Watch the host's DNS lookups (every client socket, UDP and TCP):
    /// names for flows' remote addresses (`destination.domain`) and the
    /// `dns.*` metrics. Default: true.
    pub dns: bool,
    /// The DNS servers' port. Default: 53.
    pub dns_port: u16,
    /// A UDP flow that moves nothing for this long ends (its socket's
    /// release may have been lost). Default: 2m.
    #[serde(with = "crate::duration_serde")]
    pub udp_idle_timeout: Duration,
    /// How often the connection map is read. Default: 10s.
    #[serde(with = "crate::duration_serde")]
    pub poll_interval: Duration,
    /// Capacity of the connection map; connections beyond it are counted as
    /// dropped. Default: 65536.
    pub max_connections: u32,
    /// Size of the ring buffer that hands closed connections to user space,
    /// in bytes, a power of two. Default: 4 MiB.
    pub ring_buffer_bytes: u32,
    /// The cgroup-v2 directory where the UDP peer and socket-release hooks
    /// attach. Default: the cgroup-v2 mount found in /proc/self/mounts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_path: Option<PathBuf>,
    /// Keep counting through restarts (see [`Persistence`]). Default: off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence: Option<Persistence>,
}

/// Counting through restarts: the programs stay attached and their maps
/// pinned while no agent runs, and the agent checkpoints what it has
/// exported, so the next agent counts exactly what moved since.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Persistence {
    /// A directory on a bpf filesystem for the pins. Default:
    /// /sys/fs/bpf/flowtel.
    pub pin_dir: PathBuf,
    /// Where the agent keeps its checkpoint. Default: /var/lib/flowtel.
    pub state_dir: PathBuf,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence {
            pin_dir: PathBuf::from("/sys/fs/bpf/flowtel"),
            state_dir: PathBuf::from("/var/lib/flowtel"),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probes: ProbeSet::Auto,
            udp: true,
            dns: true,
            dns_port: 53,
            udp_idle_timeout: Duration::from_secs(120),
            poll_interval: Duration::from_secs(10),
            max_connections: 65536,
            ring_buffer_bytes: 4 << 20,
            cgroup_path: None,
            persistence: None,
        }
    }
}

impl Config {
    /// Checks what serde cannot: sizes the kernel will accept.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let invalid = |m: String| Err(crate::Error::InvalidConfig(m));
        if self.poll_interval < Duration::from_millis(100) {
            return invalid(format!(
                "poll_interval {:?} is too short: use at least 100ms",
                self.poll_interval
            ));
        }
        if self.udp_idle_timeout < Duration::from_secs(1) {
            return invalid(format!(
                "udp_idle_timeout {:?} is too short: use at least 1s",
                self.udp_idle_timeout
            ));
        }
        if self.dns_port == 0 {
            return invalid("dns_port must be a port from 1 to 65535".to_owned());
        }
        if self.max_connections == 0 {
            return invalid("max_connections must be at least 1".to_owned());
        }
        let ring = self.ring_buffer_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return invalid(format!(
                "ring_buffer_bytes {ring} must be a power of two of at least 4096 (a page)"
            ));
        }
        Ok(())
    }
}
