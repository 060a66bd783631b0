//! `receiver.udp: false`: nothing runs on a send or a receive. The agent
//! holds TCP's programs and no other (none on the per-syscall tracepoints
//! or the egress hook), TCP is still exact (its bytes are the sockets' own
//! counters), and UDP is not counted.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::{tcp, udp};

/// Names of the BPF programs loaded now, from bpftool.
/// The programs process `pid` holds (its `bpf-prog` descriptors), by name.
fn programs_held_by(pid: u32) -> BTreeSet<String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("the agent's descriptors");
    let ids: BTreeSet<String> = fds
        .filter_map(|fd| fd.ok())
        .filter(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-prog")
        })
        .filter_map(|fd| {
            let info = std::fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            info.lines()
                .find_map(|line| line.strip_prefix("prog_id:"))
                .map(|id| id.trim().to_owned())
        })
        .collect();
    ids.iter()
        .map(|id| {
            let output = Command::new("bpftool")
                .args(["-j", "prog", "show", "id", id])
                .output()
                .expect("run bpftool (apt-get install bpftool)");
            assert!(output.status.success(), "bpftool prog show id {id} failed");
            let program: serde_json::Value =
                serde_json::from_slice(&output.stdout).expect("bpftool -j prints JSON");
            program["name"].as_str().unwrap_or_default().to_owned()
        })
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
        "receiver:\n  udp: false\n  dns: false\nprocessor:\n  interval: 1h\n",
    )
    .expect("write config");
    let mut agent = Agent::start_with_config(
        env!("CARGO_BIN_EXE_flowtel"),
        Duration::from_secs(1),
        &config,
    );

    // TCP's programs only, and the cgroup ones that run when a cgroup is
    // made or removed: nothing runs per send, packet or receive.
    let expected: BTreeSet<String> = [
        "flowtel_state",
        "flowtel_state_twin",
        "flowtel_retransmit",
        "flowtel_tcp_refresh",
        "flowtel_tcp_discover",
        "flowtel_owners",
        "flowtel_cgroup_mkdir",
        "flowtel_cgroup_rmdir",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(programs_held_by(agent.pid()), expected);

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
