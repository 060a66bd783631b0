//! A TCP close the kernel never reported (its program run skipped) still
//! ends the connection: the refresh walks stop seeing the socket, and the
//! receiver ends its entry with the bytes the last walk read. The agent runs
//! with `FLOWTEL_TEST_MISS_TCP_CLOSES`, which makes the state program ignore
//! every close, as such a kernel would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;

const CONNECTIONS: u64 = 20;
const REQUEST: usize = 3_000;
const REPLY: usize = 700;
const POLL: Duration = Duration::from_millis(100);

#[test]
fn connections_whose_close_went_unreported_end_with_their_bytes() {
    privilege::require_root();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command.env("FLOWTEL_TEST_MISS_TCP_CLOSES", "1");
    let mut agent = Agent::start_command(command, POLL);
    let tracked_before = agent.health().last().map_or(0, |h| h.tracked_connections);

    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().unwrap().port();
    let mut pairs = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut client = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        client.write_all(&[0x51; REQUEST]).expect("request");
        let mut request = vec![0; REQUEST];
        server.read_exact(&mut request).expect("read the request");
        server.write_all(&[0x52; REPLY]).expect("reply");
        let mut reply = vec![0; REPLY];
        client.read_exact(&mut reply).expect("read the reply");
        pairs.push((client, server));
    }
    // Bytes that move after the last walk that saw a socket alive are the
    // close's to report; with the close skipped, they are what is lost. So
    // the sockets are seen alive, with all their bytes, before they close.
    agent.wait_polls(2);
    drop(pairs);

    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    let server = FlowFilter::this_process()
        .tcp()
        .incoming()
        .source_port(port);
    let got = agent.wait_for_totals(&client, |t| t.connections_closed >= CONNECTIONS);
    assert_eq!(
        got.connections_opened, CONNECTIONS,
        "client connections opened"
    );
    assert_eq!(
        got.connections_closed, CONNECTIONS,
        "client connections closed"
    );
    assert_eq!(
        got.bytes_sent,
        CONNECTIONS * REQUEST as u64,
        "client bytes sent"
    );
    assert_eq!(
        got.bytes_received,
        CONNECTIONS * REPLY as u64,
        "client bytes received"
    );
    let got = agent.wait_for_totals(&server, |t| t.connections_closed >= CONNECTIONS);
    assert_eq!(
        got.connections_closed, CONNECTIONS,
        "server connections closed"
    );
    assert_eq!(
        got.bytes_received,
        CONNECTIONS * REQUEST as u64,
        "server bytes received"
    );
    assert_eq!(
        got.bytes_sent,
        CONNECTIONS * REPLY as u64,
        "server bytes sent"
    );

    let health = agent.health();
    let last = health.last().expect("a health record");
    assert!(
        last.tcp_closes_missed >= 2 * CONNECTIONS,
        "both ends of each connection are counted as missed closes: {last:?}"
    );
    assert!(
        last.tracked_connections < tracked_before + 2 * CONNECTIONS,
        "the ended entries left the map ({} tracked before, {} now)",
        tracked_before,
        last.tracked_connections
    );
    assert!(agent.is_running(), "the agent exited: {:?}", agent.stderr());
}
