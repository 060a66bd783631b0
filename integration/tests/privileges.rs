//! Without privileges the agent stops at once with one line that names the
//! capabilities it needs, and a non-zero exit.

use std::process::Command;

use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::traffic::tcp;

#[test]
fn an_unprivileged_agent_names_the_missing_capabilities_and_exits_1() {
    // Root is needed to become the unprivileged user.
    privilege::require_root();
    let copy = privilege::SharedCopy::of(env!("CARGO_BIN_EXE_flowtel"));
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&copy.binary)
        .args(["run", "--poll-interval", "1s"])
        .output()
        .expect("setpriv (util-linux) runs flowtel as nobody");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("flowtel: error: "), "{line}");
    for capability in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(line.contains(capability), "{capability} not named: {line}");
    }
}

/// With only CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, as an ordinary user,
/// the agent attaches, then drops every capability, and still counts
/// exactly.
#[test]
fn an_agent_with_only_its_three_capabilities_drops_them_and_still_counts() {
    privilege::require_root();
    let copy = privilege::SharedCopy::of(env!("CARGO_BIN_EXE_flowtel"));
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all,+bpf,+perfmon,+net_admin",
            "--ambient-caps=+bpf,+perfmon,+net_admin",
        ])
        .arg(&copy.binary);
    let mut agent = Agent::start_command(command, Duration::from_secs(1));

    for (set, mask) in privilege::capability_sets(agent.pid()) {
        if set != "CapBnd" {
            assert_eq!(
                mask, 0,
                "{set} of the running agent is {mask:#x}, not empty"
            );
        }
    }
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 64 << 10);
    agent.assert_transfer_counted(&truth);
}
