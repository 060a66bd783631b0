//! What flowtel costs the data path, measured side by side in one run:
//! loopback TCP request/response with 64-byte messages (`sockperf
//! ping-pong`) and bulk throughput (`iperf3`), each run alternately with
//! nothing attached, with flowtel, and with a bpftrace peer that sums bytes
//! per (pid, socket) on the same tracepoints. Reports the median ratio of
//! each to the bare run, and the kernel's own per-program run time
//! (`kernel.bpf_stats_enabled`).
//!
//! `cargo bench --bench datapath` as root (see BENCHMARKS.md). Environment:
//! `FLOWTEL_BENCH_PAIRS` (default 10), `FLOWTEL_BENCH_SECONDS` (default 3),
//! `FLOWTEL_BENCH_ONLY=programs` (only the per-program run times).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The peer: bytes per (pid, socket) on the same tracepoints as flowtel.
const BPFTRACE_PEER: &str = "tracepoint:sock:sock_send_length /args->ret > 0/ { @sent[pid, args->sk] = sum(args->ret); } \
                             tracepoint:sock:sock_recv_length /args->ret > 0/ { @received[pid, args->sk] = sum(args->ret); }";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watcher {
    Bare,
    Flowtel,
    Bpftrace,
}

impl Watcher {
    const ALL: [Watcher; 3] = [Watcher::Bare, Watcher::Flowtel, Watcher::Bpftrace];

    fn name(self) -> &'static str {
        match self {
            Watcher::Bare => "nothing attached",
            Watcher::Flowtel => "flowtel",
            Watcher::Bpftrace => "bpftrace peer",
        }
    }

    /// Starts the watcher and returns once its programs are attached.
    fn attach(self) -> Attached {
        Attached(match self {
            Watcher::Bare => None,
            Watcher::Flowtel => Some(spawn_until(
                Command::new(env!("CARGO_BIN_EXE_flowtel")).args([
                    "run",
                    "--format",
                    "json",
                    "--poll-interval",
                    "10s",
                ]),
                Stream::Stderr,
                "flowtel: watching",
            )),
            Watcher::Bpftrace => Some(spawn_until(
                Command::new("bpftrace").args(["-e", BPFTRACE_PEER]),
                Stream::Stdout,
                "Attaching",
            )),
        })
    }
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

/// An attached watcher; detached (SIGTERM, wait) when dropped, also on a
/// panic, so that none outlives the run and skews later measurements.
struct Attached(Option<Child>);

