//! The `exporters.otlp` section: where and how windows are sent to an OTLP
//! backend. Every key is optional; what the file leaves out is taken from the
//! standard `OTEL_EXPORTER_OTLP_*` variables (see [`super::env`]), then from
//! the OpenTelemetry defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Secret;

/// Settings of the OTLP exporter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The URL windows are sent to, used as is (for HTTP, include the
    /// `/v1/metrics` path). Default: `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`,
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT` (with `/v1/metrics` appended for
    /// HTTP), else `http://localhost:4317` for gRPC and
    /// `http://localhost:4318/v1/metrics` for HTTP.
    /// A user and password in it are redacted when the configuration is
    /// printed.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted_endpoint"
    )]
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`. Default: `OTEL_EXPORTER_OTLP_PROTOCOL`,
    /// else `http/protobuf` (the specification's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    /// Extra request headers (gRPC metadata), e.g. an authorization token.
    /// Added to those of `OTEL_EXPORTER_OTLP_HEADERS`; the file wins on the
    /// same name. Values are secrets: never logged or printed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// `gzip` or `none`. Default: `OTEL_EXPORTER_OTLP_COMPRESSION`, else
    /// `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
    /// How long one request may take, e.g. `10s`. Default:
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else 10s.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_duration"
    )]
    pub timeout: Option<Duration>,
    /// `delta` (each window's own counts) or `cumulative` (a running total
    /// per series since it was first seen, for Prometheus). Default:
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`, else `delta`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temporality: Option<Temporality>,
    /// TLS for `https://` endpoints.
    #[serde(skip_serializing_if = "TlsConfig::is_default")]
    pub tls: TlsConfig,
    /// Allow a cleartext `http://` endpoint on another host (flows and
    /// headers then cross the network unencrypted). Default:
    /// `OTEL_EXPORTER_OTLP_INSECURE`, else false: only loopback endpoints
    /// may be `http://`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    /// How many closed windows wait, in order, while the backend is slow or
    /// down; when a new window finds the queue full, the oldest is dropped
    /// and counted. Default: 64.
    pub queue_size: QueueSize,
    /// The most bytes (of encoded requests) the queue holds; beyond it the
    /// oldest windows are dropped, as for `queue_size`. Default: 64 MiB.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: u64,
    /// A directory that keeps the queue on disk: each window is written
    /// there when it closes and removed once the backend took it, so that
    /// the next agent, after a stop or a crash, sends what is left first,
    /// with its original timestamps. Default: `<state_dir>/otlp-queue` with
    /// `receiver.persistence`, else none (the queue is in memory only, and
    /// what it holds at a stop is counted as lost).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spill_dir: Option<std::path::PathBuf>,
}

fn redacted_endpoint<S: serde::Serializer>(url: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(&super::destination::redact_url(url)),
        None => s.serialize_none(),
    }
}

/// The default `queue_bytes`: 64 MiB.
pub const DEFAULT_QUEUE_BYTES: u64 = 64 << 20;

fn default_queue_bytes() -> u64 {
    DEFAULT_QUEUE_BYTES
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: None,
            protocol: None,
            headers: BTreeMap::new(),
            compression: None,
            timeout: None,
            temporality: None,
            tls: TlsConfig::default(),
            insecure: None,
            queue_size: QueueSize::default(),
            queue_bytes: DEFAULT_QUEUE_BYTES,
            spill_dir: None,
        }
    }
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Protocol {
    /// OTLP/gRPC (port 4317).
    #[serde(rename = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (port 4318, `/v1/metrics`).
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        })
    }
}

/// Request body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
}

/// How Sum data points count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Each point counts its window only. The default; what Datadog wants.
    #[default]
    Delta,
    /// Each point is the running total of its series since the series was
    /// first seen, which is its start time. What Prometheus wants.
    Cumulative,
}

/// TLS settings; the system's and the webpki roots are trusted by default.
/// Files not given here come from `OTEL_EXPORTER_OTLP_CERTIFICATE`,
/// `..._CLIENT_CERTIFICATE` and `..._CLIENT_KEY`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// A PEM file of CA certificates trusted besides the default roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (mutual TLS); needs `key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// Accept any server certificate. Only for tests against a self-signed
    /// backend; only with `http/protobuf`. Default: false.
    pub insecure_skip_verify: bool,
}

impl TlsConfig {
    fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }
}

/// The capacity of the queue of windows waiting to be sent: at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "usize", into = "usize")]
pub struct QueueSize(usize);

impl QueueSize {
    /// The number of windows.
    pub fn get(self) -> usize {
        self.0
    }
}

impl Default for QueueSize {
    fn default() -> QueueSize {
        QueueSize(64)
    }
}

impl TryFrom<usize> for QueueSize {
    type Error = String;

    fn try_from(n: usize) -> Result<QueueSize, String> {
        if n == 0 {
            return Err("queue_size must be at least 1 window".to_owned());
        }
        Ok(QueueSize(n))
    }
}

impl From<QueueSize> for usize {
    fn from(q: QueueSize) -> usize {
        q.0
    }
}

/// `Option<Duration>` as a human string.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        receiver::duration_serde::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => receiver::duration_serde::serialize(duration, s),
            None => s.serialize_none(),
        }
    }
}
