//! The agent's own cost under connection churn: 10,000 connections held
//! open plus 2,000 new short connections per second for 60 s, all on
//! loopback, with `flowtel run` watching. Reports the agent's CPU (user +
//! system, percent of one core, from /proc/PID/stat), its peak RSS (VmHWM)
//! and its poll time; then the same with 100,000 connections held open
//! (connection map raised to fit).
//!
//! `cargo bench --bench churn` as root (see BENCHMARKS.md). Environment:
//! `FLOWTEL_CHURN_SECONDS` (default 60), `FLOWTEL_CHURN_HELD` (default
//! 10000), `FLOWTEL_CHURN_RATE` (default 2000), `FLOWTEL_CHURN_BIG` (default
//! 100000; 0 skips the second run).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "shared/mod.rs"]
mod shared;

use integration::agent::Agent;
use shared::env;
use shared::load::{churn, serve};

/// Connections one worker process holds: both ends are its sockets, and
/// its open-file limit may be as low as 20,000.
const PER_WORKER: u64 = 8_000;

/// Raises the soft open-file limit to the hard one.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// A worker process: holds `count` connections to its own listener until
/// its stdin closes.
fn worker(count: u64) {
    raise_nofile();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let server = listener.local_addr().expect("bound");
    let stop = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || serve(listener, true, stop));
    let connections = hold(server, count);
    println!("held");
    let _ = std::io::stdin().read(&mut [0u8; 1]);
    drop(connections);
}

/// Starts workers holding `total` connections between them and returns
/// once all hold theirs; dropping the children's stdin releases them.
fn hold_in_workers(total: u64) -> Vec<Child> {
    let mut workers = Vec::new();
    let mut left = total;
    while left > 0 {
        let count = left.min(PER_WORKER);
        left -= count;
        let child = Command::new(std::env::current_exe().expect("the bench binary"))
            .env("FLOWTEL_CHURN_WORKER", count.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start a worker");
        workers.push(child);
    }
    for child in &mut workers {
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped"))
            .read_line(&mut line)
            .expect("worker output");
        assert_eq!(
            line.trim(),
            "held",
            "a worker failed to hold its connections"
        );
    }
    workers
}

/// Holds `count` idle connections to `server` (each has said hello once).
fn hold(server: SocketAddr, count: u64) -> Vec<TcpStream> {
    (0..count)
        .map(|_| {
            let mut stream = TcpStream::connect(server).expect("connect a held connection");
            stream.write_all(b"hello").expect("hello");
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).expect("echo");
            stream
        })
        .collect()
}

/// `flowtel run` with room for `max_connections`, its log at debug level
/// (the poll lines), once it watches.
fn start_agent(max_connections: u64) -> Agent {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command
        .env("RUST_LOG", "info,flowtel=debug,receiver=debug")
        .args(["run", "--format", "json", "--poll-interval", "10s"])
        .args(["--max-connections", &max_connections.to_string()]);
    Agent::launch_quiet(command, Duration::from_secs(10))
}

/// The agent's last log line that says `what`, from there on: "poll read
/// N connections in T, processed in U", or the poll's phases.
fn last_line(agent: &Agent, what: &str) -> Option<String> {
    agent
        .stderr()
        .iter()
        .rev()
        .find_map(|line| Some(line[line.find(what)?..].to_owned()))
}

fn run(held: u64, rate: u64, seconds: u64) {
    println!("\n## {held} connections held open, {rate} new connections/s, {seconds} s");
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let server = listener.local_addr().expect("bound");
    let stop = Arc::new(AtomicBool::new(false));
    let serving = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || serve(listener, false, stop))
    };
    // Room for every socket, both ends, plus the churn in flight.
    // Stopped when dropped, also on a panic: an agent left running would
    // skew every later measurement on this machine.
    let mut agent = start_agent((2 * held + 20 * rate).max(65536));
    let opened = Instant::now();
    let workers = hold_in_workers(held);
    println!("opened {held} connections in {:?}", opened.elapsed());

    let done = Arc::new(AtomicU64::new(0));
    let churning = {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        std::thread::spawn(move || churn(server, rate, stop, done))
    };
    let ticks_per_second = 100.0; // USER_HZ on Linux
    let start_ticks = agent.cpu_ticks();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let cpu_seconds = (agent.cpu_ticks() - start_ticks) as f64 / ticks_per_second;
    let elapsed = started.elapsed().as_secs_f64();
    let rss_now = agent.rss_kib();
    let rss_peak = agent.peak_rss_kib();
    stop.store(true, Ordering::Relaxed);
    churning.join().expect("churn thread");
    let made = done.load(Ordering::Relaxed);
    println!(
        "short connections made: {made} ({:.0}/s)",
        made as f64 / elapsed
    );
    println!(
        "flowtel CPU: {:.2} % of one core (user+sys {:.2} s over {:.1} s)",
        100.0 * cpu_seconds / elapsed,
        cpu_seconds,
        elapsed
    );
    println!(
        "flowtel RSS: {:.1} MiB now, {:.1} MiB peak",
        rss_now as f64 / 1024.0,
        rss_peak as f64 / 1024.0
    );
    for what in ["poll read", "poll phases"] {
        if let Some(last) = last_line(&agent, what) {
            println!("flowtel's last {last}");
        }
    }
    agent.stop();
    floor_walk();
    for mut worker in workers {
        drop(worker.stdin.take());
        let _ = worker.wait();
    }
    let _ = TcpStream::connect(server); // wake the accept loop
    let _ = serving.join();
}

/// The kernel's own cost of walking this namespace's TCP sockets: an empty
/// `iter/tcp` program (benches/floor_walk.bpf.c) pinned by bpftool and read
/// to its end, five times; the median against the sockets open.
fn floor_walk() {
    let pin = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/flowtel-bench-walk-{}",
        std::process::id()
    ));
    shared::bpf_object::pin_with_bpftool("floor_walk.bpf.c", &["iter", "pin"], &pin);
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let began = Instant::now();
            std::fs::read(&pin).expect("run the walk");
            began.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let _ = std::fs::remove_file(&pin);
    runs.sort_by(f64::total_cmp);
    let sockets = tcp_sockets_in_use();
    println!(
        "empty TCP walk over {sockets} sockets: {:.1} ms (median of 5), {:.2} µs a socket",
        runs[2],
        runs[2] * 1e3 / sockets.max(1) as f64
    );
}

/// `TCP: inuse N` of /proc/net/sockstat.
fn tcp_sockets_in_use() -> u64 {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").expect("sockstat");
    sockstat
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("TCP: inuse ")?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn main() {
    if let Ok(count) = std::env::var("FLOWTEL_CHURN_WORKER") {
        worker(count.parse().expect("a connection count"));
        return;
    }
    raise_nofile();
    let seconds = env("FLOWTEL_CHURN_SECONDS", 60);
    let held = env("FLOWTEL_CHURN_HELD", 10_000);
    let rate = env("FLOWTEL_CHURN_RATE", 2_000);
    let big = env("FLOWTEL_CHURN_BIG", 100_000);
    println!("# flowtel's own cost under churn");
    run(held, rate, seconds);
    if big > 0 {
        run(big, rate, seconds.min(30));
    }
}
