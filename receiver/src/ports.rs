//! Which ports are servers' and which are clients': the kernel's ephemeral
//! port range and the UDP ports that sockets are bound to without a peer,
//! per network namespace. The processor uses these facts to collapse UDP
//! client ports (TCP connections know their direction).

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::path::Path;

use crate::{ConnectionSample, Transport};

/// The range the kernel picks client ports from when Linux leaves
/// `net.ipv4.ip_local_port_range` at its default.
pub const DEFAULT_EPHEMERAL: RangeInclusive<u16> = 32768..=60999;

/// What the host says about ports at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFacts {
    /// `net.ipv4.ip_local_port_range` (it also applies to IPv6).
    pub ephemeral: RangeInclusive<u16>,
    /// Per network namespace (inode), the local ports of UDP sockets that are
    /// bound and not connected: the ports servers receive on. Namespaces
    /// missing here could not be read (their processes had exited).
    pub udp_servers: HashMap<u32, HashSet<u16>>,
}

impl Default for PortFacts {
    fn default() -> Self {
        PortFacts {
            ephemeral: DEFAULT_EPHEMERAL,
            udp_servers: HashMap::new(),
        }
    }
}

impl PortFacts {
    /// True when `port` lies in the ephemeral range.
    pub fn is_ephemeral(&self, port: u16) -> bool {
        self.ephemeral.contains(&port)
    }

    /// Whether a UDP server receives on `port` in namespace `netns`: `None`
    /// when that namespace's sockets are unknown.
    pub fn is_udp_server_port(&self, netns: u32, port: u16) -> Option<bool> {
        self.udp_servers
            .get(&netns)
            .map(|ports| ports.contains(&port))
    }

    /// Reads the facts for the namespaces of the UDP connections among
    /// `samples`, through `/proc/PID/net/udp{,6}` of a process seen in each.
    pub fn read(samples: &[ConnectionSample]) -> PortFacts {
        let ephemeral = read_ephemeral_range(Path::new("/proc/sys/net/ipv4/ip_local_port_range"))
            .unwrap_or(DEFAULT_EPHEMERAL);
        let mut pids_by_netns: HashMap<u32, Vec<u32>> = HashMap::new();
        for sample in samples {
            if sample.transport == Transport::Udp && sample.process.pid != 0 {
                let pids = pids_by_netns.entry(sample.netns).or_default();
                if !pids.contains(&sample.process.pid) {
                    pids.push(sample.process.pid);
                }
            }
        }
        let udp_servers = pids_by_netns
            .into_iter()
            .filter_map(|(netns, pids)| {
                // Any live process of the namespace shows all its sockets.
                let ports = pids.iter().find_map(|pid| read_udp_servers(*pid))?;
                Some((netns, ports))
            })
            .collect();
        PortFacts {
            ephemeral,
            udp_servers,
        }
    }
}

fn read_ephemeral_range(path: &Path) -> Option<RangeInclusive<u16>> {
    parse_ephemeral_range(&std::fs::read_to_string(path).ok()?)
}

fn parse_ephemeral_range(text: &str) -> Option<RangeInclusive<u16>> {
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    let (low, high) = (bounds.next()?.ok()?, bounds.next()?.ok()?);
    (low <= high).then_some(low..=high)
}

/// The UDP server ports of the namespace `pid` lives in; `None` when its
/// tables cannot be read (it exited).
fn read_udp_servers(pid: u32) -> Option<HashSet<u16>> {
    let mut ports = HashSet::new();
    let mut read_any = false;
    for table in ["udp", "udp6"] {
        // A host without IPv6 has no udp6 table: that is not an error.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) {
            read_any = true;
            ports.extend(parse_udp_servers(&text));
        }
    }
    read_any.then_some(ports)
}

/// Local ports of the sockets in a `/proc/net/udp{,6}` table that have no
/// peer (remote port 0). Malformed lines are skipped.
fn parse_udp_servers(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let local = fields.next()?;
        let remote = fields.next()?;
        let port_of = |address: &str| {
            let (_, port) = address.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        };
        let (local_port, remote_port) = (port_of(local)?, port_of(remote)?);
        (remote_port == 0 && local_port != 0).then_some(local_port)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ephemeral_range() {
        assert_eq!(parse_ephemeral_range("32768\t60999\n"), Some(32768..=60999));
        assert_eq!(parse_ephemeral_range("1024 65535"), Some(1024..=65535));
        assert_eq!(parse_ephemeral_range("9 1"), None);
        assert_eq!(parse_ephemeral_range("garbage"), None);
    }

    #[test]
    fn unconnected_bound_sockets_are_servers_connected_ones_are_not() {
        let table = "\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  120: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0
  121: 0100007F:A1B2 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 2 2 0000000000000000 0
  122: 0100007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 0
  123: broken line
";
        let ports: HashSet<u16> = parse_udp_servers(table).collect();
        assert_eq!(ports, HashSet::from([53, 0x9C41]));

        let table6 = "\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  5: 00000000000000000000000000000000:14E9 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000   104        0 4 2 0000000000000000 0
";
        assert_eq!(parse_udp_servers(table6).collect::<Vec<_>>(), vec![5353]);
    }

    #[test]
    fn reads_this_process_namespace() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let ports = read_udp_servers(std::process::id()).unwrap();
        assert!(ports.contains(&port), "{port} not in {ports:?}");
        socket.connect("127.0.0.1:9").unwrap();
        let ports = read_udp_servers(std::process::id()).unwrap();
        assert!(!ports.contains(&port), "a connected socket is no server");
    }
}
