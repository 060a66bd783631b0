//! flowtel in a container: the image of `otel-config/container/Dockerfile`
//! (on a Debian 12 base made with debootstrap, cached by name), run by
//! Debian's docker.io daemon as otel-config/README.md says: CAP_BPF,
//! CAP_PERFMON and CAP_NET_ADMIN only (no --privileged, no CAP_SYS_ADMIN),
//! flowtel's seccomp profile, the host's PID and network namespaces and
//! cgroup-v2 root, a read-only root. It counts a transfer this process makes
//! on the host exactly, holds exactly those capabilities and drops them;
//! `flowtel check` in the image says what the container cannot do (enter
//! other network namespaces), and a connection in another namespace is
//! counted at its close, exactly, as it says.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use integration::agent::Agent;
use integration::image::{self, Grant, CAPABILITIES};
use integration::netns::NetNs;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::tcp::{self, exchange, loopback_pair};

const POLL: Duration = Duration::from_millis(200);

/// The image and how the daemon grants its capabilities.
fn image() -> (String, Grant) {
    image::ready(env!("CARGO_BIN_EXE_flowtel").as_ref())
}

/// A container name of this test process.
fn container_name(what: &str) -> String {
    format!("flowtel-test-{what}-{}", std::process::id())
}

/// The image's agent printing JSON lines (its own configuration, as a
/// deployment has it), as a running [`Agent`] whose process is `docker run`.
fn agent_in_container(name: &str) -> Agent {
    let (image, grant) = image();
    // A container of the same name left by a killed run of this pid.
    integration::docker::docker(&["rm", "-f", name]);
    let command = image::run_command(
        &image,
        grant,
        name,
        &[
            "run",
            "--config",
            "/etc/flowtel/flowtel.yaml",
            "--format",
            "json",
            "--poll-interval",
            "200ms",
            "--interval",
            "1h",
        ],
    );
    eprintln!("{command:?}");
    Agent::launch(command, POLL)
}

/// Bit numbers of the capabilities, as /proc/PID/status shows them.
fn capability_bits(names: &[&str]) -> u64 {
    names
        .iter()
        .map(|name| match *name {
            "NET_ADMIN" => 1u64 << 12,
            "PERFMON" => 1 << 38,
            "BPF" => 1 << 39,
            other => panic!("{other}"),
        })
        .fold(0, |a, b| a | b)
}

/// A field of /proc/PID/status.
fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// The host pid of a running container's first process.
fn container_pid(name: &str) -> u32 {
    let out = integration::docker::docker(&["inspect", "--format", "{{.State.Pid}}", name]);
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid for container {name}"))
}

#[test]
fn the_image_counts_a_transfer_on_the_host_exactly_with_three_capabilities() {
    privilege::require_root();
    let name = container_name("transfer");
    let mut agent = agent_in_container(&name);
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 3 << 20, 1 << 20);
    // The agent sees the host's processes (--pid host): this test's own
    // flows, by this process's pid, on both ends.
    agent.assert_transfer_counted(&truth);

    // The flowtel process in the container: bounded by exactly the three,
    // none left in effect once attached, no new privileges, our seccomp
    // filter.
    let pid = container_pid(&name);
    assert!(
        status_field(pid, "Name").starts_with("flowtel"),
        "pid {pid} is not flowtel"
    );
    let hex = |field: &str| u64::from_str_radix(&status_field(pid, field), 16).unwrap();
    assert_eq!(
        hex("CapBnd"),
        capability_bits(&CAPABILITIES),
        "bounding set: exactly {CAPABILITIES:?}"
    );
    assert_eq!(hex("CapEff"), 0, "dropped once attached");
    assert_eq!(hex("CapPrm"), 0, "dropped once attached");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "a seccomp filter");

    let health = agent.health();
    let features = &health.last().expect("health records").features;
    for feature in ["tcp connections", "tcp live bytes", "udp", "dns", "nat"] {
        assert_eq!(
            features.get(feature).map(String::as_str),
            Some("on"),
            "{feature}: {features:?}"
        );
    }
    agent.stop();
}

