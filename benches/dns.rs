//! What the DNS capture (issue 16) costs the agent: 10,000 UDP queries per
//! second for 10 s from 8 sockets to a local unbound, with `flowtel run` as
//! configured by default and then with `receiver.dns: false`, one agent after
//! the other in one run. Reports each agent's CPU (user + system, percent of
//! one core, from /proc/PID/stat) over the load, the queries the agent
//! counted against those the bench sent and what its health says was lost or
//! malformed, and the mean run time (`kernel.bpf_stats_enabled`) of the
//! programs that capture DNS (its own, and the UDP programs that do it too
//! by default) on packets that are not DNS (UDP datagrams to another port)
//! and on the queries, for both agents (the difference is DNS's share of
//! the UDP programs); then the same programs' own time on a
//! packet that is not DNS for the packet (cgroup_skb) programs, by `bpftool prog run` (BPF_PROG_TEST_RUN, a
//! million runs timed as one, with bpf_stats off), alternated with an empty
//! program on the same hook: the difference is the program's own work.
//!
//! `cargo bench --bench dns` as root (see BENCHMARKS.md). Environment:
//! `FLOWTEL_DNS_SECONDS` (default 10), `FLOWTEL_DNS_RATE` (queries/s,
//! default 10000).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

#[path = "shared/mod.rs"]
mod shared;

use integration::agent::Agent;
use integration::dns::{self, RecordType, Unbound};
use integration::record::Record;
use shared::{env, quantile};

/// Sockets sending queries, each paced at its share of the rate.
const CLIENTS: u64 = 8;
const POLL: Duration = Duration::from_secs(1);
const SERVER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 9, 53));
const NAME: &str = "ok.flowtel";

fn main() {
    let seconds = env("FLOWTEL_DNS_SECONDS", 10);
    let rate = env("FLOWTEL_DNS_RATE", 10_000);
    let unbound = Unbound::start(SERVER, Ipv4Addr::new(192, 0, 2, 7), None);
    let mut stats = BpfStats::enable();

    println!("# DNS capture: {rate} queries/s for {seconds} s from {CLIENTS} sockets to unbound at {SERVER}\n");
    println!("| agent | queries sent | answered | counted by the agent | agent CPU, % of a core | dns_lost | dns_malformed |");
    println!("|---|---|---|---|---|---|---|");
    let mut cpu = BTreeMap::new();
    for (label, receiver) in [
        ("default (DNS captured)", ""),
        ("`receiver.dns: false`", "receiver:\n  dns: false\n"),
    ] {
        let mut agent = start_agent(receiver);
        let before = cpu_seconds(&agent);
        let load = query_load(unbound.server, rate, seconds);
        let used = cpu_seconds(&agent) - before;
        let share = 100.0 * used / load.took.as_secs_f64();
        cpu.insert(label, share);
        let counted = if receiver.is_empty() {
            wait_counted(&mut agent, load.sent)
        } else {
            0
        };
        let health = agent.health();
        let last = health.last().expect("a health record");
        println!(
            "| {label} | {} | {} | {counted} | {share:.2} | {} | {} |",
            load.sent, load.answered, last.dns_lost, last.dns_malformed
        );
        // For both agents: with `receiver.dns: false` the UDP programs are
        // there without DNS's checks, so the difference is DNS's share.
        program_times(&unbound, agent.pid());
        test_run_times(agent.pid(), &mut stats);
        agent.stop();
    }
    let on = cpu["default (DNS captured)"];
    let off = cpu["`receiver.dns: false`"];
    println!(
        "\nDNS capture's own CPU: {:.2} % of a core ({on:.2} against {off:.2})",
        on - off
    );
}

/// `flowtel run` with 2-second windows and `receiver` as the start of its
/// configuration.
fn start_agent(receiver: &str) -> Agent {
    let path = std::env::temp_dir().join(format!("flowtel-bench-dns-{}.yaml", std::process::id()));
    std::fs::write(&path, format!("{receiver}processor:\n  interval: 2s\n")).expect("the config");
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
        .arg(&path);
    let agent = Agent::launch(command, POLL);
    let _ = std::fs::remove_file(&path);
    agent
}

