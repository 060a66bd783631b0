//! flowtel's exporters: where the processor's reports go.
//!
//! An [`Exporter`] is pushed every [`PollReport`] (the flows active since the
//! previous poll) and every closed [`WindowReport`]. The console exporters
//! write them to a terminal or a pipe, as a table of the busiest flows
//! ([`console::Table`]) or as JSON lines ([`console::JsonLines`]). The OTLP
//! exporter ([`otlp::OtlpExporter`]) sends each closed window as OTLP
//! metrics to a collector or to Datadog's intake ([`datadog`]). The
//! Prometheus exporter ([`prometheus::PrometheusExporter`]) adds them into
//! cumulative counters that Prometheus scrapes at `GET /metrics`. [`Config`]
//! is the `exporters` section; its [`Plan`] says which run, and [`Fanout`]
//! drives them together.
//!
//! ```
//! use exporter::{console, Exporter};
//!
//! let mut out = console::exporter(console::Format::Json, Vec::new());
//! # let report = processor::PollReport {
//! #     start: std::time::SystemTime::UNIX_EPOCH,
//! #     end: std::time::SystemTime::UNIX_EPOCH,
//! #     flows: vec![], health: Default::default(), counter_resets: 0,
//! #     dns_lookups: 0, dns_health: Default::default() };
//! out.export_poll(&report)?; // report from processor.ingest(...)
//! # Ok::<(), exporter::Error>(())
//! ```

#![deny(missing_docs)]

mod config;
pub mod console;
pub mod datadog;
mod error;
mod fanout;
pub mod health;
mod log_limit;
pub mod metrics;
pub mod otlp;
pub mod prometheus;
mod secret;

pub use config::{Config, ConsoleConfig, Plan};
pub use error::{ConfigError, Error};
pub use fanout::Fanout;
pub use log_limit::LogLimit;
pub use secret::{Secret, REDACTED};

use processor::{PollReport, WindowReport};

/// A destination for flow reports. Push model: the driver calls it once per
/// poll and once per closed window, in time order.
pub trait Exporter {
    /// Exports the flows active in one poll period and the receiver's health.
    fn export_poll(&mut self, report: &PollReport) -> Result<(), Error>;

    /// Exports one closed window.
    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error>;

    /// Called once when the agent stops, after the last window: sends or
    /// writes out what is still buffered. By default, nothing to do.
    fn close(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

impl<E: Exporter + ?Sized> Exporter for Box<E> {
    fn export_poll(&mut self, report: &PollReport) -> Result<(), Error> {
        (**self).export_poll(report)
    }

    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error> {
        (**self).export_window(report)
    }

    fn close(&mut self) -> Result<(), Error> {
        (**self).close()
    }
}
