//! Degrade, never die: for each feature, the loader is made to treat the
//! feature's programs as refused by the kernel (FLOWTEL_TEST_REFUSE_PROGRAMS,
//! a switch for tests only). The agent then starts, says in one warning
//! line what is off and what that costs, `flowtel check` shows it in its
//! table and exits 0, the health records carry the state, and what is still
//! counted is exact. Only when TCP connections cannot be counted does the
//! agent refuse to start.

use std::net::Shutdown;
use std::process::Command;
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::{tcp, udp};

const REFUSE: &str = "FLOWTEL_TEST_REFUSE_PROGRAMS";

fn agent_refusing(programs: &str) -> Agent {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command.env(REFUSE, programs);
    Agent::start_command(command, Duration::from_secs(1))
}

/// `flowtel check`'s row for `feature` with `programs` refused, and its
/// exit status.
fn check_row(programs: &str, feature: &str) -> (String, bool) {
    let output = Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .arg("check")
        .env(REFUSE, programs)
        .output()
        .expect("run flowtel check");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let row = stdout
        .lines()
        .find(|line| line.trim_start().starts_with(feature))
        .unwrap_or_else(|| panic!("no row for {feature}:\n{stdout}"))
        .to_owned();
    (row, output.status.success())
}

/// The agent warned once about `feature` being `state`, and its health
/// records say so.
fn assert_reported(agent: &mut Agent, feature: &str, state: &str) {
    let said = format!("feature {feature}: {state}");
    let warnings: Vec<String> = agent
        .stderr()
        .into_iter()
        .filter(|line| line.contains(&said))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning {said:?}: {:?}",
        agent.stderr()
    );
    assert!(
        warnings[0].contains("refused for this test"),
        "{}",
        warnings[0]
    );
    agent.wait_until("a health record", |records| {
        records.iter().any(|r| r.as_health().is_some())
    });
    let health = agent.health();
    let level = health.last().unwrap().features.get(feature).cloned();
    assert_eq!(level.as_deref(), Some(state), "{health:?}");
}

/// With `programs` refused: `flowtel check` exits 0 and shows `feature` as
/// `state`, its row saying `detail`; an agent starts, warns once and
/// reports the state. Returns that agent.
fn start_refusing(programs: &str, feature: &str, state: &str, detail: &str) -> Agent {
    let (row, ok) = check_row(programs, feature);
    assert!(
        ok && row.contains(&format!(" {state} ")) && row.contains(detail),
        "{row}"
    );
    let mut agent = agent_refusing(programs);
    assert_reported(&mut agent, feature, state);
    agent
}

fn assert_tcp_exact(agent: &mut Agent) {
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 64 << 10);
    agent.assert_transfer_counted(&truth);
}

#[test]
fn without_live_bytes_an_open_connections_bytes_count_at_its_close() {
    privilege::require_root();
    let mut agent = start_refusing(
        "flowtel_tcp_refresh",
        "tcp live bytes",
        "off",
        "only when it closes",
    );
    let (mut client, mut server) = tcp::loopback_pair();
    let port = client.peer_addr().unwrap().port();
    tcp::exchange(&mut client, &mut server, 54_321);
    // Three polls with the connection open: nothing yet.
    agent.wait_polls(3);
    let flow = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    assert_eq!(agent.sum(&flow).bytes_sent, 0);
    client.shutdown(Shutdown::Both).unwrap();
    drop((client, server));
    let got = agent.wait_for_totals(&flow, |t| t.connections_closed >= 1);
    assert_eq!(got.bytes_sent, 54_321, "counted exactly at the close");
}

#[test]
fn without_discovery_a_connection_older_than_the_agent_is_not_counted() {
    privilege::require_root();
    let (mut old, mut old_server) = tcp::loopback_pair();
    let port = old.peer_addr().unwrap().port();
    let mut agent = start_refusing(
        "flowtel_tcp_discover",
        "existing connections",
        "off",
        "opened before the agent started",
    );
    tcp::exchange(&mut old, &mut old_server, 10_000);
    drop((old, old_server));
    // A connection made after the start is exact; the old one is absent.
    assert_tcp_exact(&mut agent);
    let old_flow = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    assert_eq!(agent.sum(&old_flow).bytes_sent, 0);
}

#[test]
fn without_the_owners_walk_an_accepted_connection_keeps_its_listeners_process() {
    privilege::require_root();
    let mut agent = start_refusing(
        "flowtel_owners",
        "socket owners",
        "off",
        "keep their listener's process",
    );
    assert_tcp_exact(&mut agent);
}

#[test]
fn without_the_retransmit_hook_counters_come_from_the_polls() {
    privilege::require_root();
    let mut agent = start_refusing(
        "flowtel_retransmit",
        "retransmits",
        "fallback",
        "at each poll",
    );
    assert_tcp_exact(&mut agent);
}

