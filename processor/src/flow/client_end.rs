//! Which end of a connection is the client, whose port is collapsed so
//! that flows follow services, not connections.

use receiver::{Direction, PortFacts};

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

#[cfg(test)]
mod tests {
    use receiver::Transport;

    use super::*;
    use crate::test_samples::{counters, open};
    use crate::FlowKey;

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
}
