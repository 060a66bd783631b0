//! One conntrack entry as the kernel reports it, reduced to what NAT needs:
//! its protocol and both tuples, and whether either was rewritten.

use std::net::{IpAddr, SocketAddr};

use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};

use crate::sample::{Translation, Transport};

/// One direction of a tracked connection: source and destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ends {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

impl Ends {
    fn inverted(self) -> Ends {
        Ends {
            source: self.destination,
            destination: self.source,
        }
    }
}

/// A TCP or UDP conntrack entry: the original direction (as the first
/// packet left its sender) and the reply direction (as the answer leaves
/// the peer that really took it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    pub transport: Transport,
    pub original: Ends,
    pub reply: Ends,
}

/// What a conntrack message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A new entry (an event or a line of a dump).
    Seen(Tracked),
    /// An entry the kernel destroyed.
    Gone(Tracked),
}

impl Tracked {
    /// True when NAT rewrote an address or port: without NAT the reply is
    /// the original turned around.
    pub fn is_translated(&self) -> bool {
        self.reply != self.original.inverted()
    }

    /// The two ways a local socket can see this entry, as (local, remote)
    /// and what was rewritten from there:
    /// - the original sender: the peer that really answered is the reply's
    ///   source; its own address out there is the reply's destination;
    /// - the peer that answered: the real sender is the original's source;
    ///   its own address as the sender saw it is the original destination.
    pub fn views(&self) -> [(Ends, Translation); 2] {
        let as_sender = Translation {
            destination: changed(self.original.destination, self.reply.source),
            source: changed(self.original.source, self.reply.destination),
        };
        let as_answerer = Translation {
            destination: changed(self.reply.destination, self.original.source),
            source: changed(self.reply.source, self.original.destination),
        };
        [(self.original, as_sender), (self.reply, as_answerer)]
    }
}

fn changed(seen: SocketAddr, real: SocketAddr) -> Option<SocketAddr> {
    (seen != real).then_some(real)
}

/// The entry a conntrack message carries, when it is a TCP or UDP one with
/// both tuples.
pub fn change_of(message: &ConntrackMessage) -> Option<Change> {
    let (attributes, gone) = match message {
        ConntrackMessage::New(attributes) => (attributes, false),
        ConntrackMessage::Delete(attributes) => (attributes, true),
        _ => return None,
    };
    let mut original = None;
    let mut reply = None;
    for attribute in attributes {
        match attribute {
            ConntrackAttribute::CtaTupleOrig(tuple) => original = ends_of(tuple),
            ConntrackAttribute::CtaTupleReply(tuple) => reply = ends_of(tuple),
            _ => {}
        }
    }
    let ((transport, original), (reply_transport, reply)) = (original?, reply?);
    if transport != reply_transport {
        return None;
    }
    let tracked = Tracked {
        transport,
        original,
        reply,
    };
    Some(if gone {
        Change::Gone(tracked)
    } else {
        Change::Seen(tracked)
    })
}

fn ends_of(tuple: &[Tuple]) -> Option<(Transport, Ends)> {
    let (mut source, mut destination): (Option<IpAddr>, Option<IpAddr>) = (None, None);
    let (mut transport, mut source_port, mut destination_port) = (None, None, None);
    for part in tuple {
        match part {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => source = Some(*a),
                        IPTuple::DestinationAddress(a) => destination = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(protos) => {
                for proto in protos {
                    match proto {
                        ProtoTuple::Protocol(Protocol::Tcp) => transport = Some(Transport::Tcp),
                        ProtoTuple::Protocol(Protocol::Udp) => transport = Some(Transport::Udp),
                        ProtoTuple::SourcePort(p) => source_port = Some(*p),
                        ProtoTuple::DestinationPort(p) => destination_port = Some(*p),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some((
        transport?,
        Ends {
            source: SocketAddr::new(source?, source_port?),
            destination: SocketAddr::new(destination?, destination_port?),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(source: &str, destination: &str) -> Vec<Tuple> {
        let (s, d): (SocketAddr, SocketAddr) =
            (source.parse().unwrap(), destination.parse().unwrap());
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(s.ip()),
                IPTuple::DestinationAddress(d.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::SourcePort(s.port()),
                ProtoTuple::DestinationPort(d.port()),
            ]),
        ]
    }

    fn entry(original: (&str, &str), reply: (&str, &str)) -> Tracked {
        let message = ConntrackMessage::New(vec![
            ConntrackAttribute::CtaTupleOrig(tuple(original.0, original.1)),
            ConntrackAttribute::CtaTupleReply(tuple(reply.0, reply.1)),
        ]);
        match change_of(&message) {
            Some(Change::Seen(tracked)) => tracked,
            other => panic!("{other:?}"),
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_entry_without_nat_is_not_translated() {
        let plain = entry(
            ("10.0.0.1:40000", "10.0.0.2:80"),
            ("10.0.0.2:80", "10.0.0.1:40000"),
        );
        assert!(!plain.is_translated());
    }

    #[test]
    fn dnat_gives_the_sender_the_real_destination_and_the_server_the_virtual_one() {
        let dnat = entry(
            ("10.253.7.1:40000", "10.253.9.9:80"),
            ("10.253.7.2:8080", "10.253.7.1:40000"),
        );
        assert!(dnat.is_translated());
        let [(sender, to_sender), (answerer, to_answerer)] = dnat.views();
        assert_eq!(sender.destination, "10.253.9.9:80".parse().unwrap());
        assert_eq!(to_sender.destination, addr("10.253.7.2:8080"));
        assert_eq!(to_sender.source, None);
        assert_eq!(answerer.source, "10.253.7.2:8080".parse().unwrap());
        assert_eq!(to_answerer.source, addr("10.253.9.9:80"));
        assert_eq!(to_answerer.destination, None);
    }

    #[test]
    fn masquerade_gives_the_server_the_real_client() {
        let snat = entry(
            ("10.1.0.2:40000", "10.2.0.2:8080"),
            ("10.2.0.2:8080", "10.2.0.1:50000"),
        );
        let [(_, to_sender), (answerer, to_answerer)] = snat.views();
        assert_eq!(to_sender.source, addr("10.2.0.1:50000"));
        assert_eq!(answerer.destination, "10.2.0.1:50000".parse().unwrap());
        assert_eq!(to_answerer.destination, addr("10.1.0.2:40000"));
    }

    #[test]
    fn a_destroy_message_is_gone() {
        let message = ConntrackMessage::Delete(vec![
            ConntrackAttribute::CtaTupleOrig(tuple("10.0.0.1:1", "10.0.0.2:2")),
            ConntrackAttribute::CtaTupleReply(tuple("10.0.0.3:3", "10.0.0.1:1")),
        ]);
        assert!(matches!(change_of(&message), Some(Change::Gone(_))));
    }
}
