//! Restart without loss or double counting: with `receiver.persistence`, a
//! connection that lives across a restart, bytes moved while no agent runs,
//! and a connection opened and closed in that gap are all counted exactly
//! once, by the agent that did not export them yet; after a crash, the next
//! agent counts from the last window the crashed one exported.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::{FlowFilter, Record, Totals};
use integration::sandbox::Sandbox;

const FLOWTEL: &str = env!("CARGO_BIN_EXE_flowtel");

fn start(config: &Path) -> Agent {
    Agent::start_with(
        FLOWTEL,
        Duration::from_millis(500),
        &["--config", config.to_str().unwrap()],
    )
}

/// Writes `n` bytes on `from` and reads them on `to`.
fn send(from: &mut TcpStream, to: &mut TcpStream, n: usize) {
    let data = vec![0x5a; n];
    from.write_all(&data).expect("write");
    let mut got = vec![0; n];
    to.read_exact(&mut got).expect("read");
}

fn client_flow(port: u16) -> FlowFilter {
    FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port)
}

fn window_sum(records: &[Record], filter: &FlowFilter) -> u64 {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Window(flow) if filter.matches(&flow.attributes) => Some(flow.bytes_sent),
            _ => None,
        })
        .sum()
}

fn stop(agent: &mut Agent) -> Vec<Record> {
    let how = agent.stop();
    assert!(how.contains("exit status: 0"), "agent ended: {how}");
    agent.records()
}

#[test]
fn bytes_across_a_restart_are_counted_once() {
    privilege::require_root();
    let sandbox = Sandbox::new("restart-sigterm");
    let config = sandbox.config("");
    const X: usize = 40_000; // before the restart
    const Y: usize = 30_000; // while no agent runs
    const Z: usize = 20_000; // a whole connection while no agent runs
    const W: usize = 10_000; // after the restart

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();

    let mut first = start(&config);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    send(&mut client, &mut server, X);
    first.wait_for_totals(&client_flow(port), |t| t.bytes_sent >= X as u64);
    let first_records = stop(&mut first);

    // No agent: the pinned programs go on counting.
    send(&mut client, &mut server, Y);
    {
        let mut short = TcpStream::connect(("127.0.0.1", other_port)).unwrap();
        let (mut accepted, _) = other.accept().unwrap();
        send(&mut short, &mut accepted, Z);
    }

    let mut second = start(&config);
    second.assert_resumed();
    send(&mut client, &mut server, W);
    drop(client);
    drop(server);
    second.wait_for_totals(&client_flow(port), |t| {
        t.bytes_sent >= (Y + W) as u64 && t.connections_closed >= 1
    });
    second.wait_for_totals(&client_flow(other_port), |t| {
        t.bytes_sent >= Z as u64 && t.connections_closed >= 1
    });
    let second_records = stop(&mut second);

    let sum = |records: &[Record], filter: &FlowFilter| integration::record::sum(records, filter);
    let before: Totals = sum(&first_records, &client_flow(port));
    let after: Totals = sum(&second_records, &client_flow(port));
    println!("first agent: {before:?}\nsecond agent: {after:?}");
    assert_eq!(before.bytes_sent, X as u64, "first agent");
    assert_eq!(
        after.bytes_sent,
        (Y + W) as u64,
        "second agent: no byte twice, none lost"
    );
    assert_eq!(before.connections_opened, 1);
    assert_eq!(after.connections_opened, 0, "the connection opened once");
    assert_eq!(after.connections_closed, 1);

    let gap = sum(&second_records, &client_flow(other_port));
    assert_eq!(
        gap.bytes_sent, Z as u64,
        "a connection that lived in the gap"
    );
    assert_eq!((gap.connections_opened, gap.connections_closed), (1, 1));

    // The windows say the same, and the second starts where the first ended.
    assert_eq!(window_sum(&first_records, &client_flow(port)), X as u64);
    assert_eq!(
        window_sum(&second_records, &client_flow(port)),
        (Y + W) as u64
    );
}

#[test]
fn after_a_crash_the_next_agent_counts_from_the_last_exported_window() {
    privilege::require_root();
    let sandbox = Sandbox::new("restart-crash");
    // One-second windows, so that the first agent checkpoints at each.
    let config = sandbox.config("processor:\n  interval: 1s\n");
    const X: usize = 25_000; // exported by the first agent before it dies
    const Y: usize = 15_000; // moved after its last window, and while down

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut first = Agent::start_with_config(FLOWTEL, Duration::from_millis(200), &config);
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    send(&mut client, &mut server, X);
    first.wait_until("a closed window with the first bytes", |records| {
        window_sum(records, &client_flow(port)) >= X as u64
    });
    // Let one more (empty) window close after it, then kill: no shutdown,
    // no last checkpoint.
    first.wait_for_another_window();
    let how = first.kill();
    assert!(how.contains("signal: 9"), "the first agent ended: {how}");
    let first_records = first.records();
    send(&mut client, &mut server, Y);

    let mut second = Agent::start_with_config(FLOWTEL, Duration::from_millis(200), &config);
    second.wait_for_totals(&client_flow(port), |t| t.bytes_sent >= Y as u64);
    let second_records = stop(&mut second);

    let exported = window_sum(&first_records, &client_flow(port));
    let after = integration::record::sum(&second_records, &client_flow(port));
    println!("first agent exported {exported} B in windows; second agent counted {after:?}");
    assert_eq!(exported, X as u64);
    assert_eq!(after.bytes_sent, Y as u64, "nothing exported counted again");
    assert_eq!(after.connections_opened, 0);
}

#[test]
fn a_second_agent_on_the_same_directories_refuses_to_start_and_the_first_counts_on() {
    privilege::require_root();
    let sandbox = Sandbox::new("restart-second-agent");
    let config = sandbox.config("");
    let mut first = start(&config);

    let mut second = Command::new(FLOWTEL)
        .args([
            "run",
            "--format",
            "json",
            "--config",
            config.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the second agent");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second agent did not refuse to start within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    second
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    println!("second agent: {status}: {stderr}");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!(
            "another flowtel agent (pid {}) is running with the state directory",
            first.pid()
        )),
        "{stderr}"
    );

    // The first agent was not disturbed: it counts a transfer exactly.
    let truth = integration::traffic::tcp::transfer("127.0.0.1".parse().unwrap(), 30_000, 10_000);
    first.assert_transfer_counted(&truth);
    let how = first.stop();
    assert!(how.contains("exit status: 0"), "{how}");
}
