//! 500 short TCP connections (connect, 1 KiB each way, close) inside one
//! poll: connections that open and close between two polls are all counted,
//! with every byte.

use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::tcp;

const CONNECTIONS: u64 = 500;
const SIZE: usize = 1024;

#[test]
fn every_short_connection_is_counted_with_its_bytes() {
    privilege::require_root();
    let poll = Duration::from_secs(5);
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), poll);

    let truth = tcp::short_connections("127.0.0.1".parse().unwrap(), CONNECTIONS, SIZE);
    let bytes = CONNECTIONS * SIZE as u64;
    assert_eq!((truth.client_sent, truth.client_received), (bytes, bytes));
    assert_eq!((truth.server_sent, truth.server_received), (bytes, bytes));
    // Shorter than a poll, so every connection lives and dies between two
    // polls, or at worst straddles one.
    assert!(
        truth.elapsed < poll,
        "the connections took {:?}, longer than a poll ({poll:?})",
        truth.elapsed
    );

    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(truth.server_port);
    let got = agent.wait_for_totals(&client, |t| {
        t.connections_closed >= CONNECTIONS && t.bytes_received >= bytes
    });
    assert_eq!(got.connections_opened, CONNECTIONS, "connections opened");
    assert_eq!(got.connections_closed, CONNECTIONS, "connections closed");
    assert!(got.connections_failed.values().all(|&n| n == 0), "{got:?}");
    assert_eq!(got.bytes_sent, truth.client_sent, "client bytes sent");
    assert_eq!(
        got.bytes_received, truth.client_received,
        "client bytes received"
    );

    let server = FlowFilter::this_process()
        .tcp()
        .incoming()
        .source_port(truth.server_port);
    let got = agent.wait_for_totals(&server, |t| {
        t.bytes_sent >= truth.server_sent && t.bytes_received >= truth.server_received
    });
    assert_eq!(got.bytes_sent, truth.server_sent, "server bytes sent");
    assert_eq!(
        got.bytes_received, truth.server_received,
        "server bytes received"
    );
}
