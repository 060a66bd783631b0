//! A UDP server on an unconnected socket answering three clients with
//! `send_to`: each client is its own flow on the server's side, with its own
//! bytes, not one flow to 0.0.0.0:0.

use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::udp;

const CLIENTS: usize = 3;
const DATAGRAMS: usize = 4;

#[test]
fn an_unconnected_server_shows_each_client_as_its_own_flow() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    let truth = udp::serve_clients("127.0.0.1".parse().unwrap(), CLIENTS, DATAGRAMS);
    assert_eq!(truth.clients.len(), CLIENTS);

    agent.assert_udp_exchange_counted(&truth);
}

/// A connected UDP socket that connects again, to another server, starts a
/// new flow: the bytes to each server count against that server.
#[test]
fn a_reconnected_socket_counts_each_peer_apart() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    let first = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let second = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buffer = [0u8; 2048];
    client.connect(first.local_addr().unwrap()).unwrap();
    for size in [150, 250] {
        client.send(&vec![1u8; size]).unwrap();
        first.recv(&mut buffer).unwrap();
    }
    client.connect(second.local_addr().unwrap()).unwrap();
    for size in [401, 401] {
        client.send(&vec![2u8; size]).unwrap();
        second.recv(&mut buffer).unwrap();
    }
    let to = |server: &std::net::UdpSocket| {
        FlowFilter::this_process()
            .udp()
            .outgoing()
            .destination_port(server.local_addr().unwrap().port())
    };
    agent.assert_ends_counted(&[(&to(&first), 400, 0), (&to(&second), 802, 0)]);
    let got = agent.sum(&to(&first));
    assert_eq!(got.packets_sent, 2);
}
