//! Containers under a real Docker daemon (Debian's docker.io): a process
//! in a container is named by the container's name, image and labels, even
//! one that lives a few milliseconds in a container removed at once, with
//! exact bytes; container rules match those names; a runtime that is
//! missing, answers garbage or hangs leaves the names absent, is counted,
//! and never stops the counting.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::agent::Agent;
use integration::docker::{self, PAYLOAD, PAYLOAD_BYTES};
use integration::privilege;
use integration::record::{Flow, Record};
use integration::traffic::tcp;
use serde_json::Value;

/// What the test's listener received from one connection.
struct Received {
    bytes: u64,
    /// From the accept to the sender's close.
    lasted: Duration,
}

/// A loopback port that accepts one connection and reads it to its end.
fn listen_once() -> (u16, std::thread::JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let accepted = Instant::now();
        let mut bytes = 0u64;
        let mut buffer = [0u8; 65536];
        loop {
            match stream.read(&mut buffer).expect("read") {
                0 => break,
                n => bytes += n as u64,
            }
        }
        Received {
            bytes,
            lasted: accepted.elapsed(),
        }
    });
    (port, receiver)
}

/// An agent with a configuration file of `text`, polling every second.
fn agent_with(name: &str, text: &str) -> Agent {
    let config = config_file(name, text);
    Agent::start_with_config(
        env!("CARGO_BIN_EXE_flowtel"),
        Duration::from_secs(1),
        &config,
    )
}

fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowtel-containers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// The window flows of connections to `port`.
fn window_flows_to(agent: &Agent, port: u16) -> Vec<Flow> {
    agent
        .records()
        .into_iter()
        .filter_map(|record| match record {
            Record::Window(flow) if flow.attributes.destination_port == Some(port) => Some(flow),
            _ => None,
        })
        .collect()
}

fn text<'a>(flow: &'a Flow, name: &str) -> Option<&'a str> {
    flow.attributes.other.get(name).and_then(Value::as_str)
}

#[test]
fn a_container_process_that_lives_milliseconds_is_named_with_exact_bytes() {
    privilege::require_root();
    docker::ready();
    let mut agent = agent_with(
        "named.yaml",
        "processor:\n  interval: 1s\n  containers: {containerd: false}\n  mappings:\n    containers:\n      - {on: label.team, match: '^payments$', service: billing}\n",
    );
    let (port, receiver) = listen_once();
    let name = format!("flowtel-quick-{}", std::process::id());
    docker::run(
        &["--name", &name, "--label", "team=payments"],
        &format!("nc 127.0.0.1 {port} < {PAYLOAD}"),
    );
    let received = receiver.join().expect("listener");
    assert_eq!(
        received.bytes, PAYLOAD_BYTES,
        "the listener got the payload"
    );
    assert!(
        received.lasted < Duration::from_millis(100),
        "the sender's connection lasted {:?}: not a short-lived process",
        received.lasted
    );

    agent.wait_until("the container's connection in a window", |records| {
        records.iter().any(|r| {
            matches!(r, Record::Window(f) if f.attributes.destination_port == Some(port) && f.connections_closed > 0)
        })
    });
    let flows = window_flows_to(&agent, port);
    let sent: u64 = flows.iter().map(|f| f.bytes_sent).sum();
    assert_eq!(
        sent, PAYLOAD_BYTES,
        "bytes sent by the container: {flows:?}"
    );
    for flow in &flows {
        assert_eq!(
            text(flow, "source.container.name"),
            Some(name.as_str()),
            "{flow:?}"
        );
        assert_eq!(
            text(flow, "source.container.image.name"),
            Some("flowtel-test-busybox")
        );
        assert_eq!(text(flow, "source.container.image.tag"), Some("1.0"));
        assert_eq!(text(flow, "source.container.label.team"), Some("payments"));
        assert_eq!(
            text(flow, "source.service"),
            Some("billing"),
            "by the label rule"
        );
        let id = flow.attributes.container_id.as_deref().unwrap_or_default();
        assert_eq!(id.len(), 64, "the container id: {flow:?}");
    }
    assert!(
        agent
            .health()
            .iter()
            .all(|h| h.container_runtime_errors == 0 && h.cgroups_lost == 0),
        "no runtime error or lost cgroup"
    );
}

/// A Unix socket standing in for a broken runtime: it answers every
/// request with an error and garbage, or (`hang`) never answers.
fn broken_runtime(path: &std::path::Path, hang: bool) {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind the fake runtime");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            if hang {
                held.push(stream);
                continue;
            }
            let _ = stream.write_all(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 9\r\n\r\nnot json!",
            );
        }
    });
}

