//! What knowing many containers costs the agent: its RSS and poll time
//! with 1,000 containers known (1,000 container cgroups in the cgroup-v2
//! tree, and a Docker API stand-in listing 1,000 containers with 5 labels
//! each), against the same agent knowing none, one after the other in one
//! run.
//!
//! The stand-in speaks the Docker Engine API's HTTP over a Unix socket:
//! `GET /containers/json` and an `/events` stream that stays open. No
//! real daemon can hold 1,000 containers on this machine.
//!
//! `cargo bench --bench names` as root (see BENCHMARKS.md). Environment:
//! `FLOWTEL_NAMES_CONTAINERS` (default 1000), `FLOWTEL_NAMES_SECONDS`
//! (default 20, per agent).

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "shared/mod.rs"]
mod shared;

use integration::agent::{Agent, READY_LINE};
use shared::{env, poll_duration};

fn container_id(n: u64) -> String {
    format!("{:016x}{:048x}", 0x0f10_e7e1_u64, n)
}

/// The Docker API stand-in's answer to a container list.
fn container_list(containers: u64) -> String {
    let entries: Vec<String> = (0..containers)
        .map(|n| {
            format!(
                r#"{{"Id":"{}","Names":["/bench-{n}"],"Image":"registry:5000/bench/app-{}:1.{n}","Labels":{{"team":"t{}","app":"a{n}","tier":"backend","version":"1.{n}","owner":"o{}"}}}}"#,
                container_id(n),
                n % 50,
                n % 20,
                n % 7
            )
        })
        .collect();
    format!("[{}]", entries.join(","))
}

/// Serves the stand-in on `socket` until the process ends; counts the
/// lists it answered.
fn serve_docker_api(socket: &Path, containers: u64) -> Arc<AtomicU64> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).expect("bind the Docker API stand-in");
    let lists = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&lists);
    let body = container_list(containers);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (body, counted) = (body.clone(), Arc::clone(&counted));
            std::thread::spawn(move || {
                let mut request = [0u8; 8192];
                let n = stream.read(&mut request).unwrap_or(0);
                let line = String::from_utf8_lossy(&request[..n]).into_owned();
                if line.contains("/containers/json") {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    counted.fetch_add(1, Ordering::Relaxed);
                } else if line.contains("/events") {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                    );
                    // Held open, silent: no container changes.
                    std::thread::sleep(Duration::from_secs(3600));
                }
            });
        }
    });
    lists
}

/// 1,000 (or `containers`) Docker-shaped cgroups under `root`.
struct Cgroups {
    dir: PathBuf,
    made: Vec<PathBuf>,
}

impl Cgroups {
    fn make(root: &Path, containers: u64) -> Cgroups {
        let dir = root.join("flowtel-bench-names");
        std::fs::create_dir_all(&dir).expect("make the bench's cgroup");
        let made = (0..containers)
            .map(|n| {
                let path = dir.join(format!("docker-{}.scope", container_id(n)));
                std::fs::create_dir_all(&path).expect("make a container cgroup");
                path
            })
            .collect();
        Cgroups { dir, made }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for path in &self.made {
            let _ = std::fs::remove_dir(path);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Runs an agent with `config` for `seconds` and reports its RSS and median
/// poll, with what it said about the containers it found.
fn measure(name: &str, config: &Path, seconds: u64) -> (u64, Duration) {
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    // Debug level: the poll lines.
    command
        .env("RUST_LOG", "info,flowtel=debug,receiver=debug")
        .args(["run", "--format", "json", "--poll-interval", "1s"])
        .arg("--config")
        .arg(config);
    let agent = Agent::launch_quiet(command, Duration::from_secs(1));
    let before_ready = agent
        .stderr()
        .iter()
        .position(|line| line.contains(READY_LINE))
        .expect("the agent's readiness line");
    print_container_lines(&agent.stderr()[..before_ready]);
    println!("  agent ready in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_secs(seconds));
    let rss = agent.rss_kib();
    let log = agent.stderr();
    let mut polls: Vec<Duration> = log.iter().filter_map(|l| poll_duration(l)).collect();
    print_container_lines(&log[before_ready..]);
    polls.sort();
    let poll = polls.get(polls.len() / 2).copied().unwrap_or_default();
    println!(
        "{name}: RSS {:.1} MiB, median poll {poll:?} ({} polls)",
        rss as f64 / 1024.0,
        polls.len()
    );
    (rss, poll)
}

/// The agent's lines about the containers it found and named.
fn print_container_lines(log: &[String]) {
    for line in log {
        if poll_duration(line).is_none()
            && (line.contains("container cgroups found") || line.contains("container names:"))
        {
            println!("  agent: {}", line.trim());
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters nothing.
    let containers = env("FLOWTEL_NAMES_CONTAINERS", 1000);
    let seconds = env("FLOWTEL_NAMES_SECONDS", 20);
    let dir = std::env::temp_dir().join(format!("flowtel-bench-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("docker.sock");
    let lists = serve_docker_api(&socket, containers);
    let none = dir.join("none.yaml");
    std::fs::write(
        &none,
        "processor:\n  containers: {docker: false, containerd: false}\n",
    )
    .expect("write config");
    let known = dir.join("known.yaml");
    std::fs::write(
        &known,
        format!(
            "processor:\n  containers: {{containerd: false, docker_socket: {}}}\n",
            socket.display()
        ),
    )
    .expect("write config");

    println!("## {containers} containers known against none, {seconds} s each");
    let (rss_none, poll_none) = measure("no containers", &none, seconds);
    let root = receiver::cgroup_v2_root(None).expect("a cgroup-v2 mount");
    let made = Instant::now();
    let cgroups = Cgroups::make(&root, containers);
    println!(
        "made {containers} container cgroups in {:?}",
        made.elapsed()
    );
    let (rss_known, poll_known) = measure(&format!("{containers} containers"), &known, seconds);
    assert!(
        lists.load(Ordering::Relaxed) > 0,
        "the agent listed the stand-in's containers"
    );
    drop(cgroups);
    println!(
        "RSS grew by {:.1} MiB; the median poll by {:?}",
        (rss_known as f64 - rss_none as f64) / 1024.0,
        poll_known.saturating_sub(poll_none)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
