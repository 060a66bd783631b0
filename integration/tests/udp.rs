//! A UDP server on an unconnected socket answering three clients with
//! `send_to`: each client is its own flow on the server's side, with its own
//! bytes, not one flow to 0.0.0.0:0.

use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
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
