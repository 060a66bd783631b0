//! What flowtel costs the data path, measured side by side in one run:
//! loopback TCP request/response with 64-byte messages (`sockperf
//! ping-pong`) and bulk throughput (`iperf3`), each run alternately with
//! nothing attached, with empty programs on flowtel's per-packet and
//! per-read hooks (the floor any program there pays), with flowtel as
//! configured by default (UDP counted: the egress hook and the receive
//! tracepoint attached, TCP returning at once), with
//! flowtel counting TCP alone (`receiver.udp: false`: nothing per send or
//! receive), and with a bpftrace peer that sums bytes per (pid, socket) on
//! the same tracepoints. Reports the median of each round's ratio to the
//! bare run, and the kernel's own per-program run time
//! (`kernel.bpf_stats_enabled`).
//!
//! Each load runs twice: with client and server pinned to one CPU (the
//! worst case: no cross-CPU wakeups hide the per-syscall cost) and on two
//! CPUs. Pinning also keeps the scheduler's placement out of the noise.
//!
//! Then the ping-pong once more inside Debian's 6.1 kernel under qemu, where
//! kprobes attach (`guest`).
//!
//! `cargo bench --bench datapath` as root (see BENCHMARKS.md). Environment:
//! `FLOWTEL_BENCH_PAIRS` (rounds, default 10), `FLOWTEL_BENCH_SECONDS`
//! (default 3), `FLOWTEL_BENCH_ONLY=pingpong|bulk|programs|maps|guest`.

#[path = "datapath/guest.rs"]
mod guest;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The peer: bytes per (pid, socket) on the same tracepoints as flowtel.
const BPFTRACE_PEER: &str = "tracepoint:sock:sock_send_length /args->ret > 0/ { @sent[pid, args->sk] = sum(args->ret); } \
                             tracepoint:sock:sock_recv_length /args->ret > 0/ { @received[pid, args->sk] = sum(args->ret); }";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watcher {
    Bare,
    Floor,
    Flowtel,
    FlowtelTcpOnly,
    Bpftrace,
}

impl Watcher {
    const ALL: [Watcher; 5] = [
        Watcher::Bare,
        Watcher::Floor,
        Watcher::Flowtel,
        Watcher::FlowtelTcpOnly,
        Watcher::Bpftrace,
    ];

    fn name(self) -> &'static str {
        match self {
            Watcher::Bare => "nothing attached",
            Watcher::Floor => "empty programs",
            Watcher::Flowtel => "flowtel",
            Watcher::FlowtelTcpOnly => "flowtel, no UDP",
            Watcher::Bpftrace => "bpftrace peer",
        }
    }

    /// Starts the watcher and returns once its programs are attached.
    fn attach(self) -> Attached {
        match self {
            Watcher::Bare => Attached::Nothing,
            Watcher::Floor => Attached::Programs(programs::attach_floor()),
            Watcher::Flowtel => Attached::Process(spawn_flowtel(&[])),
            Watcher::FlowtelTcpOnly => {
                let config = std::env::temp_dir().join("flowtel-bench-no-udp.yaml");
                std::fs::write(&config, "receiver:\n  udp: false\n").expect("write a config");
                let config = config.to_str().expect("UTF-8 temp path").to_owned();
                Attached::Process(spawn_flowtel(&["--config", &config]))
            }
            Watcher::Bpftrace => Attached::Process(spawn_until(
                Command::new("bpftrace").args(["-e", BPFTRACE_PEER]),
                Stream::Stdout,
                "Attaching",
            )),
        }
    }
}

/// `flowtel run` with `args`, once its programs are attached. The binary
/// is this build's, or `FLOWTEL_BINARY` (inside the guest).
fn spawn_flowtel(args: &[&str]) -> Child {
    let binary =
        std::env::var_os("FLOWTEL_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_flowtel").into());
    spawn_until(
        Command::new(binary)
            .args(["run", "--format", "json", "--poll-interval", "10s"])
            .args(args),
        Stream::Stderr,
        "flowtel: watching",
    )
}

enum Stream {
    Stdout,
    Stderr,
}