/// The agent's user + system CPU so far, in seconds.
fn cpu_seconds(agent: &Agent) -> f64 {
    // SAFETY: sysconf has no preconditions.
    agent.cpu_ticks() as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct Load {
    sent: u64,
    answered: u64,
    took: Duration,
}

/// `rate` queries per second for `seconds`, from [`CLIENTS`] sockets, each
/// waiting for its answer (up to 1 s) before its next slot.
fn query_load(server: SocketAddr, rate: u64, seconds: u64) -> Load {
    let per_client = rate * seconds / CLIENTS;
    let interval = Duration::from_secs_f64(CLIENTS as f64 / rate as f64);
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
                socket.connect(server).expect("connect to unbound");
                socket
                    .set_read_timeout(Some(Duration::from_secs(1)))
                    .expect("a read timeout");
                let mut answered = 0;
                let mut buffer = [0u8; 512];
                for i in 0..per_client {
                    let slot = started + interval.mul_f64(i as f64);
                    if let Some(wait) = slot.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                    let id = (client as u16) << 12 | (i as u16 & 0x0fff);
                    socket
                        .send(&dns::query(NAME, id, RecordType::A))
                        .expect("send a query");
                    if socket.recv(&mut buffer).is_ok() {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    let answered = clients.into_iter().map(|c| c.join().expect("client")).sum();
    Load {
        sent: per_client * CLIENTS,
        answered,
        took: started.elapsed(),
    }
}

/// Waits until the agent's windows count `sent` requests for [`NAME`] (up to
/// the wait's deadline), and returns what they count.
fn wait_counted(agent: &mut Agent, sent: u64) -> u64 {
    let requests = |records: &[Record]| -> u64 {
        dns::counted(records, SERVER)
            .into_iter()
            .filter(|((name, _, _), _)| name == NAME)
            .map(|(_, c)| c.requests)
            .sum()
    };
    agent.wait_until(&format!("{sent} DNS requests counted"), |records| {
        requests(records) >= sent
    });
    // One more window: nothing counted twice.
    agent.wait_polls(3);
    requests(&agent.records())
}

/// The DNS programs' mean run time on 100,000 datagrams that are not DNS,
/// then on 10,000 queries.
fn program_times(unbound: &Unbound, agent: u32) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("a sink");
    let target = sink.local_addr().unwrap();
    let reader = thread::spawn(move || {
        sink.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buffer = [0u8; 2048];
        while sink.recv(&mut buffer).is_ok() {}
    });
    let before = dns_program_stats(agent);
    let sender = UdpSocket::bind("127.0.0.1:0").expect("a sender");
    for _ in 0..100_000 {
        sender.send_to(&[0u8; 64], target).expect("a datagram");
    }
    reader.join().expect("sink");
    let after_plain = dns_program_stats(agent);
    query_load(unbound.server, 10_000, 1);
    let after_queries = dns_program_stats(agent);
    println!("\n| program | runs on 100,000 non-DNS datagrams (both ends) | ns per run | runs on 10,000 queries | ns per run |");
    println!("|---|---|---|---|---|");
    for (name, start) in &before {
        let plain = after_plain[name].since(start);
        let queries = after_queries[name].since(&after_plain[name]);
        println!(
            "| `{name}` | {} | {:.1} | {} | {:.1} |",
            plain.runs,
            plain.ns_per_run(),
            queries.runs,
            queries.ns_per_run()
        );
    }
    println!();
}

/// A UDP datagram to port 9 (not DNS): an Ethernet header (the test run
/// takes it off), IPv4, UDP, 64 bytes.
fn not_dns_packet() -> Vec<u8> {
    let mut packet = vec![0u8; 12];
    packet.extend_from_slice(&[0x08, 0x00]); // IPv4
    let total = 20 + 8 + 64u16;
    packet.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ]);
    packet.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    packet.extend_from_slice(&[0x9c, 0x40, 0, 9, 0, 72, 0, 0]);
    packet.extend_from_slice(&[0u8; 64]);
    packet
}

/// Test runs (a million each, timed as one) of each `flowtel_dns_*`
/// packet program of `agent` on [`not_dns_packet`], alternated with an empty
/// program on the same hook (benches/floor.bpf.c), `TEST_RUN_PAIRS` times;
/// with bpf_stats off, which would time every run. Medians.
fn test_run_times(agent: u32, stats: &mut BpfStats) {
    const TEST_RUN_PAIRS: usize = 7;
    let packet = std::env::temp_dir().join(format!("flowtel-bench-not-dns-{}", std::process::id()));
    std::fs::write(&packet, not_dns_packet()).expect("write the packet");
    let floor = FloorPrograms::load();
    let mut empty = Vec::new();
    let mut programs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let ids = dns_packet_program_ids(agent);
    stats.pause();
    for _ in 0..TEST_RUN_PAIRS {
        empty.push(test_run(&["pinned", &floor.egress()], &packet));
        for (name, id) in &ids {
            let ns = test_run(&["id", &id.to_string()], &packet);
            programs.entry(name.clone()).or_default().push(ns);
        }
    }
    stats.resume();
    let _ = std::fs::remove_file(&packet);
    let empty = quantile(&empty, 0.5);
    println!("| program | test run on a non-DNS packet, median of {TEST_RUN_PAIRS} × 1,000,000 runs | the empty program's, alternated | the program's own work |");
    println!("|---|---|---|---|");
    for (name, runs) in programs {
        let ns = quantile(&runs, 0.5);
        println!(
            "| `{name}` | {ns:.0} ns | {empty:.0} ns | {:.0} ns |",
            ns - empty
        );
    }
    println!();
}

