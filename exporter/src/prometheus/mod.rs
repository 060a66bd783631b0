//! The Prometheus exporter: closed windows added into cumulative counters,
//! served in the Prometheus text exposition format at `GET /metrics`.
//!
//! - [`config`]: the `exporters.prometheus` section.
//! - [`names`]: OpenTelemetry names as Prometheus names and labels.
//! - [`text`]: the text exposition format's quoting, labels and numbers.
//! - [`exposition`]: the running totals of every series, and their text.
//! - [`exporter`]: the [`Exporter`](crate::Exporter) the agent drives and the
//!   HTTP server Prometheus scrapes.

pub mod config;
pub mod exporter;
pub mod exposition;
pub mod names;
pub mod text;

pub use config::PrometheusConfig;
pub use exporter::PrometheusExporter;
pub use exposition::Exposition;