/// Spawns `command` and waits until `stream` prints a line containing
/// `ready`; the rest of its output is discarded.
fn spawn_until(command: &mut Command, stream: Stream, ready: &str) -> Child {
    let (out, err) = match stream {
        Stream::Stdout => (Stdio::piped(), Stdio::null()),
        Stream::Stderr => (Stdio::null(), Stdio::piped()),
    };
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pipe: Box<dyn std::io::Read + Send> = match stream {
        Stream::Stdout => Box::new(child.stdout.take().expect("piped")),
        Stream::Stderr => Box::new(child.stderr.take().expect("piped")),
    };
    let mut lines = BufReader::new(pipe).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains(ready) => break,
            Some(_) => continue,
            None => panic!("{command:?} exited before printing {ready:?}"),
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// An attached watcher; detached when dropped (a process gets SIGINT and
/// is waited for), also on a panic, so that none outlives the run and skews
/// later measurements.
#[allow(dead_code)] // the programs are held only to stay attached
enum Attached {
    Nothing,
    Programs(aya::Ebpf),
    Process(Child),
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Attached::Process(child) = self {
            // SIGINT: what bpftrace stops on (it can sit through a
            // SIGTERM), and flowtel too. Never wait for it forever.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("watcher {} ignored SIGINT for 5 s: killed", child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn detach(attached: Attached) {
    drop(attached);
}

/// Lets the work a watcher leaves behind when it stops (freeing its maps
/// and programs after an RCU grace period, in kernel workers) finish before
/// the next measurement, which would otherwise pay for it.
fn settle() {
    std::thread::sleep(Duration::from_secs(1));
}

/// Where a load's client and server run: both on one CPU (the worst case
/// for per-syscall cost, and the least noisy) or one on each of two CPUs.
#[derive(Debug, Clone, Copy)]
enum Placement {
    OneCpu,
    TwoCpus,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::OneCpu => "client and server on one CPU",
            Placement::TwoCpus => "client and server on two CPUs",
        }
    }

    /// `command` run under `taskset`, on the CPU of the given side.
    fn pinned(self, side: Side, program: &str) -> Command {
        let cpu = match (self, side) {
            (Placement::OneCpu, _) | (Placement::TwoCpus, Side::Server) => "1",
            (Placement::TwoCpus, Side::Client) => "0",
        };
        let mut command = Command::new("taskset");
        command.args(["-c", cpu, program]);
        command
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Server,
}

/// One measurement: the rate (round trips/s, bit/s) and the CPU the load's
/// own processes spent per unit of work (per round trip, per MiB), which
/// includes the BPF programs that run in their syscalls and is less
/// disturbed by other work on a shared machine than the rate.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rate: f64,
    cpu_ns_per_unit: f64,
}

type Measure = fn(Duration, Placement) -> Sample;

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    cpu_used(libc::RUSAGE_CHILDREN)
}

/// CPU time (user + system) so far of `who` (a `getrusage` target).
fn cpu_used(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// sockperf ping-pong, 64-byte TCP messages: round trips per second, and
/// CPU per round trip (client and server).
fn ping_pong(time: Duration, placement: Placement) -> Sample {
    let cpu_before = children_cpu();
    let port = "11311";
    let mut server = placement
        .pinned(Side::Server, "sockperf")
        .args(["sr", "--tcp", "-i", "127.0.0.1", "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sockperf under taskset (apt-get install sockperf util-linux)");
    std::thread::sleep(Duration::from_millis(300));
    let out = placement
        .pinned(Side::Client, "sockperf")
        .args([
            "pp",
            "--tcp",
            "-i",
            "127.0.0.1",
            "-p",
            port,
            "-m",
            "64",
            "-t",
        ])
        .arg(time.as_secs().to_string())
        .output()
        .expect("sockperf pp");
    let _ = server.kill();
    let _ = server.wait();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let field = |section: &str, name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.contains(section))
            .unwrap_or_else(|| panic!("no {section} line from sockperf:\n{text}"));
        let start = line.find(name).expect("sockperf field") + name.len();
        line[start..]
            .split(|c: char| c != '.' && !c.is_ascii_digit())
            .next()
            .and_then(|v| v.parse().ok())
            .expect("sockperf number")
    };
    let cpu = children_cpu() - cpu_before;
    Sample {
        rate: field("[Valid Duration]", "ReceivedMessages=")
            / field("[Valid Duration]", "RunTime="),
        cpu_ns_per_unit: cpu.as_nanos() as f64 / field("[Total Run]", "ReceivedMessages="),
    }
}

