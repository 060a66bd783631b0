//! What a flow is ([`FlowKey`]) and what is counted for it ([`FlowStats`]).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use receiver::{
    CloseError, ConnectionSample, ConnectionState, Counters, Direction, PortFacts, ProcessInfo,
    Rtt, Translation, Transport,
};

use crate::{AttributeValue, Attributes, RemoteEnd};

/// The attributes a flow has of its own, before mappings add names.
pub const BUILT_IN_ATTRIBUTES: [&str; 16] = [
    "network.transport",
    "network.type",
    "network.namespace",
    "flow.direction",
    "source.address",
    "source.port",
    "source.process.pid",
    "source.process.name",
    "source.container.id",
    "destination.address",
    "destination.port",
    "destination.domain",
    "source.translated.address",
    "source.translated.port",
    "destination.translated.address",
    "destination.translated.port",
];

/// IP version of a flow, the OpenTelemetry `network.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetworkType {
    /// IPv4, including IPv4-mapped IPv6 addresses.
    Ipv4,
    /// IPv6.
    Ipv6,
}

impl NetworkType {
    /// The family of `address`.
    pub fn of(address: IpAddr) -> NetworkType {
        match address.to_canonical() {
            IpAddr::V4(_) => NetworkType::Ipv4,
            IpAddr::V6(_) => NetworkType::Ipv6,
        }
    }

    /// The OpenTelemetry `network.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkType::Ipv4 => "ipv4",
            NetworkType::Ipv6 => "ipv6",
        }
    }
}

/// The attributes connections are grouped by. The source is the local end
/// (where the agent runs), the destination the remote end.
///
/// Client ports are collapsed (set to `None`) so that the number of flows
/// follows services, not connections: for TCP the port of the end that
/// connected; for UDP see [`udp_client_end`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// `network.transport`.
    pub transport: Transport,
    /// `network.type`, from the source address.
    pub network_type: NetworkType,
    /// Inode number of the network namespace.
    pub netns: u32,
    /// Who opened the connections.
    pub direction: Direction,
    /// `source.address`: the local address.
    pub source_address: IpAddr,
    /// `source.port`: the local port, `None` when collapsed.
    pub source_port: Option<u16>,
    /// The process owning the source end: `source.process.pid`,
    /// `source.process.name`, `source.container.id`. Shared with the
    /// receiver's sample, so building a key allocates nothing.
    pub source_process: Arc<ProcessInfo>,
    /// `destination.address`: the remote address.
    pub destination_address: IpAddr,
    /// `destination.port`: the remote port, `None` when collapsed.
    pub destination_port: Option<u16>,
    /// What NAT rewrote (`source.translated.*`, `destination.translated.*`),
    /// with the port of an end whose port is collapsed set to 0.
    pub translation: Translation,
    /// `destination.domain`: the name a lookup in the flow's namespace gave
    /// for the remote address, if any.
    pub destination_domain: Option<Arc<str>>,
}

/// Which end of a connection is the client, whose port is collapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEnd {
    /// The local end (source).
    Local,
    /// The remote end (destination).
    Remote,
    /// Neither can be told: both ports stay.
    Unknown,
}

/// The end of a UDP conversation whose port is collapsed: the client's,
/// when its port is ephemeral. The client is the end that sent first
/// (`direction`); a local port that a bound, unconnected socket receives on
/// is a server's whatever its number and whoever sent first, and is kept.
/// Without a direction, a local ephemeral port that is no server's is the
/// client's, else the remote end's ephemeral port.
pub fn udp_client_end(
    ports: &PortFacts,
    netns: u32,
    direction: Direction,
    local: u16,
    remote: u16,
) -> ClientEnd {
    let local_is_server = ports.is_udp_server_port(netns, local).unwrap_or(false);
    let local_is_client_port = !local_is_server && ports.is_ephemeral(local);
    let remote_is_client_port = ports.is_ephemeral(remote);
    match direction {
        Direction::Outgoing if local_is_client_port => ClientEnd::Local,
        Direction::Incoming if remote_is_client_port => ClientEnd::Remote,
        Direction::Outgoing | Direction::Incoming => ClientEnd::Unknown,
        Direction::Unknown if local_is_client_port => ClientEnd::Local,
        Direction::Unknown if remote_is_client_port => ClientEnd::Remote,
        Direction::Unknown => ClientEnd::Unknown,
    }
}

