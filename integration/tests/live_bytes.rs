//! An open TCP connection's bytes appear in the poll in which they moved,
//! not only at its close: in the agent's own network namespace, in one the
//! test makes (a container's, as far as the kernel can tell), and for a
//! connection in that namespace opened before the agent started; and after
//! polls in which the connection was quiet.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use integration::agent::Agent;
use integration::netns::NetNs;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::tcp::{exchange, loopback_pair};

/// Moves `up` then `down` bytes on an open connection, waits until the
/// agent's polls show exactly those bytes on the client's flow while the
/// connection is still open, and does it once more.
fn assert_counted_while_open(
    agent: &mut Agent,
    client_flow: &FlowFilter,
    mut move_bytes: impl FnMut(usize, usize),
) {
    let (mut sent, mut received) = (0, 0);
    for (up, down) in [(300_000, 40_000), (123_457, 7_654)] {
        move_bytes(up, down);
        sent += up as u64;
        received += down as u64;
        let got = agent.wait_for_totals(client_flow, |t| {
            t.bytes_sent >= sent && t.bytes_received >= received
        });
        assert_eq!((got.bytes_sent, got.bytes_received), (sent, received));
        assert_eq!(got.connections_closed, 0, "counted before the close");
    }
}

#[test]
fn bytes_of_an_open_connection_count_in_the_poll_they_moved() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    let (mut client, mut server) = loopback_pair();
    let port = client.peer_addr().unwrap().port();
    let flow = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    assert_counted_while_open(&mut agent, &flow, |up, down| {
        exchange(&mut client, &mut server, up);
        exchange(&mut server, &mut client, down);
    });
}

/// The most quiet connections any poll reported (its debug line `poll read
/// N connections and Q quiet ones`).
fn most_quiet(agent: &Agent) -> u64 {
    agent
        .stderr()
        .iter()
        .filter_map(|line| {
            let rest = &line[line.find(" connections and ")? + " connections and ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// A connection idle for several polls is passed over as quiet (its id, not
/// a sample): both ends' later bytes count exactly, in the poll they moved,
/// and nothing moved before is counted again.
#[test]
fn a_quiet_connection_counts_its_next_bytes_exactly() {
    privilege::require_root();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command.env("RUST_LOG", "info,flowtel=debug");
    let mut agent = Agent::start_command(command, Duration::from_secs(1));
    let (mut client, mut server) = loopback_pair();
    let port = client.peer_addr().unwrap().port();
    let client_flow = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    let server_flow = FlowFilter::this_process()
        .tcp()
        .incoming()
        .source_port(port);
    exchange(&mut client, &mut server, 50_000);
    agent.wait_for_totals(&client_flow, |t| t.bytes_sent >= 50_000);
    agent.wait_polls(3);
    assert!(
        most_quiet(&agent) >= 2,
        "no poll passed over the idle connection's two ends"
    );
    exchange(&mut client, &mut server, 12_345);
    exchange(&mut server, &mut client, 678);
    let got = agent.wait_for_totals(&client_flow, |t| t.bytes_sent >= 62_345);
    assert_eq!((got.bytes_sent, got.bytes_received), (62_345, 678));
    let got = agent.wait_for_totals(&server_flow, |t| t.bytes_received >= 62_345);
    assert_eq!((got.bytes_sent, got.bytes_received), (678, 62_345));
    assert_eq!(got.connections_closed, 0, "counted before the close");
}

/// What the namespace's thread is told to do with its connection.
enum Step {
    Move(usize, usize, mpsc::Sender<()>),
    Close,
}

/// A thread in `ns` holding a connected pair, which moves bytes on request.
fn connection_in(ns: &NetNs) -> (mpsc::Sender<Step>, u16, std::thread::JoinHandle<()>) {
    let (steps, incoming) = mpsc::channel::<Step>();
    let (port_tx, port_rx) = mpsc::channel();
    let thread = ns.spawn(move || {
        let (mut client, mut server) = loopback_pair();
        port_tx.send(client.peer_addr().unwrap().port()).unwrap();
        for step in incoming {
            match step {
                Step::Move(up, down, done) => {
                    exchange(&mut client, &mut server, up);
                    exchange(&mut server, &mut client, down);
                    done.send(()).unwrap();
                }
                Step::Close => return,
            }
        }
    });
    (
        steps,
        port_rx.recv().expect("the namespace's connection"),
        thread,
    )
}

fn move_in(steps: &mpsc::Sender<Step>, up: usize, down: usize) {
    let (done, moved) = mpsc::channel();
    steps.send(Step::Move(up, down, done)).unwrap();
    moved.recv().expect("bytes moved in the namespace");
}

#[test]
fn in_another_network_namespace_too_and_from_before_the_agent() {
    privilege::require_root();
    let ns = NetNs::create("live");
    // Opened before the agent: counted from the agent's start.
    let (older, older_port, older_thread) = connection_in(&ns);
    move_in(&older, 77_777, 11_111);

    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    let (newer, newer_port, newer_thread) = connection_in(&ns);
    let in_ns = FlowFilter::this_process()
        .tcp()
        .namespace(ns.inode())
        .outgoing();
    let newer_flow = in_ns.clone().destination_port(newer_port);

    assert_counted_while_open(&mut agent, &newer_flow, |up, down| {
        move_in(&newer, up, down)
    });
    let older_flow = in_ns.destination_port(older_port);
    assert_counted_while_open(&mut agent, &older_flow, |up, down| {
        move_in(&older, up, down)
    });
    let unreachable: Vec<u64> = agent
        .health()
        .iter()
        .map(|h| h.namespaces_unreachable)
        .collect();
    assert!(unreachable.iter().all(|n| *n == 0), "{unreachable:?}");
    for (steps, thread) in [(older, older_thread), (newer, newer_thread)] {
        steps.send(Step::Close).unwrap();
        thread.join().expect("namespace thread");
    }
}
