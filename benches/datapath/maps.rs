//! The map-choice table: the per-event cost of each way to find a
//! socket's counters (benches/maps.bpf.c).

use std::time::Duration;

use crate::load::{ping_pong, Placement};
use crate::programs;
use crate::run_time::RunTimeStats;
use crate::stats::quantile;

/// The per-event cost of each way to find a socket's counters
/// (benches/maps.bpf.c): each candidate runs beside an empty program on
/// the send hook under one-CPU ping-pong, three times, and the median of
/// its mean run time minus the empty one's is reported.
pub fn map_choice(time: Duration) {
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
