//! The statistics of the rounds: quantiles, per-round ratios, and the
//! median with its middle half.

use crate::load::Sample;

pub use crate::shared::quantile;

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
