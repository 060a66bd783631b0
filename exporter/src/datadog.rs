//! The `exporters.datadog` section: Datadog's OTLP metrics intake, as
//! Datadog documents it: OTLP/HTTP protobuf to `https://otlp.<site>/v1/metrics`
//! with the API key in the `dd-api-key` header, delta temporality only.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::otlp::{Compression, Destination, Protocol, QueueSize, Temporality, TlsConfig};
use crate::{ConfigError, Secret};

/// Settings of the Datadog exporter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatadogConfig {
    /// The Datadog site, e.g. `datadoghq.com` (the default), `datadoghq.eu`,
    /// `us5.datadoghq.com`.
    #[serde(default = "default_site")]
    pub site: String,
    /// The API key (use `${DD_API_KEY}`). Required; never printed.
    pub api_key: Secret,
    /// Must be `delta` (the default): Datadog's intake takes delta sums only.
    #[serde(default)]
    pub temporality: Temporality,
    /// How long one request may take. Default: 10s.
    #[serde(default = "default_timeout", with = "receiver::duration_serde")]
    pub timeout: Duration,
    /// Windows waiting while the intake is slow or down. Default: 64.
    #[serde(default)]
    pub queue_size: QueueSize,
}

fn default_site() -> String {
    "datadoghq.com".to_owned()
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl DatadogConfig {
    /// Checks the settings and resolves them into a destination.
    pub fn destination(&self) -> Result<Destination, ConfigError> {
        if self.temporality == Temporality::Cumulative {
            return Err(ConfigError::new(
                "exporters.datadog.temporality is cumulative, but Datadog's OTLP intake takes delta only: remove it or set delta",
            ));
        }
        if self.api_key.expose().trim().is_empty() {
            return Err(ConfigError::new(
                "exporters.datadog.api_key is empty: set it, e.g. api_key: ${DD_API_KEY}",
            ));
        }
        let site = self.site.trim();
        if site.is_empty()
            || !site
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError::new(format!(
                "exporters.datadog.site {:?} is not a Datadog site such as datadoghq.com or datadoghq.eu",
                self.site
            )));
        }
        let mut headers = BTreeMap::new();
        headers.insert("dd-api-key".to_owned(), self.api_key.clone());
        let destination = Destination {
            url: format!("https://otlp.{site}/v1/metrics"),
            protocol: Protocol::HttpProtobuf,
            headers,
            compression: Compression::Gzip,
            timeout: self.timeout,
            temporality: Temporality::Delta,
            tls: TlsConfig::default(),
            queue_size: self.queue_size.get(),
            queue_bytes: crate::otlp::DEFAULT_QUEUE_BYTES,
            insecure: false,
            spill_dir: None,
        };
        destination.check()?;
        Ok(destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> DatadogConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn datadog_sends_otlp_http_to_the_sites_intake_with_the_key_header() {
        let d = parse(r#"{"site": "datadoghq.eu", "api_key": "k123"}"#)
            .destination()
            .unwrap();
        assert_eq!(d.url, "https://otlp.datadoghq.eu/v1/metrics");
        assert_eq!(d.protocol, Protocol::HttpProtobuf);
        assert_eq!(d.headers["dd-api-key"].expose(), "k123");
        assert_eq!(d.temporality, Temporality::Delta);
        let d = parse(r#"{"api_key": "k"}"#).destination().unwrap();
        assert_eq!(d.url, "https://otlp.datadoghq.com/v1/metrics");
    }

    #[test]
    fn cumulative_with_datadog_is_a_config_error() {
        let error = parse(r#"{"api_key": "k", "temporality": "cumulative"}"#)
            .destination()
            .unwrap_err();
        assert!(error.to_string().contains("delta only"), "{error}");
    }

    #[test]
    fn the_key_is_required_and_never_printed() {
        assert!(serde_json::from_str::<DatadogConfig>(r#"{"site": "datadoghq.com"}"#).is_err());
        let config = parse(r#"{"api_key": "supersecret"}"#);
        let shown = serde_json::to_string(&config).unwrap() + &format!("{config:?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
