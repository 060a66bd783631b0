//! What following conntrack costs the agent, and whether it keeps up:
//!
//! 1. 100,000 conntrack entries (half of them DNAT'd) in a network
//!    namespace with a tracked connection, against the same namespace with
//!    none: the agent's RSS and its median poll, one agent after the other
//!    in one run. The entries are written by `conntrack -R` (one batch).
//! 2. 2,000 new connections a second for 15 s from a client namespace,
//!    DNAT'd by nftables in its output chain to a server namespace: every
//!    one of them counted on a client flow that names the real server
//!    (`destination.translated.*`) and on a server flow that names the
//!    address dialled (`source.translated.*`); event overflows
//!    (`nat_resyncs`) and table drops (`nat_entries_dropped`) reported.
//!
//! `cargo bench --bench nat` as root (see BENCHMARKS.md). Environment:
//! `FLOWTEL_NAT_ENTRIES` (default 100000; 0 skips part 1), `FLOWTEL_NAT_SECONDS` (polls
//! measured per agent in part 1, default 15), `FLOWTEL_NAT_RATE` (default
//! 2000), `FLOWTEL_NAT_RATE_SECONDS` (default 15; 0 skips part 2).

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::agent::Agent;
use integration::nat::{dnat, pair};
use integration::netns::NetNs;
use integration::privilege;
use integration::record::{Flow, FlowFilter, Record};

#[path = "shared/mod.rs"]
mod shared;

use shared::load::{churn, serve};
use shared::{env, poll_duration};

const POLL: Duration = Duration::from_secs(1);

/// Part 2's addresses: the client dials VIRTUAL, its output chain sends
/// the connection to SERVER. Outside the tests' 10.253/16, so that no
/// test's entry in another namespace can answer a lookup of ours.
const VIRTUAL: &str = "10.254.99.9:80";
const SERVER: &str = "10.254.21.2:8080";
const CLIENT_NET: &str = "10.254.21";

/// The agent's debug line when a dump of a namespace is complete.
const DUMPED: &str = "conntrack: namespace dumped";

fn main() {
    privilege::require_root();
    let entries = env("FLOWTEL_NAT_ENTRIES", 100_000);
    let polls = env("FLOWTEL_NAT_SECONDS", 15);
    let rate = env("FLOWTEL_NAT_RATE", 2_000);
    let rate_seconds = env("FLOWTEL_NAT_RATE_SECONDS", 15);
    // Room for ours and for what other namespaces on the host hold.
    let _limit = ConntrackLimit::raise(entries + rate * rate_seconds + 65_536);
    println!("# flowtel's conntrack reader");
    if entries > 0 {
        held_entries(entries, polls);
    }
    if rate_seconds > 0 {
        new_connections(rate, rate_seconds);
    }
}

/// The agent as the bench starts it: JSON records, polls every second,
/// the debug lines (poll times, dumps).
fn start_agent() -> Agent {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command.env("RUST_LOG", "info,flowtel=debug,receiver=debug");
    Agent::start_command(command, POLL)
}

/// nf_conntrack_max and the hash size raised to at least what the bench
/// needs; restored on drop (also on a panic).
struct ConntrackLimit {
    restore: Vec<(&'static str, String)>,
}

const CONNTRACK_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";
const CONNTRACK_BUCKETS: &str = "/proc/sys/net/netfilter/nf_conntrack_buckets";

impl ConntrackLimit {
    fn raise(needed: u64) -> ConntrackLimit {
        let mut restore = Vec::new();
        for path in [CONNTRACK_MAX, CONNTRACK_BUCKETS] {
            let old = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("{path} (is nf_conntrack loaded?): {e}"));
            let value: u64 = old.trim().parse().expect("a number");
            if value < needed {
                std::fs::write(path, needed.to_string())
                    .unwrap_or_else(|e| panic!("raise {path} to {needed}: {e}"));
                println!("{path}: {value} raised to {needed} for the run");
                restore.push((path, old.trim().to_owned()));
            }
        }
        ConntrackLimit { restore }
    }
}

impl Drop for ConntrackLimit {
    fn drop(&mut self) {
        for (path, old) in &self.restore {
            let _ = std::fs::write(path, old);
        }
    }
}

