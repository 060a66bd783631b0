//! The statistics of the rounds: quantiles, per-round ratios, and the
//! median with its middle half.

use crate::load::Sample;

/// The q-quantile (0 to 1) of `values`, interpolated between neighbours.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64)
}

/// Each round's value of `f` under one watcher over its value under another.
pub fn round_ratios(of: &[Sample], to: &[Sample], f: fn(&Sample) -> f64) -> Vec<f64> {
    of.iter().zip(to).map(|(s, b)| f(s) / f(b)).collect()
}

/// "median (middle half low-high)" of per-round ratios.
pub fn spread(ratios: &[f64]) -> String {
    format!(
        "{:.4} (middle half {:.4}-{:.4})",
        quantile(ratios, 0.5),
        quantile(ratios, 0.25),
        quantile(ratios, 0.75)
    )
}