#[test]
fn flowtel_check_in_the_image_says_what_the_container_cannot_do() {
    privilege::require_root();
    let (image, grant) = image();
    let name = container_name("check");
    let out: std::process::Output = image::run_command(
        &image,
        grant,
        &name,
        &["check", "--config", "/etc/flowtel/flowtel.yaml"],
    )
    .output()
    .expect("docker run ... check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("flowtel check in the container:\n{stdout}");
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} line: {stdout}"))
            .to_owned()
    };
    assert_eq!(line("privileges"), "privileges    ok");
    assert_eq!(line("cgroup v2"), "cgroup v2     /host/sys/fs/cgroup");
    assert!(
        line("namespaces").contains(
            "flowtel's own network namespace only: no CAP_SYS_ADMIN to enter the others (setns)"
        ),
        "{stdout}"
    );
    for feature in ["tcp live bytes", "existing connections", "nat"] {
        let row = line(&format!("  {feature} "));
        assert!(
            row.contains(" on ") && row.contains("in flowtel's own network namespace only"),
            "{row}"
        );
    }
    assert!(
        line("containers").contains("names off"),
        "the image's configuration turns container names off: {stdout}"
    );
    assert_eq!(line("result"), "result        flowtel run would work");
}

#[test]
fn docker_20_10s_default_seccomp_profile_is_why_flowtel_ships_its_own() {
    privilege::require_root();
    let (image, grant) = image();
    let name = container_name("default-seccomp");
    let out = image::run_command_with(
        &image,
        grant,
        &name,
        None,
        &["check", "--config", "/etc/flowtel/flowtel.yaml"],
    )
    .output()
    .expect("docker run ... check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    match grant {
        // Docker 20.10: its default profile allows bpf(2) only to
        // CAP_SYS_ADMIN, whatever capabilities the container holds.
        Grant::Runtime => {
            assert_eq!(out.status.code(), Some(1), "{stdout}");
            assert!(
                stdout.contains(
                    "programs      refused: loading the eBPF object: map error: failed to create map"
                ),
                "{stdout}"
            );
        }
        // Docker 23.0 and later allow it to CAP_BPF.
        Grant::CapAdd => assert!(out.status.success(), "{stdout}"),
    }
}

/// What the namespace's thread is told to do with its connection.
enum Step {
    Move(usize, usize, mpsc::Sender<()>),
    Close,
}

#[test]
fn a_connection_in_another_namespace_counts_at_its_close_exactly() {
    privilege::require_root();
    let ns = NetNs::create("container");
    let name = container_name("netns");
    let mut agent = agent_in_container(&name);
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
    let port = port_rx.recv().unwrap();
    let (done, moved) = mpsc::channel();
    steps.send(Step::Move(300_000, 40_000, done)).unwrap();
    moved.recv().unwrap();
    // Polls go by: the agent cannot enter the namespace, says so, and
    // shows none of the open connection's bytes yet.
    agent.wait_polls(10);
    let flow = FlowFilter::this_process()
        .tcp()
        .namespace(ns.inode())
        .outgoing()
        .destination_port(port);
    let open = agent.sum(&flow);
    assert_eq!(
        (open.bytes_sent, open.bytes_received),
        (0, 0),
        "no live bytes from another namespace in a container"
    );
    let unreachable = agent
        .health()
        .iter()
        .map(|h| h.namespaces_unreachable)
        .max()
        .unwrap_or(0);
    assert!(
        unreachable >= 1,
        "the health records say a namespace was unreachable"
    );
    // At the close, every byte.
    steps.send(Step::Close).unwrap();
    thread.join().unwrap();
    let closed = agent.wait_for_totals(&flow, |t| t.connections_closed >= 1);
    assert_eq!(
        (closed.bytes_sent, closed.bytes_received),
        (300_000, 40_000),
        "counted at the close, exactly"
    );
    agent.stop();
}

#[test]
fn the_debian_base_is_kept_by_name() {
    privilege::require_root();
    image();
    let out = Command::new("bash")
        .arg(image::repository().join("integration/container/debian-base.sh"))
        .arg(image::BASE)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{}: cached", image::BASE),
        "made once, then reused"
    );
}
