//! A histogram of lookup durations with fixed bucket bounds, as
//! OpenTelemetry's explicit-bucket histogram carries it.

use std::time::Duration;

/// The buckets' upper bounds, in seconds (the last bucket has none).
pub const LATENCY_BOUNDS_SECS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Durations recorded into [`LATENCY_BOUNDS_SECS`]' buckets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencyHistogram {
    /// One count per bucket: `LATENCY_BOUNDS_SECS.len() + 1` once anything
    /// is recorded (empty before).
    pub bucket_counts: Vec<u64>,
    /// How many durations.
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_secs: f64,
    /// The least, in seconds.
    pub min_secs: f64,
    /// The greatest, in seconds.
    pub max_secs: f64,
}

impl LatencyHistogram {
    /// Counts one duration.
    pub fn record(&mut self, duration: Duration) {
        let secs = duration.as_secs_f64();
        if self.bucket_counts.is_empty() {
            self.bucket_counts = vec![0; LATENCY_BOUNDS_SECS.len() + 1];
            self.min_secs = secs;
            self.max_secs = secs;
        }
        let bucket = LATENCY_BOUNDS_SECS.partition_point(|bound| *bound < secs);
        self.bucket_counts[bucket] += 1;
        self.count += 1;
        self.sum_secs += secs;
        self.min_secs = self.min_secs.min(secs);
        self.max_secs = self.max_secs.max(secs);
    }

    /// Adds `other`'s durations.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.bucket_counts.iter_mut().zip(&other.bucket_counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_secs += other.sum_secs;
        self.min_secs = self.min_secs.min(other.min_secs);
        self.max_secs = self.max_secs.max(other.max_secs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_bucket_of_their_upper_bound() {
        let mut h = LatencyHistogram::default();
        h.record(Duration::from_micros(300));
        h.record(Duration::from_millis(1));
        h.record(Duration::from_secs(60));
        assert_eq!(h.bucket_counts[0], 1);
        assert_eq!(h.bucket_counts[1], 1, "a bound is inclusive");
        assert_eq!(h.bucket_counts[LATENCY_BOUNDS_SECS.len()], 1);
        assert_eq!(h.count, 3);
        assert_eq!(h.max_secs, 60.0);
        let mut sum = LatencyHistogram::default();
        sum.merge(&h);
        sum.merge(&h);
        assert_eq!(sum.count, 6);
        assert_eq!(sum.min_secs, 0.0003);
    }
}