impl Drop for Attached {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

fn detach(attached: Attached) {
    drop(attached);
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

type Measure = fn(Duration) -> Sample;

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// sockperf ping-pong, 64-byte TCP messages: round trips per second, and
/// CPU per round trip (client and server).
fn ping_pong(time: Duration) -> Sample {
    let cpu_before = children_cpu();
    let port = "11311";
    let mut server = Command::new("sockperf")
        .args(["sr", "--tcp", "-i", "127.0.0.1", "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sockperf (apt-get install sockperf)");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("sockperf")
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
fn bulk(time: Duration) -> Sample {
    let cpu_before = children_cpu();
    let port = "15201";
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (apt-get install iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let out = Command::new("iperf3")
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Runs `measure` `rounds` times under each watcher, interleaved, and
/// prints the medians and the median ratios to the bare runs: of the rate
/// (higher is better) and of the CPU per unit of work (lower is better).
fn compare(title: &str, unit: &str, per: &str, measure: Measure, rounds: usize, time: Duration) {
    println!("\n## {title}: {rounds} rounds of {time:?} per watcher, interleaved");
    let mut results: Vec<Vec<Sample>> = vec![Vec::new(); Watcher::ALL.len()];
    for round in 0..rounds {
        let mut row = Vec::new();
        for (i, watcher) in Watcher::ALL.into_iter().enumerate() {
            let attached = watcher.attach();
            let sample = measure(time);
            detach(attached);
            results[i].push(sample);
            row.push(format!(
                "{}={:.0} ({:.0} ns CPU/{per})",
                watcher.name(),
                sample.rate,
                sample.cpu_ns_per_unit
            ));
        }
        println!("round {:>2}: {}", round + 1, row.join(", "));
    }
    let bare = results[0].clone();
    for (i, watcher) in Watcher::ALL.into_iter().enumerate() {
        let ratio = |f: fn(&Sample) -> f64| {
            let mut ratios: Vec<f64> = results[i]
                .iter()
                .zip(&bare)
                .map(|(s, b)| f(s) / f(b))
                .collect();
            median(&mut ratios)
        };
        let mut rates: Vec<f64> = results[i].iter().map(|s| s.rate).collect();
        let mut cpu: Vec<f64> = results[i].iter().map(|s| s.cpu_ns_per_unit).collect();
        println!(
            "{:<18} median {:>14.0} {unit} (ratio to bare {:.4}); CPU {:>8.0} ns/{per} (ratio to bare {:.4})",
            watcher.name(),
            median(&mut rates),
            ratio(|s| s.rate),
            median(&mut cpu),
            ratio(|s| s.cpu_ns_per_unit),
        );
    }
}

/// Mean run time of each flowtel program, and of empty programs on the
/// same two hooks (the floor any program pays there), over the same
/// traffic, from the kernel's own statistics.
fn program_run_times(time: Duration) {
    println!("\n## mean run time per program (kernel.bpf_stats_enabled), same traffic");
    let stats = "/proc/sys/kernel/bpf_stats_enabled";
    let before = std::fs::read_to_string(stats).unwrap_or_default();
    std::fs::write(stats, "1").expect("enable bpf_stats (needs root)");
    let floor = floor::attach();
    let agent = Watcher::Flowtel.attach();
    ping_pong(time);
    bulk(time);
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .expect("bpftool (apt-get install bpftool)");
    detach(agent);
    drop(floor);
    let _ = std::fs::write(stats, before.trim());
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

/// Empty programs on the send and receive tracepoints, built from
/// benches/floor.bpf.c with clang at run time.
mod floor {
    use std::process::Command;

    pub fn attach() -> aya::Ebpf {
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/floor.bpf.c");
        let object = std::env::temp_dir().join(format!("flowtel-floor-{}.o", std::process::id()));
        let status = Command::new("clang")
            .args([
                "-O2",
                "-target",
                "bpf",
                "-I/usr/include/x86_64-linux-gnu",
                "-c",
                source,
                "-o",
            ])
            .arg(&object)
            .status()
            .expect("clang");
        assert!(status.success(), "clang could not build {source}");
        let bytes = std::fs::read(&object).expect("the floor object");
        let _ = std::fs::remove_file(&object);
        let btf = aya::Btf::from_sys_fs().expect("kernel BTF");
        let mut ebpf = aya::Ebpf::load(&bytes).expect("load the floor object");
        for (name, tracepoint) in [
            ("floor_send", "sock_send_length"),
            ("floor_recv", "sock_recv_length"),
        ] {
            let program: &mut aya::programs::BtfTracePoint = ebpf
                .program_mut(name)
                .expect("floor program")
                .try_into()
                .expect("a tp_btf program");
            program
                .load(tracepoint, &btf)
                .expect("load a floor program");
            program.attach().expect("attach a floor program");
        }
        ebpf
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
    if !std::path::Path::new("/sys/kernel/tracing/events/sock").exists() {
        // bpftrace finds tracepoints through tracefs.
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
    println!("# flowtel data-path overhead");
    if std::env::var("FLOWTEL_BENCH_ONLY").as_deref() == Ok("programs") {
        program_run_times(time);
        return;
    }
    compare(
        "TCP ping-pong, 64-byte messages (sockperf)",
        "round trips/s",
        "round trip",
        ping_pong,
        rounds,
        time,
    );
    compare(
        "TCP bulk, one stream (iperf3)",
        "bit/s",
        "MiB",
        bulk,
        rounds,
        time,
    );
    program_run_times(time);
}
