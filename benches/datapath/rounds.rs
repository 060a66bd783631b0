//! The rounds: a load measured under each watcher in turn, the watchers'
//! order rotated each round so that none always follows the same one.

use std::time::Duration;

use crate::load::{Load, Placement, Sample};
use crate::report::report;
use crate::watcher::{detach, settle, Watcher};

/// Runs `load` `rounds` times under each watcher and prints the medians
/// and the median per-round ratios to the bare run: of the rate (higher is
/// better) and of the CPU per unit of work (lower is better).
pub fn compare(load: &Load, placement: Placement, rounds: usize, time: Duration) {
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
