//! Why the processor refused its configuration.

use std::time::Duration;

/// Why a [`Processor`](crate::Processor) could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured window is shorter than [`Config::MIN_INTERVAL`](crate::Config::MIN_INTERVAL).
    #[error(
        "the window interval {} is shorter than the minimum of 1s",
        humantime::format_duration(*interval)
    )]
    IntervalTooShort {
        /// The interval that was asked for.
        interval: Duration,
    },
}
