//! What the benches share.

// Each bench uses its own part of it.
#![allow(dead_code)]

pub mod bpf_object;
pub mod load;

use std::time::Duration;

/// The number in environment variable `name`, else `default`.
pub fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `... poll read 12 connections and 3 quiet ones in 1.2ms, processed in ...`.
pub fn poll_duration(line: &str) -> Option<Duration> {
    let rest = &line[line.find("poll read")?..];
    let took = rest.split(" in ").nth(1)?.split(',').next()?;
    let (number, unit) = took.split_at(took.find(|c: char| c.is_ascii_alphabetic())?);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "ns" => value / 1e9,
        "µs" | "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// The q-quantile (0 to 1) of `values`, interpolated between neighbours.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}