impl FlowKey {
    /// The flow a connection sample belongs to; `ports` tells UDP clients
    /// from servers.
    pub fn of(sample: &ConnectionSample, ports: &PortFacts) -> FlowKey {
        let source_address = sample.local.ip().to_canonical();
        let (local, remote) = (sample.local.port(), sample.remote.port());
        let client = match (sample.transport, sample.direction) {
            (Transport::Tcp, Direction::Outgoing) => ClientEnd::Local,
            (Transport::Tcp, Direction::Incoming) => ClientEnd::Remote,
            (Transport::Tcp, Direction::Unknown) => ClientEnd::Unknown,
            (Transport::Udp, direction) => {
                udp_client_end(ports, sample.netns, direction, local, remote)
            }
        };
        let (mut source_port, mut destination_port) = (Some(local), Some(remote));
        match client {
            ClientEnd::Local => source_port = None,
            ClientEnd::Remote => destination_port = None,
            ClientEnd::Unknown => {}
        }
        FlowKey {
            transport: sample.transport,
            network_type: NetworkType::of(source_address),
            netns: sample.netns,
            direction: sample.direction,
            source_address,
            source_port,
            source_process: Arc::clone(&sample.process),
            destination_address: sample.remote.ip().to_canonical(),
            destination_port,
            translation: Translation {
                source: collapsed(sample.translation.source, source_port),
                destination: collapsed(sample.translation.destination, destination_port),
            },
            destination_domain: None,
        }
    }

    /// The flow's own attributes, before any mapping: the
    /// [`BUILT_IN_ATTRIBUTES`] it has a value for.
    pub fn attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        a.set("network.transport", self.transport.as_str());
        a.set("network.type", self.network_type.as_str());
        a.set("network.namespace", AttributeValue::Int(self.netns.into()));
        a.set("flow.direction", self.direction.as_str());
        a.set("source.address", self.source_address.to_string());
        if let Some(port) = self.source_port {
            a.set("source.port", AttributeValue::Int(port.into()));
        }
        if self.source_pid() != 0 {
            a.set(
                "source.process.pid",
                AttributeValue::Int(self.source_pid().into()),
            );
        }
        if !self.source_process_name().is_empty() {
            a.set("source.process.name", self.source_process_name());
        }
        if let Some(id) = self.source_container_id() {
            a.set("source.container.id", id);
        }
        a.set("destination.address", self.destination_address.to_string());
        if let Some(port) = self.destination_port {
            a.set("destination.port", AttributeValue::Int(port.into()));
        }
        if let Some(domain) = &self.destination_domain {
            a.set("destination.domain", Arc::clone(domain));
        }
        for (end, translated) in [
            ("source", self.translation.source),
            ("destination", self.translation.destination),
        ] {
            let Some(translated) = translated else {
                continue;
            };
            let address = translated.ip().to_canonical().to_string();
            a.set(format!("{end}.translated.address"), address);
            if translated.port() != 0 {
                let port = AttributeValue::Int(translated.port().into());
                a.set(format!("{end}.translated.port"), port);
            }
        }
        a
    }

    /// The remote end's address as it really is: the translated one where
    /// NAT rewrote it (what the destination mappings name).
    pub fn real_destination_address(&self) -> IpAddr {
        self.translation
            .destination
            .map_or(self.destination_address, |real| real.ip().to_canonical())
    }

    /// The remote end as dialled and as it really is.
    pub fn remote_end(&self) -> RemoteEnd {
        RemoteEnd {
            dialled: self.destination_address,
            real: self.real_destination_address(),
        }
    }

    /// The remote end's port as it really is, `None` when collapsed.
    pub fn real_destination_port(&self) -> Option<u16> {
        let real = self.translation.destination.map(|real| real.port());
        real.filter(|port| *port != 0).or(self.destination_port)
    }

    /// `source.process.pid`; 0 when unknown.
    pub fn source_pid(&self) -> u32 {
        self.source_process.pid
    }

    /// `source.process.name`.
    pub fn source_process_name(&self) -> &str {
        &self.source_process.name
    }

    /// `source.container.id`, where there is one.
    pub fn source_container_id(&self) -> Option<&str> {
        self.source_process.container_id.as_deref()
    }
}