/// Waits until the agent's reader has dumped `ns`; returns how many
/// translated connections it held then.
fn wait_for_dump(agent: &Agent, ns: &NetNs) -> u64 {
    let inode = format!("inode={}", ns.inode());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dumped = agent
            .stderr()
            .iter()
            .find(|line| line.contains(DUMPED) && line.contains(&inode))
            .cloned();
        if let Some(line) = dumped {
            return field(&line, "held=").expect("held= in the dump line");
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not dump namespace {} within 60 s",
            ns.name()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The number after `name` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let rest = &line[line.find(name)? + name.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// What one agent cost over some polls.
struct Cost {
    rss_kib: u64,
    peak_kib: u64,
    median_poll: Duration,
    polls: usize,
}

impl Cost {
    /// Over the next `polls` polls of `agent`.
    fn measure(agent: &mut Agent, polls: u64) -> Cost {
        let from = agent.stderr().len();
        for _ in 0..polls {
            agent.wait_polls(1);
        }
        let mut took: Vec<Duration> = agent.stderr()[from..]
            .iter()
            .filter_map(|line| poll_duration(line))
            .collect();
        took.sort();
        Cost {
            rss_kib: agent.status_kib("VmRSS"),
            peak_kib: agent.status_kib("VmHWM"),
            median_poll: took.get(took.len() / 2).copied().unwrap_or_default(),
            polls: took.len(),
        }
    }

    fn print(&self, name: &str) {
        println!(
            "{name}: RSS {:.1} MiB (peak {:.1} MiB), median poll {:?} ({} polls)",
            mib(self.rss_kib),
            mib(self.peak_kib),
            self.median_poll,
            self.polls
        );
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Part 1: the agent with `entries` conntrack entries in a namespace
/// against the agent with none there.
fn held_entries(entries: u64, polls: u64) {
    println!("\n## {entries} conntrack entries (half DNAT'd) against none, {polls} polls each");
    let ns = NetNs::create("ftnb-held");
    let _connection = hold_a_connection(&ns);

    let none = measure_agent(&ns, polls, "no entries");
    let made = Instant::now();
    write_entries(&ns, entries);
    println!(
        "wrote {} conntrack entries in {:?}",
        count_entries(&ns),
        made.elapsed()
    );
    let with = measure_agent(&ns, polls, &format!("{entries} entries"));

    let grew_mib = (with.rss_kib as f64 - none.rss_kib as f64) / 1024.0;
    let poll_grew = with.median_poll.saturating_sub(none.median_poll);
    println!(
        "RSS grew by {grew_mib:.1} MiB (target < 64 MiB: {}); peak by {:.1} MiB",
        verdict(grew_mib < 64.0),
        (with.peak_kib as f64 - none.peak_kib as f64) / 1024.0
    );
    println!(
        "median poll grew by {poll_grew:?} (target < 20 ms: {})",
        verdict(poll_grew < Duration::from_millis(20))
    );
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Starts an agent, waits for its dump of `ns`, measures it, stops it.
fn measure_agent(ns: &NetNs, polls: u64, name: &str) -> Cost {
    let started = Instant::now();
    let mut agent = start_agent();
    let held = wait_for_dump(&agent, ns);
    println!(
        "{name}: namespace dumped {:?} after the start, {held} translated connections held",
        started.elapsed()
    );
    let cost = Cost::measure(&mut agent, polls);
    cost.print(name);
    cost
}

/// A TCP connection inside `ns`, both ends held: flowtel tracks it there.
fn hold_a_connection(ns: &NetNs) -> (TcpStream, TcpStream) {
    ns.spawn(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let near = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (far, _) = listener.accept().expect("accept");
        (near, far)
    })
    .join()
    .expect("the held connection")
}

/// `count` established TCP entries in `ns`, every other one DNAT'd
/// (its reply comes from another address and port than was dialled),
/// written by one `conntrack -R`.
fn write_entries(ns: &NetNs, count: u64) {
    let path = std::env::temp_dir().join(format!("ftnb-conntrack-{}", std::process::id()));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("a temp file"));
    for n in 0..count {
        writeln!(file, "{}", conntrack_insert(n)).expect("write the entries");
    }
    drop(file);
    let status = ns_command(ns, "conntrack")
        .arg("-R")
        .arg(&path)
        .status()
        .expect("run conntrack (Debian's conntrack package)");
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "conntrack -R failed: {status}");
}

/// The `conntrack -I` arguments of entry `n`: a client of its own in
/// 10.240.0.0/12, to the virtual address (DNAT'd) or straight to a server.
fn conntrack_insert(n: u64) -> String {
    let client = Ipv4Addr::from(0x0af0_0000 + n as u32);
    let port = 40_000 + n % 20_000;
    let common = format!(
        "-I -p tcp -s {client} --sport {port} --dport 80 --state ESTABLISHED -t 600 -u SEEN_REPLY,ASSURED"
    );
    if n.is_multiple_of(2) {
        format!("{common} -d 10.254.98.2")
    } else {
        format!(
            "{common} -d 10.254.99.9 -r 10.254.98.2 -q {client} --reply-port-src 8080 --reply-port-dst {port}"
        )
    }
}

/// `program` run inside `ns`.
fn ns_command(ns: &NetNs, program: &str) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns.name(), program]);
    command
}