/// iperf3, one TCP stream on loopback: bits per second received, and CPU
/// per MiB moved (client and server).
fn bulk(time: Duration, placement: Placement) -> Sample {
    let cpu_before = children_cpu();
    let port = "15201";
    let mut server = placement
        .pinned(Side::Server, "iperf3")
        .args(["-s", "-1", "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 under taskset (apt-get install iperf3 util-linux)");
    std::thread::sleep(Duration::from_millis(300));
    let out = placement
        .pinned(Side::Client, "iperf3")
        .args(["-c", "127.0.0.1", "-p", port, "-J", "-t"])
        .arg(time.as_secs().to_string())
        .output()
        .expect("iperf3 -c");
    let _ = server.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("iperf3 JSON report");
    let received = &report["end"]["sum_received"];
    let bytes = received["bytes"].as_f64().expect("iperf3 bytes");
    let cpu = children_cpu() - cpu_before;
    Sample {
        rate: received["bits_per_second"]
            .as_f64()
            .expect("iperf3 bits_per_second"),
        cpu_ns_per_unit: cpu.as_nanos() as f64 / (bytes / f64::from(1 << 20)),
    }
}

/// The q-quantile (0 to 1) of `values`, interpolated between neighbours.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

/// Each round's value of `f` under one watcher over its value under another.
fn round_ratios(of: &[Sample], to: &[Sample], f: fn(&Sample) -> f64) -> Vec<f64> {
    of.iter().zip(to).map(|(s, b)| f(s) / f(b)).collect()
}

/// "median (middle half low-high)" of per-round ratios.
fn spread(ratios: &[f64]) -> String {
    format!(
        "{:.4} (middle half {:.4}-{:.4})",
        quantile(ratios, 0.5),
        quantile(ratios, 0.25),
        quantile(ratios, 0.75)
    )
}

struct Load {
    title: &'static str,
    /// Unit of the rate.
    unit: &'static str,
    /// Unit of work the CPU time is divided by.
    per: &'static str,
    measure: Measure,
}

const PING_PONG: Load = Load {
    title: "TCP ping-pong, 64-byte messages (sockperf)",
    unit: "round trips/s",
    per: "round trip",
    measure: ping_pong,
};

const BULK: Load = Load {
    title: "TCP bulk, one stream (iperf3)",
    unit: "bit/s",
    per: "MiB",
    measure: bulk,
};

/// Runs `load` `rounds` times under each watcher, the watchers' order
/// rotated each round so that none always follows the same one, and prints
/// the medians and the median per-round ratios to the bare run: of the rate
/// (higher is better) and of the CPU per unit of work (lower is better).
fn compare(load: &Load, placement: Placement, rounds: usize, time: Duration) {
    println!(
        "\n## {} ({}): {rounds} rounds of {time:?} per watcher",
        load.title,
        placement.name()
    );
    let results = run_rounds(&Watcher::ALL, rounds, load.per, || {
        (load.measure)(time, placement)
    });
    report(load, &Watcher::ALL, &results);
}

/// `rounds` measurements under each of `watchers`, their order rotated each
/// round; each watcher's samples in the order of `watchers`.
fn run_rounds(
    watchers: &[Watcher],
    rounds: usize,
    per: &str,
    mut measure: impl FnMut() -> Sample,
) -> Vec<Vec<Sample>> {
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); watchers.len()];
    for round in 0..rounds {
        let mut row = vec![String::new(); watchers.len()];
        for offset in 0..watchers.len() {
            let i = (round + offset) % watchers.len();
            let attached = watchers[i].attach();
            let sample = measure();
            detach(attached);
            settle();
            results[i].push(sample);
            row[i] = format!(
                "{}={:.0} ({:.0} ns CPU/{per})",
                watchers[i].name(),
                sample.rate,
                sample.cpu_ns_per_unit,
            );
        }
        println!("round {:>2}: {}", round + 1, row.join(", "));
    }
    results
}

/// Prints each watcher's medians and median per-round ratios to the bare
/// run, then flowtel's against the empty programs and the peer where those
/// ran.
fn report(load: &Load, watchers: &[Watcher], results: &[Vec<Sample>]) {
    let of = |watcher: Watcher| {
        watchers
            .iter()
            .position(|&w| w == watcher)
            .map(|i| &results[i])
    };
    let bare = of(Watcher::Bare).expect("every comparison has a bare run");
    for (watcher, samples) in watchers.iter().zip(results) {
        let rates: Vec<f64> = samples.iter().map(|s| s.rate).collect();
        let cpu: Vec<f64> = samples.iter().map(|s| s.cpu_ns_per_unit).collect();
        println!(
            "{:<18} median {:>14.0} {}, ratio to bare {}; CPU {:>8.0} ns/{}, ratio to bare {}",
            watcher.name(),
            quantile(&rates, 0.5),
            load.unit,
            spread(&round_ratios(samples, bare, |s| s.rate)),
            quantile(&cpu, 0.5),
            load.per,
            spread(&round_ratios(samples, bare, |s| s.cpu_ns_per_unit)),
        );
    }
    let flowtel = of(Watcher::Flowtel).expect("every comparison runs flowtel");
    for (other, what) in [
        (Watcher::Floor, "the empty programs (its own work)"),
        (Watcher::Bpftrace, "the bpftrace peer"),
    ] {
        if let Some(other) = of(other) {
            println!(
                "flowtel over {what}: rate ratio {}; CPU ratio {}",
                spread(&round_ratios(flowtel, other, |s| s.rate)),
                spread(&round_ratios(flowtel, other, |s| s.cpu_ns_per_unit)),
            );
        }
    }
}