/// A translated end whose own port is collapsed loses its port too (0):
/// the translated port of a client is as ephemeral as its own.
fn collapsed(
    translated: Option<std::net::SocketAddr>,
    port: Option<u16>,
) -> Option<std::net::SocketAddr> {
    translated.map(|mut end| {
        if port.is_none() {
            end.set_port(0);
        }
        end
    })
}

/// Failed connections by reason (`error.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionFailures {
    /// Refused: the peer answered the SYN with a RST.
    pub refused: u64,
    /// Reset, during the handshake or once established.
    pub reset: u64,
    /// The handshake timed out.
    pub timeout: u64,
    /// Any other socket error.
    pub other: u64,
}

impl ConnectionFailures {
    /// Counts one failure.
    pub fn record(&mut self, error: CloseError) {
        match error {
            CloseError::Refused => self.refused += 1,
            CloseError::Reset => self.reset += 1,
            CloseError::Timeout => self.timeout += 1,
            CloseError::Other(_) => self.other += 1,
        }
    }

    /// All failures.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.other
    }

    /// The reasons with a nonzero count, as (`error.type`, count), in a fixed
    /// order.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            (CloseError::Refused.as_str(), self.refused),
            (CloseError::Reset.as_str(), self.reset),
            (CloseError::Timeout.as_str(), self.timeout),
            (CloseError::Other(0).as_str(), self.other),
        ]
        .into_iter()
        .filter(|&(_, n)| n > 0)
    }

    fn merge(&mut self, other: &ConnectionFailures) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.timeout += other.timeout;
        self.other += other.other;
    }
}

/// RTT estimates of the samples of one period, kept as sums so that periods
/// add up; read as means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RttSummary {
    samples: u64,
    smoothed_ns: u128,
    variance_ns: u128,
}

impl RttSummary {
    /// Adds one sample's estimate.
    pub fn record(&mut self, rtt: Rtt) {
        self.samples += 1;
        self.smoothed_ns += rtt.smoothed.as_nanos();
        self.variance_ns += rtt.variance.as_nanos();
    }

    /// How many samples carried an estimate.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// Mean smoothed RTT; `None` when no sample carried one.
    pub fn mean(&self) -> Option<Duration> {
        mean(self.smoothed_ns, self.samples)
    }

    /// Mean RTT variance (jitter); `None` when no sample carried one.
    pub fn mean_variance(&self) -> Option<Duration> {
        mean(self.variance_ns, self.samples)
    }

    fn merge(&mut self, other: &RttSummary) {
        self.samples += other.samples;
        self.smoothed_ns += other.smoothed_ns;
        self.variance_ns += other.variance_ns;
    }
}

fn mean(sum_ns: u128, n: u64) -> Option<Duration> {
    if n == 0 {
        return None;
    }
    let ns = sum_ns / u128::from(n);
    Some(Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX)))
}

/// What the connections of one flow did in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    /// Bytes from source to destination.
    pub bytes_sent: u64,
    /// Bytes from destination to source.
    pub bytes_received: u64,
    /// TCP segments / UDP datagrams sent.
    pub packets_sent: u64,
    /// TCP segments / UDP datagrams received.
    pub packets_received: u64,
    /// TCP segments the source retransmitted.
    pub retransmits: u64,
    /// Connections the receiver saw open, counted at their first sample.
    pub connections_opened: u64,
    /// Connections that closed, counted at their closing sample.
    pub connections_closed: u64,
    /// Connections that failed: attempts that never got established and
    /// ended in error, and established connections closed by a reset.
    pub connections_failed: ConnectionFailures,
    /// RTT of the samples that carried one and had activity in the period.
    pub rtt: RttSummary,
}

impl FlowStats {
    /// The contribution of one sample whose counters grew by `delta`;
    /// `first_sight` when it is the connection's first sample.
    pub fn of_sample(sample: &ConnectionSample, delta: &Counters, first_sight: bool) -> FlowStats {
        let mut stats = FlowStats {
            bytes_sent: delta.bytes_sent,
            bytes_received: delta.bytes_received,
            packets_sent: delta.packets_sent,
            packets_received: delta.packets_received,
            retransmits: delta.retransmits,
            ..FlowStats::default()
        };
        if first_sight && sample.seen_opening {
            stats.connections_opened = 1;
        }
        if let ConnectionState::Closed { error } = sample.state {
            stats.connections_closed = 1;
            if let Some(failure) = sample.failed_attempt() {
                stats.connections_failed.record(failure);
            } else if error == Some(CloseError::Reset) {
                stats.connections_failed.record(CloseError::Reset);
            }
        }
        // An idle connection's RTT says nothing about this period and would
        // keep every idle flow in the report: only active samples count.
        if stats.has_activity() {
            if let Some(rtt) = sample.rtt {
                stats.rtt.record(rtt);
            }
        }
        stats
    }

