//! Why the processor refused its configuration.

use std::time::Duration;

/// Why a [`Processor`](crate::Processor) could not be built. Each message is
/// one line that names the key and what to do.
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
    /// `max_series` is zero.
    #[error("processor.max_series must be at least 1 (the default is 10000)")]
    NoSeries,
    /// A `processor.dns` setting out of range.
    #[error("{0}")]
    Dns(String),
    /// A selected attribute that nothing sets.
    #[error(
        "processor.attributes: `{name}` is never set: it is not one of flowtel's own attributes and no mapping gives it; {hint}"
    )]
    UnknownAttribute {
        /// The name as written.
        name: String,
        /// The closest known name, or the list of known names.
        hint: String,
    },
}
