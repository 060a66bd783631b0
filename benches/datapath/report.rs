//! The comparison's summary: each watcher's medians and ratios to the bare
//! run, then flowtel's against the empty programs, the peer and itself
//! without DNS capture.

use crate::load::{Load, Sample};
use crate::stats::{quantile, round_ratios, spread};
use crate::watcher::Watcher;

/// Prints each watcher's medians and median per-round ratios to the bare
/// run, then flowtel's against the empty programs and the peer where those
/// ran.
pub fn report(load: &Load, watchers: &[Watcher], results: &[Vec<Sample>]) {
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
    if let Some(no_dns) = of(Watcher::FlowtelNoDns) {
        println!(
            "flowtel with DNS capture over without: rate ratio {}; CPU ratio {}",
            spread(&round_ratios(flowtel, no_dns, |s| s.rate)),
            spread(&round_ratios(flowtel, no_dns, |s| s.cpu_ns_per_unit)),
        );
    }
}
