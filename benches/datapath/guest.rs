//! The ping-pong again inside Debian's 6.1 kernel under qemu, a kernel
//! where kprobes attach: there flowtel counts UDP with kprobes on the UDP
//! functions alone, so a TCP round trip passes no flowtel program even with
//! UDP counted (the default configuration). Software emulation makes the
//! absolute rates meaningless; the ratios, measured side by side in the same
//! guest, are the figure.
//!
//! The host packs this bench binary and `flowtel` into an initramfs and
//! boots it (the kernel matrix's `vm` helpers); inside, with
//! `FLOWTEL_BENCH_GUEST` set, the binary runs the rounds and prints one
//! `GUEST-SAMPLE` line per measurement, which the host reads off the
//! console. With `kernel.bpf_stats_enabled` on, each flowtel measurement
//! also reports how many times flowtel's programs ran during it: the direct
//! evidence that a TCP round trip runs none.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use integration::vm;

use crate::load::{cpu_used, Sample, PING_PONG};
use crate::report::report;
use crate::run_time::RunTimeStats;
use crate::watcher::{settle, Watcher};

/// Set inside the guest: run the rounds there.
pub const GUEST_ENV: &str = "FLOWTEL_BENCH_GUEST";

/// Debian bookworm's current 6.1 cloud kernel (kprobes, BTF).
const DEBIAN_6_1: &str = r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$";

/// What the guest compares: no `sock_send_length` there, so no floor
/// programs; no bpftrace in the initramfs.
const GUEST_WATCHERS: [Watcher; 3] = [Watcher::Bare, Watcher::Flowtel, Watcher::FlowtelTcpOnly];

const SAMPLE_PREFIX: &str = "GUEST-SAMPLE";

/// What the guest measured.
struct GuestRun {
    /// The Debian kernel package booted.
    kernel: String,
    /// Each watcher's samples, in the order of [`GUEST_WATCHERS`].
    samples: Vec<Vec<Sample>>,
    /// Per watcher: flowtel program runs during all its measurements, and
    /// the round trips those measurements made.
    program_runs: Vec<(u64, u64)>,
}

/// Host side: the one-CPU ping-pong inside the 6.1 guest, reported like
/// the host's comparisons.
pub fn compare(rounds: usize, time: Duration) {
    println!(
        "\n## TCP ping-pong, 64-byte messages, two threads, inside Debian's 6.1 kernel \
         (kprobe set; qemu software emulation, one CPU): {rounds} rounds of {time:?} per watcher"
    );
    let run = run_in_guest(rounds, time);
    println!("kernel {}", run.kernel);
    for round in 0..rounds {
        let row: Vec<String> = GUEST_WATCHERS
            .iter()
            .zip(&run.samples)
            .map(|(w, s)| format!("{}={:.0}", w.name(), s[round].rate))
            .collect();
        println!("round {:>2}: {}", round + 1, row.join(", "));
    }
    report(&PING_PONG, &GUEST_WATCHERS, &run.samples);
    for (watcher, (runs, round_trips)) in GUEST_WATCHERS.iter().zip(&run.program_runs) {
        if *watcher != Watcher::Bare {
            println!(
                "{:<18} flowtel program runs during its measurements: {runs} in {round_trips} round trips",
                watcher.name()
            );
        }
    }
}

/// Host side: boots the guest and reads what it measured.
fn run_in_guest(rounds: usize, time: Duration) -> GuestRun {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-matrix");
    let archive = vm::Archive::open(&cache);
    let kernel = vm::Kernel::debian(&archive, DEBIAN_6_1, &cache);
    let command = format!(
        "{GUEST_ENV}=1 FLOWTEL_BINARY=/flowtel FLOWTEL_BENCH_PAIRS={rounds} \
         FLOWTEL_BENCH_SECONDS={} /datapath",
        time.as_secs()
    );
    let mut initramfs = vm::Initramfs::new(&cache.join("bench-guest"), &command);
    initramfs
        .add_binary(Path::new(env!("CARGO_BIN_EXE_flowtel")), "flowtel")
        .add_binary(
            &std::env::current_exe().expect("the bench binary's path"),
            "datapath",
        );
    let initrd = initramfs.pack();
    // Each flowtel start loads and verifies its programs under emulation.
    let timeout = Duration::from_secs(120) + (time + Duration::from_secs(20)) * (3 * rounds) as u32;
    let console = vm::boot(&kernel, &initrd, "", timeout, 1);
    let mut samples = vec![Vec::new(); GUEST_WATCHERS.len()];
    let mut program_runs = vec![(0, 0); GUEST_WATCHERS.len()];
    for line in console.lines() {
        let Some(rest) = line.trim().strip_prefix(SAMPLE_PREFIX) else {
            continue;
        };
        let fields: Vec<f64> = rest
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        if let [index, rate, cpu, runs, round_trips] = fields[..] {
            let index = index as usize;
            samples[index].push(Sample {
                rate,
                cpu_ns_per_unit: cpu,
            });
            program_runs[index].0 += runs as u64;
            program_runs[index].1 += round_trips as u64;
        }
    }
    assert!(
        samples.iter().all(|s| s.len() == rounds),
        "the guest did not report every round; console:\n{console}"
    );
    GuestRun {
        kernel: kernel.package,
        samples,
        program_runs,
    }
}

/// Guest side: the rounds, watchers rotated as on the host.
pub fn guest_main(rounds: usize, time: Duration) {
    let _stats = RunTimeStats::enable();
    for round in 0..rounds {
        for offset in 0..GUEST_WATCHERS.len() {
            let index = (round + offset) % GUEST_WATCHERS.len();
            let attached = GUEST_WATCHERS[index].attach();
            let runs_before = flowtel_program_runs();
            let (sample, round_trips) = ping_pong_threads(time);
            let runs = flowtel_program_runs() - runs_before;
            drop(attached);
            // One emulated CPU: the stopped agent's teardown takes longer.
            for _ in 0..3 {
                settle();
            }
            println!(
                "{SAMPLE_PREFIX} {index} {:.1} {:.1} {runs} {round_trips}",
                sample.rate, sample.cpu_ns_per_unit
            );
        }
    }
}

/// Runs of every loaded program named flowtel_* so far (bpf_stats on).
fn flowtel_program_runs() -> u64 {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("flowtel")))
        .map(|p| p.run_count())
        .sum()
}

/// 64-byte TCP ping-pong between two threads of this process (the guest
/// has one CPU): round trips per second and this process's CPU per round
/// trip, and the round trips made.
fn ping_pong_threads(time: Duration) -> (Sample, u64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen on loopback");
    let address = listener.local_addr().expect("bound");
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let mut message = [0u8; 64];
        while stream.read_exact(&mut message).is_ok() {
            if stream.write_all(&message).is_err() {
                break;
            }
        }
    });
    let mut client = TcpStream::connect(address).expect("connect");
    client.set_nodelay(true).expect("TCP_NODELAY");
    let mut message = [7u8; 64];
    let cpu_before = cpu_used(libc::RUSAGE_SELF);
    let started = Instant::now();
    let mut round_trips = 0u64;
    while started.elapsed() < time {
        for _ in 0..64 {
            client.write_all(&message).expect("send");
            client.read_exact(&mut message).expect("receive");
        }
        round_trips += 64;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_used(libc::RUSAGE_SELF) - cpu_before;
    drop(client);
    server.join().expect("server thread");
    let sample = Sample {
        rate: round_trips as f64 / elapsed.as_secs_f64(),
        cpu_ns_per_unit: cpu.as_nanos() as f64 / round_trips as f64,
    };
    (sample, round_trips)
}