#[test]
fn without_udp_hooks_tcp_is_still_exact_and_udp_is_off() {
    privilege::require_root();
    // This kernel has no kprobes: with the egress hook and the tracepoints
    // refused, nothing is left.
    let mut agent = start_refusing(
        "flowtel_udp_egress,flowtel_send",
        "udp",
        "off",
        "UDP is not counted",
    );
    assert_tcp_exact(&mut agent);
    let truth = udp::serve_clients("127.0.0.1".parse().unwrap(), 1, 3);
    let server = FlowFilter::this_process()
        .udp()
        .source_port(truth.server_port);
    agent.wait_polls(2);
    assert_eq!(agent.sum(&server).bytes_received, 0);
}

#[test]
fn without_the_egress_hook_udp_sends_count_from_the_send_tracepoint() {
    privilege::require_root();
    let mut agent = start_refusing(
        "flowtel_udp_egress",
        "udp",
        "fallback",
        "tracepoints sock_send_length, sock_recv_length",
    );
    let truth = udp::serve_clients("127.0.0.1".parse().unwrap(), 3, 4);
    agent.assert_udp_exchange_counted(&truth);
}

#[test]
fn without_udp_peers_an_unconnected_socket_counts_as_one_flow() {
    privilege::require_root();
    let mut agent = start_refusing(
        "flowtel_udp_recvmsg4",
        "udp peers",
        "off",
        "without their peer",
    );
    let truth = udp::serve_clients("127.0.0.1".parse().unwrap(), 3, 4);
    let server = FlowFilter::this_process()
        .udp()
        .source_port(truth.server_port);
    let (sent, received): (u64, u64) = truth.clients.iter().fold((0, 0), |(s, r), c| {
        (s + c.server_sent, r + c.server_received)
    });
    let got = agent.wait_for_totals(&server, |t| {
        t.bytes_sent >= sent && t.bytes_received >= received
    });
    assert_eq!((got.bytes_sent, got.bytes_received), (sent, received));
}

#[test]
fn without_socket_cookies_connections_are_keyed_by_address_and_exact() {
    privilege::require_root();
    // As on kernels before 5.12, whose tracing programs cannot ask for a
    // socket cookie.
    let (mut old, mut old_server) = tcp::loopback_pair();
    let port = old.peer_addr().unwrap().port();
    let mut agent = start_refusing(
        "flowtel_state",
        "tcp connections",
        "fallback",
        "keyed by socket address",
    );
    tcp::exchange(&mut old, &mut old_server, 10_000);
    let old_flow = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    let got = agent.wait_for_totals(&old_flow, |t| t.bytes_sent >= 10_000);
    assert_eq!(got.bytes_sent, 10_000, "older connection, live");
    drop((old, old_server));
    assert_tcp_exact(&mut agent);
}

#[test]
fn without_the_state_tracepoint_nothing_counts_and_the_agent_says_so() {
    privilege::require_root();
    let both = "flowtel_state,flowtel_state_by_addr";
    let (row, ok) = check_row(both, "programs");
    assert!(
        !ok && row.contains("nothing can count TCP connections"),
        "{row}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .args(["run", "--format", "json"])
        .env(REFUSE, both)
        .output()
        .expect("run flowtel");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("flowtel: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains("nothing can count TCP connections on this kernel")
            && errors[0].contains("flowtel_state_by_addr"),
        "{stderr}"
    );
}

#[test]
fn without_the_release_hook_an_idle_udp_flow_ends_and_nothing_is_lost() {
    privilege::require_root();
    let config = std::env::temp_dir().join(format!("flowtel-idle-{}.yaml", std::process::id()));
    std::fs::write(&config, "receiver:\n  udp_idle_timeout: 2s\n").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command
        .args([
            "run",
            "--format",
            "json",
            "--poll-interval",
            "1s",
            "--config",
        ])
        .arg(&config)
        .env(REFUSE, "flowtel_sock_release");
    let mut agent = Agent::launch(command, Duration::from_secs(1));
    assert_reported(&mut agent, "udp release", "fallback");

    let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.connect(server.local_addr().unwrap()).unwrap();
    let flow = FlowFilter::this_process()
        .udp()
        .outgoing()
        .destination_port(server.local_addr().unwrap().port());
    let mut sent = 0;
    // Both sockets stay open: only the idle sweep can end the flow.
    for (round, datagrams) in [(1, 3), (2, 2)] {
        for n in 0..datagrams {
            let size = 100 + 10 * n;
            client.send(&vec![9u8; size]).unwrap();
            server.recv(&mut [0u8; 2048]).unwrap();
            sent += size as u64;
        }
        let got = agent.wait_for_totals(&flow, |t| t.connections_closed >= round);
        assert_eq!(got.bytes_sent, sent, "round {round}");
        assert_eq!(got.connections_closed, round);
    }
    let _ = std::fs::remove_file(&config);
}

/// Without conntrack (here refused; for real, nf_conntrack not loaded)
/// feature nat is off and TCP counts on exactly.
#[test]
fn without_conntrack_nat_is_off_and_tcp_stays_exact() {
    privilege::require_root();
    let mut agent = start_refusing("conntrack", "nat", "off", "conntrack refused for this test");
    assert_tcp_exact(&mut agent);
}