#[test]
fn a_missing_broken_or_hanging_runtime_leaves_names_absent_and_bytes_exact() {
    privilege::require_root();
    let dir = std::env::temp_dir().join(format!("flowtel-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (broken, hanging) = (dir.join("broken.sock"), dir.join("hanging.sock"));
    broken_runtime(&broken, false);
    broken_runtime(&hanging, true);
    for socket in [dir.join("missing.sock"), broken, hanging] {
        let mut agent = agent_with(
            "broken.yaml",
            &format!(
                "processor:\n  interval: 1h\n  containers:\n    containerd: false\n    docker_socket: {}\n",
                socket.display()
            ),
        );
        let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 4096);
        agent.assert_transfer_counted(&truth);
        agent.wait_until("a runtime error counted", |records| {
            records
                .iter()
                .filter_map(Record::as_health)
                .any(|h| h.container_runtime_errors > 0)
        });
        let told: Vec<String> = agent
            .stderr()
            .into_iter()
            .filter(|line| line.contains("container names: the Docker API"))
            .collect();
        assert_eq!(told.len(), 1, "one line for the failing runtime: {told:?}");
        assert!(told[0].contains(&socket.display().to_string()), "{told:?}");
        assert!(agent.is_running(), "the agent goes on counting");
        agent.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_says_whether_the_docker_api_answers() {
    privilege::require_root();
    docker::ready();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .arg("check")
        .output()
        .expect("run flowtel check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("containers    Docker API at /var/run/docker.sock answers ("),
        "{stdout}"
    );
}

#[test]
fn refused_cgroup_tracepoints_fall_back_to_proc_for_a_live_process() {
    privilege::require_root();
    docker::ready();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command.env("FLOWTEL_TEST_REFUSE_PROGRAMS", "flowtel_cgroup_mkdir");
    let mut agent = Agent::start_command(command, Duration::from_secs(1));
    agent.wait_until("a health record", |records| {
        records.iter().any(|r| r.as_health().is_some())
    });
    let health = agent.health();
    assert_eq!(
        health[0].features.get("containers").map(String::as_str),
        Some("fallback"),
        "{health:?}"
    );

    let (port, receiver) = listen_once();
    // nc lives as long as its input, 3 s: past the next poll, which reads
    // its /proc files.
    docker::run(
        &[],
        &format!("(cat {PAYLOAD}; sleep 3) | nc 127.0.0.1 {port}"),
    );
    let received = receiver.join().expect("listener");
    assert_eq!(received.bytes, PAYLOAD_BYTES);
    agent.wait_until("the container's connection closed", |records| {
        records.iter().any(|r| {
            matches!(r, Record::Poll(f) if f.attributes.destination_port == Some(port) && f.connections_closed > 0)
        })
    });
    let polls: Vec<Flow> = agent
        .records()
        .into_iter()
        .filter_map(|r| match r {
            Record::Poll(f) if f.attributes.destination_port == Some(port) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(
        polls.iter().map(|f| f.bytes_sent).sum::<u64>(),
        PAYLOAD_BYTES
    );
    assert!(
        polls.iter().all(|f| f
            .attributes
            .container_id
            .as_deref()
            .is_some_and(|id| id.len() == 64)),
        "every poll of the live container process has its id from /proc: {polls:?}"
    );
}

#[test]
fn a_containerd_container_is_named_by_containerds_api() {
    privilege::require_root();
    let socket = docker::containerd_ready();
    let mut agent = agent_with(
        "containerd.yaml",
        &format!(
            "processor:\n  interval: 1s\n  containers:\n    docker: false\n    containerd_socket: {}\n    containerd_namespaces: [{}]\n",
            socket.display(),
            docker::CONTAINERD_NAMESPACE
        ),
    );
    let (port, receiver) = listen_once();
    // A CRI-style 64-hex-digit id, and the kubelet's name label.
    let id = format!("{:032x}{:032x}", std::process::id(), port);
    let ran = docker::ctr(
        socket,
        &[
            "run",
            "--rm",
            "--net-host",
            "--label",
            "io.kubernetes.container.name=web",
            "--label",
            "team=payments",
            docker::CONTAINERD_IMAGE,
            &id,
            "sh",
            "-c",
            &format!("nc 127.0.0.1 {port} < {PAYLOAD}"),
        ],
    );
    assert!(
        ran.status.success(),
        "ctr run failed: {}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(receiver.join().expect("listener").bytes, PAYLOAD_BYTES);

    agent.wait_until("the container's connection in a window", |records| {
        records.iter().any(|r| {
            matches!(r, Record::Window(f) if f.attributes.destination_port == Some(port) && f.connections_closed > 0)
        })
    });
    let flows = window_flows_to(&agent, port);
    assert_eq!(
        flows.iter().map(|f| f.bytes_sent).sum::<u64>(),
        PAYLOAD_BYTES
    );
    for flow in &flows {
        assert_eq!(flow.attributes.container_id.as_deref(), Some(id.as_str()));
        assert_eq!(text(flow, "source.container.name"), Some("web"), "{flow:?}");
        assert_eq!(
            text(flow, "source.container.image.name"),
            Some("docker.io/library/flowtel-test-busybox")
        );
        assert_eq!(text(flow, "source.container.image.tag"), Some("1.0"));
        assert_eq!(text(flow, "source.container.label.team"), Some("payments"));
    }
}
