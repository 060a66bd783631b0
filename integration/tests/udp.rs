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

    let server = FlowFilter::this_process()
        .udp()
        .source_port(truth.server_port);
    let received: u64 = truth.clients.iter().map(|c| c.server_received).sum();
    let sent: u64 = truth.clients.iter().map(|c| c.server_sent).sum();
    agent.wait_for_totals(&server, |t| {
        t.bytes_received >= received && t.bytes_sent >= sent
    });

    let flows = agent.sum_by_flow(&server);
    assert_eq!(
        flows.len(),
        CLIENTS,
        "the server's flows: {:#?}",
        flows.keys().collect::<Vec<_>>()
    );
    for client in &truth.clients {
        let peer = server.clone().destination_port(client.port);
        let got = agent.sum(&peer);
        assert_eq!(
            got.bytes_received, client.server_received,
            "from client {}",
            client.port
        );
        assert_eq!(
            got.bytes_sent, client.server_sent,
            "to client {}",
            client.port
        );
        assert_eq!(
            got.packets_received, client.datagrams,
            "datagrams from client {}",
            client.port
        );
        assert_eq!(
            got.packets_sent, client.datagrams,
            "datagrams to client {}",
            client.port
        );

        // The client's own (connected) socket, seen from its end.
        let own = FlowFilter::this_process()
            .udp()
            .source_port(client.port)
            .destination_port(truth.server_port);
        let got = agent.sum(&own);
        assert_eq!(
            got.bytes_sent, client.client_sent,
            "client {} sent",
            client.port
        );
        assert_eq!(
            got.bytes_received, client.client_received,
            "client {} received",
            client.port
        );
    }
}
