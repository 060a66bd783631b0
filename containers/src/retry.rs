//! Asking a runtime's API again and again: a session (a list, then events)
//! until it ends or fails, then a pause that doubles up to 30 s. The first
//! failure of a streak is logged, and the first answer after it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::ContainerIndex;

/// How long one request (not an event stream) may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The pause after a failure doubles up to this.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Whether a runtime's API is failing now.
pub(crate) struct Streak {
    /// `the Docker API at /var/run/docker.sock`.
    what: String,
    failing: AtomicBool,
}

impl Streak {
    /// The API answered (its list was read).
    pub(crate) fn answered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("container names: {} answers again", self.what);
        }
    }

    fn failed(&self, error: &str) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "container names: {} failed: {error}; new containers stay unnamed until it answers (asking again every {} at most)",
                self.what,
                humantime::format_duration(MAX_PAUSE)
            );
        }
    }
}

/// Runs `session` forever; each failure is counted in `index`.
pub(crate) async fn forever<F, Fut>(what: String, index: ContainerIndex, mut session: F)
where
    F: FnMut(Arc<Streak>) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let streak = Arc::new(Streak {
        what,
        failing: AtomicBool::new(false),
    });
    let mut pause = Duration::from_secs(1);
    loop {
        match session(Arc::clone(&streak)).await {
            // The stream ended: the daemon stopped or restarted.
            Ok(()) => pause = Duration::from_secs(1),
            Err(error) => {
                index.count_error();
                streak.failed(&error);
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// A request with its whole answer bounded in time.
pub(crate) async fn timed<T, E: std::fmt::Display>(
    request: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(short(&error.to_string())),
        Err(_) => Err(no_answer()),
    }
}

/// The error of a request that took longer than [`REQUEST_TIMEOUT`].
pub(crate) fn no_answer() -> String {
    format!(
        "no answer within {}",
        humantime::format_duration(REQUEST_TIMEOUT)
    )
}

/// A runtime's words, at most one line of 200 characters: its error body
/// may be anything.
pub(crate) fn short(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runtime_error_is_told_in_one_short_line() {
        assert_eq!(short("bad\nrest"), "bad");
        assert_eq!(short(&"x".repeat(300)).len(), 203);
    }
}
