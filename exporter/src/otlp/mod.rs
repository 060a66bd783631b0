//! The OTLP exporter: closed windows as OpenTelemetry metrics, sent over
//! OTLP/gRPC or OTLP/HTTP protobuf with retries and a bounded queue.
//!
//! - [`config`]: the `exporters.otlp` section; [`env`](mod@env): the standard
//!   `OTEL_*` variables; [`destination`]: both resolved into one target.
//! - [`encode`]: a window as an `ExportMetricsServiceRequest`.
//! - [`transport`]: one request over gRPC or HTTP; [`retry`]: which
//!   failures are retried and when.
//! - [`delivery`]: the sending task and its queue; [`exporter`]: the
//!   [`Exporter`](crate::Exporter) the agent drives.

pub mod config;
pub mod delivery;
pub mod destination;
pub mod encode;
pub mod env;
pub mod exporter;
pub mod queue;
pub mod retry;
pub mod spill;
pub mod transport;

pub use config::{
    Compression, OtlpConfig, Protocol, QueueSize, Temporality, TlsConfig, DEFAULT_QUEUE_BYTES,
};
pub use destination::Destination;
pub use env::OtlpEnv;
pub use exporter::OtlpExporter;
