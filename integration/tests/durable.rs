//! Nothing lost at a stop or a crash. The durable queue: with
//! `receiver.persistence` and `exporters.otlp.spill_dir`, each window is on
//! disk before the checkpoint counts it as exported, so an agent killed with
//! SIGKILL during an outage loses nothing: the next agent sends every window
//! once, in order, with its own timestamps. SIGHUP stops the agent as
//! SIGTERM does, flushing its open window.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration::agent::Agent;
use integration::otlp_metrics::{self, Point};
use integration::otlp_receiver::{Behaviour, OtlpReceiver, Protocol};
use integration::privilege;
use integration::record::{window_bytes, windows_closed, FlowFilter};
use integration::sandbox::Sandbox;
use integration::traffic::tcp;

const FLOWTEL: &str = env!("CARGO_BIN_EXE_flowtel");
const POLL: Duration = Duration::from_millis(200);
const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// flowtel with `config`, exporting to `receiver`, JSON lines on stdout.
fn agent(receiver: &OtlpReceiver, config: &Path) -> Agent {
    let mut command = receiver.agent_command(FLOWTEL);
    command.arg("--config").arg(config).env("RUST_LOG", "info");
    Agent::launch(command, POLL)
}

/// The windows (`*.otlp` files) in a queue directory.
fn kept(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "otlp"))
            .count()
    })
}

fn kill(agent: &mut Agent) {
    let how = agent.kill();
    assert!(how.contains("signal: 9"), "{how}");
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// Flow points of the accepted requests, each with its request's index.
fn flow_points(receiver: &OtlpReceiver) -> Vec<(usize, Point)> {
    receiver
        .accepted()
        .iter()
        .enumerate()
        .flat_map(|(n, request)| {
            otlp_metrics::points(std::slice::from_ref(request))
                .into_iter()
                .map(move |p| (n, p))
        })
        .collect()
}

#[test]
fn windows_queued_in_an_outage_survive_sigkill_and_arrive_once_in_order() {
    privilege::require_root();
    let sandbox = Sandbox::new("durable-sigkill");
    let spill = sandbox.path("spill");
    let config = sandbox.config(&format!(
        "exporters:\n  otlp:\n    spill_dir: {}\n",
        spill.display()
    ));
    survive_sigkill_during_an_outage(&config, &spill);
}

#[test]
fn with_persistence_alone_the_queue_is_kept_in_the_state_directory() {
    privilege::require_root();
    let sandbox = Sandbox::new("durable-state");
    let config = sandbox.config("");
    survive_sigkill_during_an_outage(&config, &sandbox.state_dir().join("otlp-queue"));
}

/// Four windows queued during an outage, the agent killed, a new one with
/// the backend up: every byte once, in order, with its own timestamps; the
/// queue directory `spill` empty after.
fn survive_sigkill_during_an_outage(config: &Path, spill: &Path) {
    // The backend is down for the first agent's whole life: four
    // transfers of 1,000,000 bytes (500,000 each way), each in a window.
    let down = OtlpReceiver::start(
        Protocol::Http,
        Behaviour {
            unavailable_first: u32::MAX,
            ..Behaviour::default()
        },
    );
    let mut first = agent(&down, config);
    let mut transfers = Vec::new();
    for _ in 0..4 {
        let truth = tcp::transfer(LOOPBACK, 500_000, 500_000);
        let port = truth.server_port;
        first.wait_until("the transfer's window", |records| {
            window_bytes(records, port) >= 1_000_000
        });
        transfers.push(truth);
    }
    // The window after the last transfer's has closed too: the last
    // transfer's window was queued and checkpointed before it.
    first.wait_for_another_window();
    kill(&mut first);
    let killed_ns = nanos(SystemTime::now());
    let on_disk = kept(spill);
    println!("killed during the outage; {on_disk} windows on disk");
    assert!(down.accepted().is_empty());

    let up = OtlpReceiver::start(Protocol::Http, Behaviour::default());
    let mut second = agent(&up, config);
    second.assert_resumed();
    let expected: i64 = transfers
        .iter()
        .map(|t| (t.client_sent + t.server_sent) as i64)
        .sum();
    assert_eq!(expected, 4_000_000);
    let arrived = |points: &[Point]| -> i64 {
        transfers
            .iter()
            .map(|t| otlp_metrics::flow_bytes(points, t.server_port, "transmit"))
            .sum()
    };
    // Until the bytes arrived, or the second agent's fifth window: by then
    // it has sent what it had on disk (a lost window never comes).
    let closed = windows_closed(&second.records());
    second.wait_until("the kept windows, or five windows", |records| {
        arrived(&otlp_metrics::points(&up.accepted())) >= expected
            || windows_closed(records) >= closed + 5
    });
    // Two more windows of the second agent's own: nothing counted again.
    second.wait_for_another_window();
    second.wait_for_another_window();
    let how = second.stop();
    assert!(how.contains("exit status: 0"), "second agent: {how}");

    let points = flow_points(&up);
    let flat: Vec<Point> = points.iter().map(|(_, p)| p.clone()).collect();
    println!(
        "after the SIGKILL during the outage: {} of {expected} bytes arrived",
        arrived(&flat)
    );
    for t in &transfers {
        assert_eq!(
            otlp_metrics::flow_bytes(&flat, t.server_port, "transmit"),
            (t.client_sent + t.server_sent) as i64,
            "transfer at port {}: every byte, once",
            t.server_port
        );
    }
    assert_eq!(arrived(&flat), expected);
    assert!(on_disk >= 4, "windows on disk at the kill: {on_disk}");
    // In order: the windows' times never go back from one request to the
    // next; each window once: no series twice at one time.
    let mut last_time = 0;
    let mut seen = std::collections::BTreeSet::new();
    for (_, p) in &points {
        assert!(p.time_ns >= last_time, "a window arrived out of order");
        last_time = p.time_ns;
        assert!(
            seen.insert((p.metric.clone(), p.attributes.clone(), p.time_ns)),
            "a window arrived twice: {p:?}"
        );
    }
    // With their own timestamps: the transfers' windows closed before the
    // kill.
    let transfer_points: Vec<_> = flat
        .iter()
        .filter(|p| p.of_this_process() && transfers.iter().any(|t| p.at_port(t.server_port)))
        .collect();
    assert!(!transfer_points.is_empty());
    assert!(transfer_points.iter().all(|p| p.time_ns <= killed_ns));
    assert_eq!(kept(spill), 0, "sent, then gone from disk");
}

#[test]
fn sighup_stops_the_agent_and_flushes_its_open_window() {
    privilege::require_root();
    // One-hour windows: the bytes are only in the open window at the stop.
    let mut agent = Agent::start(FLOWTEL, POLL);
    let truth = tcp::transfer(LOOPBACK, 200_000, 200_000);
    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(truth.server_port);
    agent.wait_for_totals(&client, |t| t.bytes_sent >= truth.client_sent);
    assert_eq!(windows_closed(&agent.records()), 0);
    agent.signal(libc::SIGHUP);
    let how = agent.wait_for_exit();
    let records = agent.records();
    let flushed = window_bytes(&records, truth.server_port);
    println!("after SIGHUP: {flushed} of 400000 bytes in the flushed window ({how})");
    assert!(how.contains("exit status: 0"), "{how}");
    assert_eq!(flushed, truth.client_sent + truth.client_received);
    assert_eq!(flushed, 400_000);
    assert!(
        agent
            .stderr()
            .iter()
            .any(|l| l.contains("SIGHUP: last poll, then the partial window")),
        "{:?}",
        agent.stderr()
    );
}
