//! TCP that began before the agent: a connection already open when the
//! agent starts counts from then, byte for byte, under the process holding
//! it and in its direction (accepted when its local port is a listener's);
//! a listener already open gives its process to the connections it
//! accepts afterwards (an accepted connection is made in softirq, where no
//! process is at hand).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::tcp::exchange;

const BEFORE: usize = 70_000;
const UP: usize = 300_000;
const DOWN: usize = 200_000;

#[test]
fn a_connection_and_a_listener_older_than_the_agent_count_under_their_process() {
    privilege::require_root();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let server_port = listener.local_addr().expect("bound").port();
    let mut client = TcpStream::connect(("127.0.0.1", server_port)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    exchange(&mut client, &mut server, BEFORE);
    exchange(&mut server, &mut client, BEFORE);

    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    exchange(&mut client, &mut server, UP);
    exchange(&mut server, &mut client, DOWN);
    client.shutdown(Shutdown::Write).expect("shutdown");
    assert_eq!(server.read(&mut [0u8; 1]).expect("read EOF"), 0);
    drop(server);
    drop(client);

    // A new connection to the old listener: its server end is this process.
    let (accepted_tx, accepted_rx) = std::sync::mpsc::channel();
    let serving = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut request = Vec::new();
        stream.read_to_end(&mut request).expect("read to EOF");
        stream.write_all(&vec![1u8; 4321]).expect("reply");
        accepted_tx.send(request.len() as u64).expect("test waits");
    });
    let mut fresh = TcpStream::connect(("127.0.0.1", server_port)).expect("connect");
    fresh.write_all(&vec![2u8; 1234]).expect("request");
    fresh.shutdown(Shutdown::Write).expect("shutdown");
    let mut reply = Vec::new();
    fresh.read_to_end(&mut reply).expect("reply");
    serving.join().expect("server thread");
    assert_eq!(accepted_rx.recv().expect("server read"), 1234);
    assert_eq!(reply.len(), 4321);

    let server_ends = FlowFilter::this_process()
        .tcp()
        .incoming()
        .source_port(server_port);
    let client_ends = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(server_port);
    // The old connection's ends have their directions too (its local port
    // is the listener's: accepted), so each filter holds an old and a new
    // end: what moved after the start on both.
    let (up, down) = (UP as u64, DOWN as u64);
    agent.assert_ends_counted(&[
        (&server_ends, down + 4321, up + 1234),
        (&client_ends, up + 1234, down + 4321),
    ]);

    // Every TCP byte of this process since the agent started: the old
    // connection's two ends (not what moved before) and the new one's.
    let moved = (UP + DOWN) as u64 + 1234 + 4321;
    let all = FlowFilter::this_process().tcp();
    let got = agent.wait_for_totals(&all, |t| t.bytes_sent >= moved && t.bytes_received >= moved);
    assert_eq!(
        (got.bytes_sent, got.bytes_received),
        (moved, moved),
        "{got:#?}"
    );
}
