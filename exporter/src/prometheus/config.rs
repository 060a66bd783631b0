//! The `exporters.prometheus` section.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Settings of the Prometheus exporter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    /// Address and port of the `/metrics` endpoint. Default:
    /// `127.0.0.1:9464` (OpenTelemetry's Prometheus exporter port). The
    /// agent has dropped its capabilities when it binds: use a port of 1024
    /// or above.
    pub listen: SocketAddr,
    /// A series with no traffic in this many windows in a row is forgotten,
    /// so that the exporter's memory stays bounded (at most this many
    /// windows' worth of series, each capped by `processor.max_series`). A
    /// forgotten series that comes back starts again from zero, which
    /// Prometheus' `rate()` and `increase()` treat as a counter reset.
    /// Default: 12 (an hour of 5m windows); at least 1.
    pub idle_windows: u32,
}

impl Default for PrometheusConfig {
    fn default() -> PrometheusConfig {
        PrometheusConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            idle_windows: 12,
        }
    }
}

impl PrometheusConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.idle_windows == 0 {
            return Err(ConfigError::new(
                "exporters.prometheus.idle_windows must be at least 1 (the default is 12)",
            ));
        }
        Ok(())
    }
}
