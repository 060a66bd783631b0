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
//!
//! Here only the run order; each job is a module under benches/datapath/:
//! `watcher` (what is attached), `load` (sockperf, iperf3), `rounds` (the
//! rotated rounds), `stats` (medians, middle halves), `report` (the
//! summary), `programs` (the bench's own eBPF objects), `run_time` (the
//! kernel's per-program run time), `maps` (the map-choice table) and
//! `guest` (the run inside the 6.1 guest).

#[path = "datapath/guest.rs"]
mod guest;
#[path = "datapath/load.rs"]
mod load;
#[path = "datapath/maps.rs"]
mod maps;
#[path = "datapath/programs.rs"]
mod programs;
#[path = "datapath/report.rs"]
mod report;
#[path = "datapath/rounds.rs"]
mod rounds;
#[path = "datapath/run_time.rs"]
mod run_time;
#[path = "shared/mod.rs"]
mod shared;
#[path = "datapath/stats.rs"]
mod stats;
#[path = "datapath/watcher.rs"]
mod watcher;

use std::process::Command;
use std::time::Duration;

use load::{Placement, BULK, PING_PONG};
use rounds::compare;
use shared::env;

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
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
        run_time::program_run_times(time);
    }
    if only.is_empty() || only == "maps" {
        maps::map_choice(time);
    }
    if only.is_empty() || only == "guest" {
        guest::compare(rounds, time);
    }
}
