//! flowtel's processor: turns the receiver's cumulative per-connection
//! samples into per-flow deltas and folds them into windows aligned to
//! wall-clock multiples of an interval.
//!
//! - [`DeltaTracker`] turns cumulative counters into deltas per connection.
//! - [`FlowKey`] groups connections into flows (source = local end,
//!   destination = remote end, ephemeral client ports collapsed);
//!   [`FlowStats`] is what a flow did in a period.
//! - [`Resolver`] names a flow's ends by the [`mapping`]s; a closed
//!   window's flows are grouped into [`Series`] by the selected attributes,
//!   at most `max_series` of them plus one overflow series.
//! - [`Processor`] ties them together: every poll gives a [`PollReport`],
//!   every closed window a [`WindowReport`].
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! let started = SystemTime::now();
//! let config = processor::Config {
//!     interval: Duration::from_secs(60),
//!     ..processor::Config::default()
//! };
//! let mut processor = processor::Processor::new(config, started)?;
//!
//! // Every poll interval, and exactly at processor.window_end():
//! let poll = receiver::Poll::default(); // from receiver.poll()
//! let now = SystemTime::now();
//! let report = processor.ingest(&poll, now);
//! assert!(report.flows.is_empty());
//! if let Some(window) = processor.close_window(now) {
//!     println!("{} series in the window", window.series.len());
//! }
//! // At shutdown, after a last poll:
//! let partial = processor.flush(SystemTime::now());
//! # let _ = partial;
//! # Ok::<(), processor::Error>(())
//! ```

#![deny(missing_docs)]

mod attributes;
mod config;
mod container_names;
mod delta;
pub mod dns;
mod end_names;
mod error;
mod flow;
mod k8s_names;
pub mod mapping;
mod processor;
mod report;
mod resolve;
mod series;
#[cfg(test)]
mod test_samples;
pub mod window;

pub use attributes::{AttributeValue, Attributes};
pub use config::Config;
pub use delta::{DeltaTracker, SampleDelta};
pub use end_names::{EndNames, RemoteEnd, NAMED_ATTRIBUTES};
pub use error::Error;
pub use flow::{
    udp_client_end, ClientEnd, ConnectionFailures, FlowKey, FlowStats, NetworkType, RttSummary,
    BUILT_IN_ATTRIBUTES,
};
pub use k8s_names::KubernetesNames;
pub use processor::{Checkpoint, Processor};
pub use report::{Flow, PollReport, WindowReport};
pub use resolve::Resolver;
pub use series::{Series, OVERFLOW_ATTRIBUTE};