/// Mean run time of each flowtel program, and of empty programs on the
/// same two hooks (the floor any program pays there), over the same
/// traffic, from the kernel's own statistics.
fn program_run_times(time: Duration) {
    println!("\n## mean run time per program (kernel.bpf_stats_enabled), same traffic");
    let _stats = RunTimeStats::enable();
    let floor = programs::attach_floor();
    let agent = Watcher::Flowtel.attach();
    ping_pong(time, Placement::OneCpu);
    bulk(time, Placement::TwoCpus);
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (apt-get install bpftool)");
    detach(agent);
    drop(floor);
    let programs: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool JSON");
    for program in programs.as_array().into_iter().flatten() {
        let name = program["name"].as_str().unwrap_or_default();
        let runs = program["run_cnt"].as_u64().unwrap_or(0);
        if (name.starts_with("flowtel") || name.starts_with("floor")) && runs > 0 {
            let ns = program["run_time_ns"].as_u64().unwrap_or(0) as f64 / runs as f64;
            println!("{name:<22} {runs:>10} runs {ns:>8.1} ns/run");
        }
    }
}

/// The per-event cost of each way to find a socket's counters
/// (benches/maps.bpf.c): each candidate runs beside an empty program on
/// the send hook under one-CPU ping-pong, three times, and the median of
/// its mean run time minus the empty one's is reported.
fn map_choice(time: Duration) {
    println!(
        "\n## map choice: run time per send above an empty program (ping-pong on one CPU, 3 runs each)"
    );
    let _stats = RunTimeStats::enable();
    let object = programs::build("maps.bpf.c");
    for candidate in [
        "hash_wide_key",
        "hash_cookie",
        "lru_hash",
        "per_cpu_hash",
        "socket_storage",
        "array_slot",
    ] {
        let mut above_floor = Vec::new();
        for _ in 0..3 {
            let ebpf = programs::attach(
                &object,
                &[
                    ("empty", "sock_send_length"),
                    (candidate, "sock_send_length"),
                ],
            );
            ping_pong(time, Placement::OneCpu);
            above_floor.push(
                programs::mean_run_ns(&ebpf, candidate) - programs::mean_run_ns(&ebpf, "empty"),
            );
        }
        println!(
            "{candidate:<16} {:>6.1} ns/run above the empty program (runs: {})",
            quantile(&above_floor, 0.5),
            above_floor
                .iter()
                .map(|ns| format!("{ns:.1}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// `kernel.bpf_stats_enabled` on while this lives, restored when dropped.
struct RunTimeStats(String);

impl RunTimeStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn enable() -> RunTimeStats {
        let before = std::fs::read_to_string(Self::PATH).unwrap_or_default();
        std::fs::write(Self::PATH, "1").expect("enable bpf_stats (needs root)");
        RunTimeStats(before)
    }
}

impl Drop for RunTimeStats {
    fn drop(&mut self) {
        let _ = std::fs::write(Self::PATH, self.0.trim());
    }
}

/// The bench's own eBPF objects (benches/*.bpf.c), built with clang at
/// run time.
mod programs {
    use std::process::Command;

    /// Builds benches/`file` and returns the object's bytes.
    pub fn build(file: &str) -> Vec<u8> {
        let source = format!("{}/benches/{file}", env!("CARGO_MANIFEST_DIR"));
        let object =
            std::env::temp_dir().join(format!("flowtel-bench-{}-{file}.o", std::process::id()));
        let status = Command::new("clang")
            .args([
                "-O2",
                "-g",
                "-target",
                "bpf",
                "-I/usr/include/x86_64-linux-gnu",
                "-c",
                &source,
                "-o",
            ])
            .arg(&object)
            .status()
            .expect("clang");
        assert!(status.success(), "clang could not build {source}");
        let bytes = std::fs::read(&object).expect("the bench object");
        let _ = std::fs::remove_file(&object);
        bytes
    }

    /// Empty programs on flowtel's egress hook and receive tracepoint
    /// (benches/floor.bpf.c): the floor any program there pays.
    pub fn attach_floor() -> aya::Ebpf {
        let mut ebpf = attach(&build("floor.bpf.c"), &[("floor_recv", "sock_recv_length")]);
        let egress: &mut aya::programs::CgroupSkb = ebpf
            .program_mut("floor_egress")
            .expect("floor_egress")
            .try_into()
            .expect("a cgroup_skb program");
        egress.load().expect("load floor_egress");
        // Where flowtel attaches its own egress hook.
        let root = receiver::cgroup_v2_root(None).expect("a cgroup-v2 root");
        let cgroup = std::fs::File::open(root).expect("open the cgroup-v2 root");
        egress
            .attach(
                cgroup,
                aya::programs::CgroupSkbAttachType::Egress,
                aya::programs::CgroupAttachMode::Single,
            )
            .expect("attach floor_egress");
        ebpf
    }

    /// Loads `object` and attaches the named tp_btf programs, in order.
    pub fn attach(object: &[u8], programs: &[(&str, &str)]) -> aya::Ebpf {
        let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
        let mut ebpf = aya::Ebpf::load(object).expect("load a bench object");
        for (name, tracepoint) in programs {
            let program: &mut aya::programs::BtfTracePoint = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("no program {name}"))
                .try_into()
                .expect("a tp_btf program");
            program
                .load(tracepoint, &btf)
                .unwrap_or_else(|e| panic!("load {name}: {e}"));
            program
                .attach()
                .unwrap_or_else(|e| panic!("attach {name}: {e}"));
        }
        ebpf
    }

    /// A program's mean run time so far (bpf_stats must be on).
    pub fn mean_run_ns(ebpf: &aya::Ebpf, name: &str) -> f64 {
        let info = ebpf
            .program(name)
            .and_then(|p| p.info().ok())
            .unwrap_or_else(|| panic!("no info for {name}"));
        info.run_time().as_nanos() as f64 / info.run_count().max(1) as f64
    }
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = env("FLOWTEL_BENCH_PAIRS", 10) as usize;
    let time = Duration::from_secs(env("FLOWTEL_BENCH_SECONDS", 3));
    if std::env::var_os(guest::GUEST_ENV).is_some() {
        guest::guest_main(rounds, time);
        return;
    }
    if !std::path::Path::new("/sys/kernel/tracing/events/sock").exists() {
        // bpftrace finds tracepoints through tracefs.
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    println!("# flowtel data-path overhead");
    let only = std::env::var("FLOWTEL_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "pingpong" {
        compare(&PING_PONG, Placement::OneCpu, rounds, time);
        compare(&PING_PONG, Placement::TwoCpus, rounds, time);
    }
    if only.is_empty() || only == "bulk" {
        compare(&BULK, Placement::OneCpu, rounds, time);
        compare(&BULK, Placement::TwoCpus, rounds, time);
    }
    if only.is_empty() || only == "programs" {
        program_run_times(time);
    }
    if only.is_empty() || only == "maps" {
        map_choice(time);
    }
    if only.is_empty() || only == "guest" {
        compare_in_guest(rounds, time);
    }
}

/// The one-CPU ping-pong inside the 6.1 guest (see `guest`).
fn compare_in_guest(rounds: usize, time: Duration) {
    println!(
        "\n## TCP ping-pong, 64-byte messages, two threads, inside Debian's 6.1 kernel \
         (kprobe set; qemu software emulation, one CPU): {rounds} rounds of {time:?} per watcher"
    );
    let run = guest::run_in_guest(rounds, time);
    println!("kernel {}", run.kernel);
    for round in 0..rounds {
        let row: Vec<String> = guest::GUEST_WATCHERS
            .iter()
            .zip(&run.samples)
            .map(|(w, s)| format!("{}={:.0}", w.name(), s[round].rate))
            .collect();
        println!("round {:>2}: {}", round + 1, row.join(", "));
    }
    report(&PING_PONG, &guest::GUEST_WATCHERS, &run.samples);
    for (watcher, (runs, round_trips)) in guest::GUEST_WATCHERS.iter().zip(&run.program_runs) {
        if *watcher != Watcher::Bare {
            println!(
                "{:<18} flowtel program runs during its measurements: {runs} in {round_trips} round trips",
                watcher.name()
            );
        }
    }
}