/// The entries `conntrack -C` counts in `ns`.
fn count_entries(ns: &NetNs) -> u64 {
    let output = ns_command(ns, "conntrack")
        .arg("-C")
        .output()
        .expect("run conntrack -C");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("a count from conntrack -C")
}

/// Part 2: `rate` new DNAT'd connections a second for `seconds`, each one
/// found on the agent's flows with its translation.
fn new_connections(rate: u64, seconds: u64) {
    println!("\n## {rate} new DNAT'd connections/s for {seconds} s");
    let [client, server] = pair("ftnb-rate", CLIENT_NET);
    dnat(&client, "output", "tcp", VIRTUAL, SERVER);
    // Every connection of the run gets a port of its own, TIME_WAIT or not.
    client.exec(
        "sysctl",
        &["-qw", "net.ipv4.ip_local_port_range=1024 65000"],
    );
    let mut agent = start_agent();
    wait_for_dump(&agent, &client);
    agent.wait_polls(1);

    let made = make_connections(&client, &server, rate, seconds);
    println!(
        "connections made: {made} ({:.0}/s)",
        made as f64 / seconds as f64
    );

    let this = || FlowFilter::this_process().tcp();
    let client_flows = this()
        .outgoing()
        .namespace(client.inode())
        .destination_port(80);
    let server_flows = this()
        .incoming()
        .namespace(server.inode())
        .source_port(8080)
        .destination_address(format!("{CLIENT_NET}.1").parse().unwrap());
    let ends = [
        ("client", &client_flows, "destination", SERVER),
        ("server", &server_flows, "source", VIRTUAL),
    ];
    let mut missed = 0;
    for (end, filter, translated, want) in ends {
        let closed = agent.wait_for_totals(filter, |t| t.connections_closed >= made);
        let flows = agent.poll_flows(filter);
        let (with, without) = closed_by_translation(&flows, translated, want.parse().unwrap());
        println!(
            "{end} flows: {} connections closed, {with} with {translated}.translated = {want}, {without} without",
            closed.connections_closed
        );
        missed += made.saturating_sub(with);
    }
    let health = last_health(&agent);
    let resyncs = health_figure(&health, "nat_resyncs");
    let dropped = health_figure(&health, "nat_entries_dropped");
    println!("nat_resyncs {resyncs}, nat_entries_dropped {dropped}");
    println!(
        "every connection followed with its translation (target): {}, {missed} missed",
        verdict(missed == 0)
    );
}

/// Serves SERVER in `server` and opens `rate` connections a second from
/// `client` to VIRTUAL for `seconds`; returns how many exchanged their
/// bytes.
fn make_connections(client: &NetNs, server: &NetNs, rate: u64, seconds: u64) -> u64 {
    let listener = server
        .spawn(|| TcpListener::bind(SERVER).expect("listen"))
        .join()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let serving = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || serve(listener, false, stop))
    };
    let churning = {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        let virtual_server = VIRTUAL.parse().unwrap();
        client.spawn(move || churn(virtual_server, rate, stop, done))
    };
    // The load's duration: nothing to wait for.
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    churning.join().expect("the client thread");
    // Wakes the accept loop (unless the last connection did) from the
    // server's own namespace: neither NAT'd nor from the client, so on no
    // flow counted here.
    let _ = server.spawn(|| TcpStream::connect(SERVER)).join();
    serving.join().expect("the server thread");
    done.load(Ordering::Relaxed)
}

/// Connections closed on `flows` whose `<end>.translated.*` is `want`,
/// and on the others.
fn closed_by_translation(flows: &[Flow], end: &str, want: SocketAddr) -> (u64, u64) {
    let (mut with, mut without) = (0, 0);
    for flow in flows {
        if translated(flow, end) == Some(want) {
            with += flow.connections_closed;
        } else {
            without += flow.connections_closed;
        }
    }
    (with, without)
}

/// A flow's `<end>.translated.address` and `.port`.
fn translated(flow: &Flow, end: &str) -> Option<SocketAddr> {
    let text = |name: &str| {
        let value = flow
            .attributes
            .other
            .get(&format!("{end}.translated.{name}"))?;
        Some(value.to_string().trim_matches('"').to_owned())
    };
    let address = text("address")?.parse().ok()?;
    Some(SocketAddr::new(address, text("port")?.parse().ok()?))
}

fn last_health(agent: &Agent) -> serde_json::Value {
    agent
        .records()
        .into_iter()
        .rev()
        .find_map(|record| match record {
            Record::Health(health) => Some(health),
            _ => None,
        })
        .expect("a health record")
}

fn health_figure(health: &serde_json::Value, name: &str) -> u64 {
    health
        .get(name)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("no {name} in the health record {health}"))
}