/// `bpftool prog run PROGRAM data_in PACKET repeat 1000000`: the mean
/// time per run it reports, in ns.
fn test_run(program: &[&str], packet: &std::path::Path) -> f64 {
    let out = Command::new("bpftool")
        .args(["prog", "run"])
        .args(program)
        .arg("data_in")
        .arg(packet)
        .args(["repeat", "1000000"])
        .output()
        .expect("bpftool prog run");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("duration (average):")
        .nth(1)
        .and_then(|rest| rest.trim().split("ns").next()?.trim().parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "bpftool prog run {program:?}: {} {}",
                text.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

/// benches/floor.bpf.c loaded and pinned by bpftool (not attached);
/// unpinned, and so unloaded, when dropped.
struct FloorPrograms {
    pins: std::path::PathBuf,
}

impl FloorPrograms {
    fn load() -> FloorPrograms {
        let pins = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/flowtel-bench-floor-{}",
            std::process::id()
        ));
        shared::bpf_object::pin_with_bpftool("floor.bpf.c", &["prog", "loadall"], &pins);
        FloorPrograms { pins }
    }

    fn egress(&self) -> String {
        self.pins.join("floor_egress").display().to_string()
    }
}

impl Drop for FloorPrograms {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

#[derive(Clone, Copy)]
struct ProgramStats {
    runs: u64,
    run_time_ns: u64,
}

impl ProgramStats {
    fn since(&self, earlier: &ProgramStats) -> ProgramStats {
        ProgramStats {
            runs: self.runs - earlier.runs,
            run_time_ns: self.run_time_ns - earlier.run_time_ns,
        }
    }

    fn ns_per_run(&self) -> f64 {
        self.run_time_ns as f64 / self.runs.max(1) as f64
    }
}

/// bpf_stats of the DNS programs ([`is_dns_program`]) that process `agent`
/// holds, by name.
fn dns_program_stats(agent: u32) -> BTreeMap<String, ProgramStats> {
    dns_programs(agent)
        .into_iter()
        .map(|(name, p)| {
            let stats = ProgramStats {
                runs: p["run_cnt"].as_u64().unwrap_or(0),
                run_time_ns: p["run_time_ns"].as_u64().unwrap_or(0),
            };
            (name, stats)
        })
        .collect()
}

/// The ids of the DNS packet programs (`cgroup_skb`)
/// that `agent` holds: the kernel test-runs no tracing or sock_addr ones.
fn dns_packet_program_ids(agent: u32) -> BTreeMap<String, u64> {
    dns_programs(agent)
        .into_iter()
        .filter(|(_, p)| p["type"] == "cgroup_skb")
        .filter_map(|(name, p)| Some((name, p["id"].as_u64()?)))
        .collect()
}

/// `bpftool prog show` of the DNS programs ([`is_dns_program`]) that process
/// `agent` holds, by name (bpftool shows at most 15 characters of a name;
/// other agents on the host hold programs of the same names).
fn dns_programs(agent: u32) -> BTreeMap<String, serde_json::Value> {
    let held = held_program_ids(agent);
    let out = Command::new("bpftool")
        .args(["prog", "show", "--json"])
        .output()
        .expect("bpftool (apt-get install bpftool)");
    let programs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    programs
        .as_array()
        .expect("a list of programs")
        .iter()
        .filter(|p| p["id"].as_u64().is_some_and(|id| held.contains(&id)))
        .filter_map(|p| {
            let name = p["name"].as_str()?;
            is_dns_program(name).then(|| (name.to_owned(), p.clone()))
        })
        .collect()
}

/// The programs that capture DNS: its own, and the UDP programs that
/// capture it too when both features are on (the default).
fn is_dns_program(name: &str) -> bool {
    name.starts_with("flowtel_dns")
        || ["flowtel_udp_egress", "flowtel_recv", "flowtel_recv_twin"].contains(&name)
}

/// The ids of the BPF programs `pid` holds open (`prog_id:` in the fdinfo
/// of its program file descriptors).
fn held_program_ids(pid: u32) -> Vec<u64> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("the agent's fdinfo");
    fds.filter_map(|fd| std::fs::read_to_string(fd.ok()?.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("prog_id:"))
                .and_then(|id| id.trim().parse().ok())
        })
        .collect()
}

/// `kernel.bpf_stats_enabled` on while this lives, restored when dropped.
struct BpfStats(String);

impl BpfStats {
    const PATH: &'static str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> BpfStats {
        let was = std::fs::read_to_string(Self::PATH).expect("bpf_stats_enabled");
        std::fs::write(Self::PATH, "1").expect("enable bpf_stats (needs root)");
        BpfStats(was.trim().to_owned())
    }

    /// Off until [`BpfStats::resume`]: a test run would time each run.
    fn pause(&mut self) {
        std::fs::write(Self::PATH, "0").expect("disable bpf_stats");
    }

    fn resume(&mut self) {
        std::fs::write(Self::PATH, "1").expect("enable bpf_stats");
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, &self.0);
    }
}
