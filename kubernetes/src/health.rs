//! Counts of what went wrong with the API server, for the agent's health
//! metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The counters the watchers bump; cheap to clone, shared with the index.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    relists: AtomicU64,
    malformed: AtomicU64,
    api_errors: AtomicU64,
}

/// The counts, cumulative since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounts {
    /// Watches that were started again from a new list (after 410 Gone or
    /// an error the watch could not resume from); the first list of each
    /// kind is not counted.
    pub relists: u64,
    /// Objects skipped because they could not be read (a field of the wrong
    /// type, no name or UID).
    pub malformed: u64,
    /// Failed requests to the API server (refused, timed out, an error
    /// status, a body that is not the object asked for); each is retried
    /// with a backoff.
    pub api_errors: u64,
}

impl Health {
    /// The counts now.
    pub fn counts(&self) -> HealthCounts {
        HealthCounts {
            relists: self.0.relists.load(Ordering::Relaxed),
            malformed: self.0.malformed.load(Ordering::Relaxed),
            api_errors: self.0.api_errors.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn relisted(&self) {
        self.0.relists.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn malformed(&self) {
        self.0.malformed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn api_error(&self) {
        self.0.api_errors.fetch_add(1, Ordering::Relaxed);
    }
}
