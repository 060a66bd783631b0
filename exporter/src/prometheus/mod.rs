//! The Prometheus exporter: closed windows added into cumulative counters,
//! served in the Prometheus text exposition format at `GET /metrics`.
//!
//! - [`config`]: the `exporters.prometheus` section.
//! - [`exposition`]: the running totals and their text, named by the
//!   OpenTelemetry-to-Prometheus translation rules.
//! - [`exporter`]: the [`Exporter`](crate::Exporter) the agent drives and the
//!   HTTP server Prometheus scrapes.

pub mod config;
pub mod exporter;
pub mod exposition;

pub use config::PrometheusConfig;
pub use exporter::PrometheusExporter;
pub use exposition::Exposition;
