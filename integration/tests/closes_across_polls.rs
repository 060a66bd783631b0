//! TCP connections that live across polls and close at every moment of one,
//! including between the receiver's read of closed connections and its read
//! of the connection map: each is counted once, with its bytes, however its
//! close falls.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;

const CLIENT_THREADS: u64 = 8;
const CONNECTIONS_PER_THREAD: u64 = 60;
const REQUEST: usize = 100;
const POLL: Duration = Duration::from_millis(100);

/// Reads every accepted connection to its end, one thread each.
fn serve(listener: TcpListener, connections: u64) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let readers: Vec<_> = (0..connections)
            .map(|_| {
                let (mut socket, _) = listener.accept().expect("accept");
                thread::spawn(move || {
                    let mut request = Vec::new();
                    socket.read_to_end(&mut request).expect("read a request");
                    request.len() as u64
                })
            })
            .collect();
        readers.into_iter().map(|r| r.join().expect("reader")).sum()
    })
}

/// How long the `n`th connection of a thread stays open: spread over two
/// polls and never a multiple of one, so that closes land at every phase.
fn hold(thread: u64, n: u64) -> Duration {
    Duration::from_micros(40_000 + (thread * 7_919 + n * 37_013) % 160_000)
}

#[test]
fn connections_closing_at_any_moment_of_a_poll_are_counted_once() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), POLL);
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().unwrap().port();
    let connections = CLIENT_THREADS * CONNECTIONS_PER_THREAD;
    let server = serve(listener, connections);

    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|thread| {
            thread::spawn(move || {
                for n in 0..CONNECTIONS_PER_THREAD {
                    let mut socket = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    socket.write_all(&[0x42; REQUEST]).expect("write a request");
                    thread::sleep(hold(thread, n));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().expect("client thread");
    }
    let sent = connections * REQUEST as u64;
    assert_eq!(server.join().expect("server thread"), sent);

    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    let got = agent.wait_for_totals(&client, |t| {
        t.connections_closed >= connections && t.bytes_sent >= sent
    });
    assert_eq!(got.connections_opened, connections, "connections opened");
    assert_eq!(got.connections_closed, connections, "connections closed");
    assert_eq!(got.bytes_sent, sent, "bytes sent");
    assert!(agent.is_running(), "the agent exited: {:?}", agent.stderr());
}
