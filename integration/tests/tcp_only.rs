//! `receiver.udp: false`: nothing runs on a send or a receive. No program
//! sits on the per-syscall tracepoints, TCP is still exact (its bytes are
//! the sockets' own counters), and UDP is not counted.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::{tcp, udp};

/// Names of the BPF programs loaded now, from bpftool.
fn loaded_programs() -> Vec<String> {
    let output = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .expect("run bpftool (apt-get install bpftool)");
    assert!(output.status.success(), "bpftool prog show failed");
    let programs: Vec<serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("bpftool -j prints JSON");
    programs
        .iter()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn without_udp_nothing_runs_per_send_and_tcp_stays_exact() {
    privilege::require_root();
    let dir = std::env::temp_dir().join(format!("flowtel-tcp-only-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config: PathBuf = dir.join("flowtel.yaml");
    std::fs::write(
        &config,
        "receiver:\n  udp: false\nprocessor:\n  interval: 1h\n",
    )
    .expect("write config");
    let mut agent = Agent::start_with_config(
        env!("CARGO_BIN_EXE_flowtel"),
        Duration::from_secs(1),
        &config,
    );

    let programs = loaded_programs();
    assert!(
        programs.iter().any(|p| p == "flowtel_state"),
        "the agent's programs are loaded: {programs:?}"
    );
    for per_syscall in [
        "flowtel_send",
        "flowtel_recv",
        "flowtel_udp_egr",
        "flowtel_udp_sen",
        "flowtel_udp_rec",
    ] {
        assert!(
            !programs.iter().any(|p| p.starts_with(per_syscall)),
            "{per_syscall} is loaded: {programs:?}"
        );
    }

    let exchange = udp::serve_clients("127.0.0.1".parse().unwrap(), 2, 3);
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 3 << 20, 1 << 20);
    agent.assert_transfer_counted(&truth);
    let udp_flows = agent.sum(&FlowFilter::this_process().udp());
    assert_eq!(
        (udp_flows.bytes_sent, udp_flows.bytes_received),
        (0, 0),
        "UDP is not counted ({} clients exchanged datagrams)",
        exchange.clients.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
