//! [`LogLimit`]: when a failure that comes back is worth another log line.

use std::time::{Duration, Instant};

/// Says when a recurring failure is worth a log line: at its first
/// occurrence, then again only after [`LogLimit::QUIET`] without a line, so
/// that a failure that comes and goes (a nearly full disk, where a removed
/// file makes room for one more) is not logged at every window. What it
/// keeps quiet is still counted by the caller.
#[derive(Debug, Default)]
pub struct LogLimit {
    logged: Option<Instant>,
}

impl LogLimit {
    /// How long after one line the next one waits.
    pub const QUIET: Duration = Duration::from_secs(600);

    /// True when a line is due now (and then counts it as logged).
    pub fn allow(&mut self) -> bool {
        let due = self.logged.is_none_or(|at| at.elapsed() >= LogLimit::QUIET);
        if due {
            self.logged = Some(Instant::now());
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_is_due_and_the_next_only_after_the_quiet_time() {
        let mut limit = LogLimit::default();
        assert!(limit.allow());
        assert!(!limit.allow());
        limit.logged = Some(Instant::now() - LogLimit::QUIET);
        assert!(limit.allow());
        assert!(!limit.allow());
    }
}