    /// Adds another period's or connection's stats to these.
    pub fn merge(&mut self, other: &FlowStats) {
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.packets_sent += other.packets_sent;
        self.packets_received += other.packets_received;
        self.retransmits += other.retransmits;
        self.connections_opened += other.connections_opened;
        self.connections_closed += other.connections_closed;
        self.connections_failed.merge(&other.connections_failed);
        self.rtt.merge(&other.rtt);
    }

    /// Bytes both ways.
    pub fn bytes(&self) -> u64 {
        self.bytes_sent + self.bytes_received
    }

    /// True when anything was counted besides RTT.
    pub fn has_activity(&self) -> bool {
        self.bytes_sent
            | self.bytes_received
            | self.packets_sent
            | self.packets_received
            | self.retransmits
            | self.connections_opened
            | self.connections_closed
            | self.connections_failed.total()
            != 0
    }

    /// Bytes both ways over `period`, in bits per second; 0 for an empty
    /// period.
    pub fn bandwidth_bps(&self, period: Duration) -> f64 {
        let seconds = period.as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        self.bytes() as f64 * 8.0 / seconds
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::test_samples::{closed, counters, open};

    fn with_ends(transport: Transport, direction: Direction, local: &str, remote: &str) -> FlowKey {
        let mut sample = open(1, Counters::default());
        sample.transport = transport;
        sample.direction = direction;
        sample.local = local.parse().unwrap();
        sample.remote = remote.parse().unwrap();
        FlowKey::of(&sample, &PortFacts::default())
    }

    #[test]
    fn a_dnat_client_flow_names_the_real_server_and_keeps_the_virtual_one() {
        let mut sample = open(1, Counters::default());
        sample.remote = "10.253.9.9:80".parse().unwrap();
        sample.translation.destination = Some("10.253.7.2:8080".parse().unwrap());
        let a = FlowKey::of(&sample, &PortFacts::default()).attributes();
        let text = |name| a.get(name).map(AttributeValue::to_string);
        assert_eq!(text("destination.address").as_deref(), Some("10.253.9.9"));
        assert_eq!(
            text("destination.translated.address").as_deref(),
            Some("10.253.7.2")
        );
        assert_eq!(text("destination.translated.port").as_deref(), Some("8080"));
        assert_eq!(text("source.translated.address"), None);
    }

    #[test]
    fn a_masqueraded_client_loses_its_translated_port_with_its_own() {
        let mut sample = open(1, Counters::default());
        sample.translation.source = Some("10.2.0.1:50000".parse().unwrap());
        let a = FlowKey::of(&sample, &PortFacts::default()).attributes();
        assert_eq!(
            a.get("source.translated.address")
                .map(AttributeValue::to_string),
            Some("10.2.0.1".to_owned())
        );
        assert_eq!(
            a.get("source.translated.port"),
            None,
            "ephemeral, collapsed"
        );
    }

    #[test]
    fn tcp_outgoing_collapses_the_source_port() {
        let key = with_ends(
            Transport::Tcp,
            Direction::Outgoing,
            "10.0.0.1:40000",
            "10.0.0.2:443",
        );
        assert_eq!(key.source_port, None);
        assert_eq!(key.destination_port, Some(443));
        assert_eq!(key.source_address, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(
            key.destination_address,
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn tcp_incoming_collapses_the_destination_port() {
        let key = with_ends(
            Transport::Tcp,
            Direction::Incoming,
            "10.0.0.1:80",
            "10.0.0.2:51000",
        );
        assert_eq!(key.source_port, Some(80));
        assert_eq!(key.destination_port, None);
    }

    #[test]
    fn ports_outside_the_ephemeral_range_and_unknown_tcp_directions_stay() {
        for (transport, direction) in [
            (Transport::Udp, Direction::Unknown),
            (Transport::Udp, Direction::Outgoing),
            (Transport::Udp, Direction::Incoming),
            (Transport::Tcp, Direction::Unknown),
        ] {
            let key = with_ends(transport, direction, "10.0.0.1:5353", "10.0.0.2:53");
            assert_eq!(key.source_port, Some(5353), "{transport:?} {direction:?}");
            assert_eq!(
                key.destination_port,
                Some(53),
                "{transport:?} {direction:?}"
            );
        }
    }

    fn facts(servers: &[u16]) -> PortFacts {
        PortFacts {
            ephemeral: 32768..=60999,
            udp_servers: [(1, servers.iter().copied().collect())].into(),
        }
    }

    #[test]
    fn a_udp_client_that_sent_first_loses_its_ephemeral_port() {
        let ports = facts(&[]);
        assert_eq!(
            udp_client_end(&ports, 1, Direction::Outgoing, 40000, 53),
            ClientEnd::Local
        );
        // A fixed client port (NTP's 123 to 123) stays.
        assert_eq!(
            udp_client_end(&ports, 1, Direction::Outgoing, 123, 123),
            ClientEnd::Unknown
        );
    }

    #[test]
    fn a_udp_server_keeps_its_port_even_inside_the_ephemeral_range() {
        // A server bound to 45000 that answers clients on ephemeral ports.
        let ports = facts(&[45000]);
        assert_eq!(
            udp_client_end(&ports, 1, Direction::Incoming, 45000, 51000),
            ClientEnd::Remote
        );
        // It sent first (a push to a peer): still a server port.
        assert_eq!(
            udp_client_end(&ports, 1, Direction::Outgoing, 45000, 51000),
            ClientEnd::Unknown
        );
        // Without a direction, the socket table decides.
        assert_eq!(
            udp_client_end(&ports, 1, Direction::Unknown, 45000, 51000),
            ClientEnd::Remote
        );
        assert_eq!(
            udp_client_end(&facts(&[]), 1, Direction::Unknown, 45000, 51000),
            ClientEnd::Local
        );
    }

    #[test]
    fn the_client_end_of_a_udp_key_has_no_port() {
        let mut sample = open(1, counters(0, 0));
        sample.transport = Transport::Udp;
        sample.netns = 1;
        sample.direction = Direction::Incoming;
        sample.local = "127.0.0.1:45000".parse().unwrap();
        sample.remote = "127.0.0.2:51000".parse().unwrap();
        let key = FlowKey::of(&sample, &facts(&[45000]));
        assert_eq!((key.source_port, key.destination_port), (Some(45000), None));
    }

    #[test]
    fn network_type_follows_the_address_family() {
        let v4 = with_ends(
            Transport::Tcp,
            Direction::Unknown,
            "127.0.0.1:1",
            "127.0.0.1:2",
        );
        assert_eq!(v4.network_type, NetworkType::Ipv4);
        let v6 = with_ends(Transport::Tcp, Direction::Unknown, "[::1]:1", "[::1]:2");
        assert_eq!(v6.network_type, NetworkType::Ipv6);
        let mapped = with_ends(
            Transport::Tcp,
            Direction::Unknown,
            "[::ffff:10.0.0.1]:1",
            "[::ffff:10.0.0.2]:2",
        );
        assert_eq!(mapped.network_type, NetworkType::Ipv4);
        assert_eq!(mapped.source_address, "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn connections_of_one_service_share_a_key() {
        let mut a = open(1, Counters::default());
        let mut b = open(2, Counters::default());
        a.local = "10.0.0.1:40000".parse::<SocketAddr>().unwrap();
        b.local = "10.0.0.1:40001".parse::<SocketAddr>().unwrap();
        assert_eq!(
            FlowKey::of(&a, &PortFacts::default()),
            FlowKey::of(&b, &PortFacts::default())
        );
        b.netns += 1;
        assert_ne!(
            FlowKey::of(&a, &PortFacts::default()),
            FlowKey::of(&b, &PortFacts::default())
        );
    }

    #[test]
    fn opened_counts_once_at_first_sight_when_seen_opening() {
        let sample = open(1, counters(1, 1));
        assert_eq!(
            FlowStats::of_sample(&sample, &sample.counters, true).connections_opened,
            1
        );
        assert_eq!(
            FlowStats::of_sample(&sample, &sample.counters, false).connections_opened,
            0
        );
        let mut preexisting = open(1, counters(1, 1));
        preexisting.seen_opening = false;
        let stats = FlowStats::of_sample(&preexisting, &preexisting.counters, true);
        assert_eq!(stats.connections_opened, 0);
    }

    #[test]
    fn closed_counts_at_the_closing_sample() {
        let sample = closed(1, counters(0, 0), None);
        let stats = FlowStats::of_sample(&sample, &Counters::default(), false);
        assert_eq!(stats.connections_closed, 1);
        assert_eq!(stats.connections_failed.total(), 0);
        assert!(stats.has_activity());
    }

    #[test]
    fn failed_attempts_count_by_reason() {
        for (error, expect) in [
            (
                CloseError::Refused,
                ConnectionFailures {
                    refused: 1,
                    ..Default::default()
                },
            ),
            (
                CloseError::Timeout,
                ConnectionFailures {
                    timeout: 1,
                    ..Default::default()
                },
            ),
            (
                CloseError::Reset,
                ConnectionFailures {
                    reset: 1,
                    ..Default::default()
                },
            ),
            (
                CloseError::Other(113),
                ConnectionFailures {
                    other: 1,
                    ..Default::default()
                },
            ),
        ] {
            let mut sample = closed(1, Counters::default(), Some(error));
            sample.established = false;
            let stats = FlowStats::of_sample(&sample, &sample.counters, true);
            assert_eq!(stats.connections_failed, expect, "{error:?}");
            assert_eq!(stats.connections_closed, 1);
        }
    }

    #[test]
    fn established_connection_reset_counts_as_failed_reset() {
        let sample = closed(1, counters(10, 10), Some(CloseError::Reset));
        assert!(sample.established);
        let stats = FlowStats::of_sample(&sample, &Counters::default(), false);
        assert_eq!(stats.connections_failed.reset, 1);
        assert_eq!(stats.connections_failed.total(), 1);
    }

    #[test]
    fn established_connection_closed_by_other_errors_is_not_failed() {
        let sample = closed(1, counters(10, 10), Some(CloseError::Timeout));
        let stats = FlowStats::of_sample(&sample, &Counters::default(), false);
        assert_eq!(stats.connections_failed.total(), 0);
        assert_eq!(stats.connections_closed, 1);
    }

    #[test]
    fn nonzero_failures_list_only_counted_reasons() {
        let failures = ConnectionFailures {
            refused: 2,
            timeout: 1,
            ..Default::default()
        };
        let listed: Vec<_> = failures.nonzero().collect();
        assert_eq!(listed, [("refused", 2), ("timeout", 1)]);
        assert_eq!(ConnectionFailures::default().nonzero().count(), 0);
    }

    #[test]
    fn rtt_is_the_mean_of_active_samples_carrying_one() {
        let rtt = |us| Rtt {
            smoothed: Duration::from_micros(us),
            variance: Duration::from_micros(us / 10),
        };
        let mut a = open(1, counters(10, 0));
        a.rtt = Some(rtt(100));
        let mut b = open(2, counters(10, 0));
        b.rtt = Some(rtt(300));
        let c = open(3, counters(10, 0)); // no estimate yet
        let mut idle = open(4, Counters::default());
        idle.rtt = Some(rtt(9000));

        let mut stats = FlowStats::default();
        for s in [&a, &b, &c, &idle] {
            stats.merge(&FlowStats::of_sample(s, &s.counters, false));
        }
        assert_eq!(stats.rtt.samples(), 2);
        assert_eq!(stats.rtt.mean(), Some(Duration::from_micros(200)));
        assert_eq!(stats.rtt.mean_variance(), Some(Duration::from_micros(20)));
        assert_eq!(FlowStats::default().rtt.mean(), None);
    }

    #[test]
    fn bandwidth_is_bits_over_the_period() {
        let stats = FlowStats {
            bytes_sent: 1000,
            bytes_received: 250,
            ..Default::default()
        };
        assert_eq!(stats.bandwidth_bps(Duration::from_secs(10)), 1000.0);
        assert_eq!(stats.bandwidth_bps(Duration::ZERO), 0.0);
    }
}
