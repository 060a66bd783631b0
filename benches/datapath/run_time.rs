//! The kernel's own per-program run time (`kernel.bpf_stats_enabled`):
//! the switch, and flowtel's programs beside the empty ones over the same
//! traffic.

use std::process::Command;
use std::time::Duration;

use crate::load::{bulk, ping_pong, Placement};
use crate::programs;
use crate::watcher::{detach, Watcher};

/// Mean run time of each flowtel program, and of empty programs on the
/// same two hooks (the floor any program pays there), over the same
/// traffic, from the kernel's own statistics.
pub fn program_run_times(time: Duration) {
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

/// `kernel.bpf_stats_enabled` on while this lives, restored when dropped.
pub struct RunTimeStats(String);

impl RunTimeStats {
    const PATH: &str = "/proc/sys/kernel/bpf_stats_enabled";

    pub fn enable() -> RunTimeStats {
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
