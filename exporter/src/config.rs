//! The `exporters` section of the configuration: which exporters run and
//! how each is set up. Every exporter is optional; with none configured (and
//! no `OTEL_EXPORTER_OTLP_ENDPOINT` in the environment) the agent prints a
//! table to the console.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::console::Format;
use crate::datadog::DatadogConfig;
use crate::otlp::{Destination, OtlpConfig, OtlpEnv};
use crate::prometheus::PrometheusConfig;
use crate::ConfigError;

/// Settings of the exporters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Flows on stdout, as a table or JSON lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
    /// Windows to an OTLP backend (collector, Grafana, any OTLP intake).
    /// Also enabled, from the environment alone, when
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`
    /// is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp: Option<OtlpConfig>,
    /// Windows to Datadog's OTLP intake.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datadog: Option<DatadogConfig>,
    /// Cumulative counters for Prometheus to scrape at `GET /metrics`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prometheus: Option<PrometheusConfig>,
    /// Extra resource attributes on every exported window, e.g.
    /// `deployment.environment: prod`; added to (and winning over) those of
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_attributes: BTreeMap<String, String>,
}

/// The console exporter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// `table` (default) or `json`.
    pub format: Format,
}

/// The exporters to start, every setting resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The console, if it runs.
    pub console: Option<Format>,
    /// OTLP destinations (the `otlp` exporter, then `datadog`).
    pub destinations: Vec<Destination>,
    /// The Prometheus endpoint, if it runs.
    pub prometheus: Option<PrometheusConfig>,
    /// Resource attributes: the environment's, then the file's.
    pub resource_attributes: BTreeMap<String, String>,
}

impl Config {
    /// True when no exporter is configured in the file.
    pub fn is_empty(&self) -> bool {
        self.console.is_none()
            && self.otlp.is_none()
            && self.datadog.is_none()
            && self.prometheus.is_none()
    }

    /// Checks the section against the process environment; the error is one
    /// line that names the key and what to do.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.plan(&OtlpEnv::from_process()?).map(|_| ())
    }

    /// Resolves which exporters run, and how, over `env`. With nothing
    /// configured and no endpoint in the environment, the console table.
    pub fn plan(&self, env: &OtlpEnv) -> Result<Plan, ConfigError> {
        self.plan_with_state(env, None)
    }

    /// [`Config::plan`], for an agent that keeps its state in `state_dir`
    /// (`receiver.persistence`): each OTLP destination without a
    /// `spill_dir` keeps its queue on disk there, in `otlp-queue` or
    /// `datadog-queue`.
    pub fn plan_with_state(
        &self,
        env: &OtlpEnv,
        state_dir: Option<&Path>,
    ) -> Result<Plan, ConfigError> {
        let in_state = |name: &str| state_dir.map(|dir| dir.join(name));
        let mut destinations = Vec::new();
        let otlp = match &self.otlp {
            Some(otlp) => Some(Destination::resolve(otlp, env)?),
            None if env.names_an_endpoint() => {
                Some(Destination::resolve(&OtlpConfig::default(), env)?)
            }
            None => None,
        };
        if let Some(mut otlp) = otlp {
            otlp.spill_dir = otlp.spill_dir.or_else(|| in_state("otlp-queue"));
            destinations.push(otlp);
        }
        if let Some(datadog) = &self.datadog {
            let mut datadog = datadog.destination()?;
            datadog.spill_dir = datadog.spill_dir.or_else(|| in_state("datadog-queue"));
            destinations.push(datadog);
        }
        if let Some(prometheus) = &self.prometheus {
            prometheus.validate()?;
        }
        let console = match &self.console {
            Some(console) => Some(console.format),
            None if destinations.is_empty() && self.prometheus.is_none() => Some(Format::Table),
            None => None,
        };
        let mut resource_attributes = env.resource_attributes.clone();
        resource_attributes.extend(self.resource_attributes.clone());
        Ok(Plan {
            console,
            destinations,
            prometheus: self.prometheus.clone(),
            resource_attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{Compression, Protocol, Temporality};

    fn parse(json: &str) -> Result<Config, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn nothing_configured_is_the_console_table() {
        let plan = Config::default().plan(&OtlpEnv::default()).unwrap();
        assert_eq!(plan.console, Some(Format::Table));
        assert!(plan.destinations.is_empty());
    }

    #[test]
    fn an_endpoint_in_the_environment_alone_enables_otlp_without_the_console() {
        let env = OtlpEnv {
            endpoint: Some("http://127.0.0.1:4318".into()),
            ..OtlpEnv::default()
        };
        let plan = Config::default().plan(&env).unwrap();
        assert_eq!(plan.console, None);
        assert_eq!(plan.destinations[0].url, "http://127.0.0.1:4318/v1/metrics");
    }

    #[test]
    fn otlp_datadog_and_console_run_together() {
        let config = parse(
            r#"{"console": {"format": "json"},
                "otlp": {"endpoint": "http://c:4317", "insecure": true, "protocol": "grpc", "compression": "gzip",
                         "timeout": "2s", "temporality": "cumulative", "headers": {"x-token": "t0psecret"}},
                "datadog": {"api_key": "k"},
                "resource_attributes": {"deployment.environment": "prod"}}"#,
        )
        .unwrap();
        let plan = config.plan(&OtlpEnv::default()).unwrap();
        assert_eq!(plan.console, Some(Format::Json));
        let otlp = &plan.destinations[0];
        assert_eq!(otlp.protocol, Protocol::Grpc);
        assert_eq!(otlp.compression, Compression::Gzip);
        assert_eq!(otlp.temporality, Temporality::Cumulative);
        let env = OtlpEnv {
            temporality: Some(Temporality::Delta),
            ..OtlpEnv::default()
        };
        let plan = config.plan(&env).unwrap();
        assert_eq!(
            plan.destinations[0].temporality,
            Temporality::Cumulative,
            "the file wins"
        );
        assert_eq!(otlp.timeout, std::time::Duration::from_secs(2));
        assert_eq!(
            plan.destinations[1].url,
            "https://otlp.datadoghq.com/v1/metrics"
        );
        assert_eq!(plan.resource_attributes["deployment.environment"], "prod");

        let printed = serde_json::to_string(&config).unwrap();
        assert!(!printed.contains("t0psecret"), "{printed}");
        assert!(printed.contains(r#""x-token":"<redacted>""#), "{printed}");
        assert!(printed.contains(r#""timeout":"2s""#), "{printed}");
    }

    #[test]
    fn prometheus_alone_quiets_the_console_and_prints_back() {
        let config = parse(r#"{"prometheus": {"listen": "127.0.0.1:9999"}}"#).unwrap();
        let plan = config.plan(&OtlpEnv::default()).unwrap();
        assert_eq!(plan.console, None);
        let prometheus = plan.prometheus.unwrap();
        assert_eq!(prometheus.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(prometheus.idle_windows, 12);
        assert_eq!(
            serde_json::to_string(&config).unwrap(),
            r#"{"prometheus":{"listen":"127.0.0.1:9999","idle_windows":12}}"#
        );
        let default = parse(r#"{"prometheus": {}}"#).unwrap();
        assert_eq!(
            default.prometheus.unwrap().listen.to_string(),
            "127.0.0.1:9464"
        );
        assert!(parse(r#"{"prometheus": {"port": 9464}}"#).is_err());
        assert!(parse(r#"{"prometheus": {"listen": "localhost"}}"#).is_err());
        let error = parse(r#"{"prometheus": {"idle_windows": 0}}"#)
            .unwrap()
            .plan(&OtlpEnv::default())
            .unwrap_err();
        assert!(error.to_string().contains("idle_windows"), "{error}");
    }

    #[test]
    fn with_a_state_directory_each_destination_queues_on_disk_unless_given_a_spill_dir() {
        let config = parse(
            r#"{"otlp":{"endpoint":"http://localhost:4318/v1/metrics"},"datadog":{"api_key":"k"}}"#,
        )
        .unwrap();
        let state = Path::new("/var/lib/flowtel");
        let plan = config
            .plan_with_state(&OtlpEnv::default(), Some(state))
            .unwrap();
        let dirs: Vec<_> = plan
            .destinations
            .iter()
            .map(|d| d.spill_dir.clone())
            .collect();
        assert_eq!(
            dirs,
            [
                Some(state.join("otlp-queue")),
                Some(state.join("datadog-queue"))
            ]
        );
        let given = parse(r#"{"otlp":{"spill_dir":"/spill"}}"#).unwrap();
        let plan = given
            .plan_with_state(&OtlpEnv::default(), Some(state))
            .unwrap();
        assert_eq!(plan.destinations[0].spill_dir, Some("/spill".into()));
        let plan = config.plan(&OtlpEnv::default()).unwrap();
        assert!(plan.destinations.iter().all(|d| d.spill_dir.is_none()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(parse(r#"{"otlp": {"endpont": "http://c"}}"#).is_err());
        assert!(parse(r#"{"otlp": {"protocol": "http/json"}}"#).is_err());
        assert!(parse(r#"{"otlp": {"queue_size": 0}}"#).is_err());
        assert!(parse(r#"{"otlp": {"tls": {"ca": "x"}}}"#).is_err());
        let error = parse(r#"{"datadog": {"api_key": "k", "temporality": "cumulative"}}"#)
            .unwrap()
            .plan(&OtlpEnv::default())
            .unwrap_err();
        assert!(!error.to_string().contains('\n'));
    }
}
