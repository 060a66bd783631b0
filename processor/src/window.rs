//! Windows aligned to wall-clock multiples of the interval.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The start of the window of length `interval` that holds `t`: the latest
/// multiple of `interval` since the Unix epoch at or before `t`. Times before
/// the epoch (a broken clock) are taken as the epoch.
///
/// `interval` must not be zero ([`Config::validate`](crate::Config::validate)
/// sees to it).
pub fn window_start(t: SystemTime, interval: Duration) -> SystemTime {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let step = interval.as_nanos().max(1);
    let start = since_epoch - since_epoch % step;
    UNIX_EPOCH + nanos(start)
}

/// The end of the window that holds `t`: the first boundary after `t`.
pub fn window_end(t: SystemTime, interval: Duration) -> SystemTime {
    window_start(t, interval) + interval
}

fn nanos(n: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    // Both parts fit: n comes from a SystemTime's Duration.
    Duration::new(
        u64::try_from(n / NANOS_PER_SEC).unwrap_or(u64::MAX),
        (n % NANOS_PER_SEC) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    // 2024-01-01T12:00:00Z
    const NOON: u64 = 1_704_110_400;

    #[test]
    fn five_minute_windows_start_at_multiples_of_five_minutes() {
        let five = Duration::from_secs(300);
        assert_eq!(window_start(at(NOON, 0), five), at(NOON, 0));
        assert_eq!(window_start(at(NOON + 1, 0), five), at(NOON, 0));
        assert_eq!(window_start(at(NOON + 299, 999), five), at(NOON, 0));
        assert_eq!(window_start(at(NOON + 300, 0), five), at(NOON + 300, 0));
        assert_eq!(
            window_start(at(NOON + 7 * 60 + 30, 0), five),
            at(NOON + 300, 0)
        );
        assert_eq!(
            window_end(at(NOON + 7 * 60 + 30, 0), five),
            at(NOON + 600, 0)
        );
    }

    #[test]
    fn a_boundary_belongs_to_the_window_it_starts() {
        let one = Duration::from_secs(1);
        assert_eq!(window_start(at(NOON + 5, 0), one), at(NOON + 5, 0));
        assert_eq!(window_end(at(NOON + 5, 0), one), at(NOON + 6, 0));
    }

    #[test]
    fn odd_intervals_align_to_the_epoch() {
        let seven = Duration::from_secs(7);
        let start = window_start(at(NOON + 3, 0), seven);
        let since = start.duration_since(UNIX_EPOCH).unwrap();
        assert_eq!(since.as_secs() % 7, 0);
        assert!(start <= at(NOON + 3, 0) && at(NOON + 3, 0) < start + seven);

        let half = Duration::from_millis(1500);
        assert_eq!(window_start(at(NOON, 1400), half), at(NOON, 0));
        assert_eq!(window_start(at(NOON, 1600), half), at(NOON, 1500));
    }

    #[test]
    fn times_before_the_epoch_are_taken_as_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(window_start(before, Duration::from_secs(60)), UNIX_EPOCH);
    }
}
