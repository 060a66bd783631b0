//! What a flow is: the [`FlowKey`] connections are grouped by, and the
//! attributes it has of its own.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use receiver::{ConnectionSample, Direction, PortFacts, ProcessInfo, Translation, Transport};

use super::client_end::{udp_client_end, ClientEnd};
use crate::{AttributeValue, Attributes, RemoteEnd};

/// The names of the attributes a flow has of its own, each written once.
pub mod names {
    pub const NETWORK_TRANSPORT: &str = "network.transport";
    pub const NETWORK_TYPE: &str = "network.type";
    pub const NETWORK_NAMESPACE: &str = "network.namespace";
    pub const FLOW_DIRECTION: &str = "flow.direction";
    pub const SOURCE_ADDRESS: &str = "source.address";
    pub const SOURCE_PORT: &str = "source.port";
    pub const SOURCE_PROCESS_PID: &str = "source.process.pid";
    pub const SOURCE_PROCESS_NAME: &str = "source.process.name";
    pub const SOURCE_CONTAINER_ID: &str = "source.container.id";
    pub const DESTINATION_ADDRESS: &str = "destination.address";
    pub const DESTINATION_PORT: &str = "destination.port";
    pub const DESTINATION_DOMAIN: &str = "destination.domain";
    pub const SOURCE_TRANSLATED_ADDRESS: &str = "source.translated.address";
    pub const SOURCE_TRANSLATED_PORT: &str = "source.translated.port";
    pub const DESTINATION_TRANSLATED_ADDRESS: &str = "destination.translated.address";
    pub const DESTINATION_TRANSLATED_PORT: &str = "destination.translated.port";
}

/// The attributes a flow has of its own, before mappings add names.
pub const BUILT_IN_ATTRIBUTES: [&str; 16] = [
    names::NETWORK_TRANSPORT,
    names::NETWORK_TYPE,
    names::NETWORK_NAMESPACE,
    names::FLOW_DIRECTION,
    names::SOURCE_ADDRESS,
    names::SOURCE_PORT,
    names::SOURCE_PROCESS_PID,
    names::SOURCE_PROCESS_NAME,
    names::SOURCE_CONTAINER_ID,
    names::DESTINATION_ADDRESS,
    names::DESTINATION_PORT,
    names::DESTINATION_DOMAIN,
    names::SOURCE_TRANSLATED_ADDRESS,
    names::SOURCE_TRANSLATED_PORT,
    names::DESTINATION_TRANSLATED_ADDRESS,
    names::DESTINATION_TRANSLATED_PORT,
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
        let translation = sample.translation();
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
                source: collapsed(translation.source, source_port),
                destination: collapsed(translation.destination, destination_port),
            },
            destination_domain: None,
        }
    }

    /// The flow's own attributes, before any mapping: the
    /// [`BUILT_IN_ATTRIBUTES`] it has a value for.
    pub fn attributes(&self) -> Attributes {
        let mut a = Attributes::new();
        a.set(names::NETWORK_TRANSPORT, self.transport.as_str());
        a.set(names::NETWORK_TYPE, self.network_type.as_str());
        a.set(
            names::NETWORK_NAMESPACE,
            AttributeValue::Int(self.netns.into()),
        );
        a.set(names::FLOW_DIRECTION, self.direction.as_str());
        a.set(names::SOURCE_ADDRESS, self.source_address.to_string());
        if let Some(port) = self.source_port {
            a.set(names::SOURCE_PORT, AttributeValue::Int(port.into()));
        }
        if self.source_pid() != 0 {
            a.set(
                names::SOURCE_PROCESS_PID,
                AttributeValue::Int(self.source_pid().into()),
            );
        }
        if !self.source_process_name().is_empty() {
            a.set(names::SOURCE_PROCESS_NAME, self.source_process_name());
        }
        if let Some(id) = self.source_container_id() {
            a.set(names::SOURCE_CONTAINER_ID, id);
        }
        a.set(
            names::DESTINATION_ADDRESS,
            self.destination_address.to_string(),
        );
        if let Some(port) = self.destination_port {
            a.set(names::DESTINATION_PORT, AttributeValue::Int(port.into()));
        }
        if let Some(domain) = &self.destination_domain {
            a.set(names::DESTINATION_DOMAIN, Arc::clone(domain));
        }
        for (translated, address_name, port_name) in [
            (
                self.translation.source,
                names::SOURCE_TRANSLATED_ADDRESS,
                names::SOURCE_TRANSLATED_PORT,
            ),
            (
                self.translation.destination,
                names::DESTINATION_TRANSLATED_ADDRESS,
                names::DESTINATION_TRANSLATED_PORT,
            ),
        ] {
            let Some(translated) = translated else {
                continue;
            };
            a.set(address_name, translated.ip().to_canonical().to_string());
            if translated.port() != 0 {
                a.set(port_name, AttributeValue::Int(translated.port().into()));
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
fn collapsed(translated: Option<SocketAddr>, port: Option<u16>) -> Option<SocketAddr> {
    translated.map(|mut end| {
        if port.is_none() {
            end.set_port(0);
        }
        end
    })
}

#[cfg(test)]
mod tests {
    use receiver::Counters;

    use super::*;
    use crate::test_samples::open;

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
        sample.translation = Some(Box::new(Translation {
            destination: Some("10.253.7.2:8080".parse().unwrap()),
            source: None,
        }));
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
        sample.translation = Some(Box::new(Translation {
            destination: None,
            source: Some("10.2.0.1:50000".parse().unwrap()),
        }));
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
}
