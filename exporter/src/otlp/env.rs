//! The standard OpenTelemetry exporter variables, as the specification
//! defines them: `OTEL_EXPORTER_OTLP_{,METRICS_}{ENDPOINT,HEADERS,PROTOCOL,
//! COMPRESSION,TIMEOUT,CERTIFICATE,CLIENT_CERTIFICATE,CLIENT_KEY}` and
//! `OTEL_RESOURCE_ATTRIBUTES`. The signal-specific
//! variable wins over the generic one; the configuration file wins over both.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::config::{Compression, Protocol, Temporality};
use crate::{ConfigError, Secret};

/// What the environment says about the OTLP exporter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OtlpEnv {
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`: used as is.
    pub metrics_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: a base URL; HTTP appends `v1/metrics`.
    pub endpoint: Option<String>,
    /// `..._HEADERS`, generic first, signal-specific overriding.
    pub headers: BTreeMap<String, Secret>,
    /// `..._PROTOCOL`.
    pub protocol: Option<Protocol>,
    /// `..._COMPRESSION`.
    pub compression: Option<Compression>,
    /// `..._TIMEOUT`, in milliseconds.
    pub timeout: Option<Duration>,
    /// `OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE`: `delta`,
    /// `cumulative`, or `lowmemory` (delta for counters, which all of
    /// flowtel's Sums are), in any case.
    pub temporality: Option<Temporality>,
    /// `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: BTreeMap<String, String>,
    /// `..._CERTIFICATE`: a PEM file of CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// `..._CLIENT_CERTIFICATE`: the PEM client certificate (mutual TLS).
    pub cert_file: Option<PathBuf>,
    /// `..._CLIENT_KEY`: the client certificate's PEM private key.
    pub key_file: Option<PathBuf>,
    /// `..._INSECURE`: `true` allows cleartext `http://` to another host.
    pub insecure: Option<bool>,
}

impl OtlpEnv {
    /// Reads the process environment.
    pub fn from_process() -> Result<OtlpEnv, ConfigError> {
        OtlpEnv::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (the environment, or a map in
    /// tests). Empty values count as unset, as the specification says.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<OtlpEnv, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        // The metrics variable, else the generic one, with the name it came from.
        let pick = |suffix: &str| {
            let specific = format!("OTEL_EXPORTER_OTLP_METRICS_{suffix}");
            let generic = format!("OTEL_EXPORTER_OTLP_{suffix}");
            get(&specific)
                .map(|v| (specific, v))
                .or_else(|| get(&generic).map(|v| (generic, v)))
        };

        let mut headers = BTreeMap::new();
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        ] {
            if let Some(value) = get(name) {
                for (k, v) in parse_pairs(name, &value)? {
                    headers.insert(k, Secret::new(v));
                }
            }
        }
        let protocol = choice(
            pick("PROTOCOL"),
            &[
                ("grpc", Protocol::Grpc),
                ("http/protobuf", Protocol::HttpProtobuf),
            ],
        )?;
        let compression = choice(
            pick("COMPRESSION"),
            &[("gzip", Compression::Gzip), ("none", Compression::None)],
        )?;
        let preference = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE";
        let temporality = choice(
            get(preference).map(|v| (preference.to_owned(), v.to_ascii_lowercase())),
            &[
                ("delta", Temporality::Delta),
                ("cumulative", Temporality::Cumulative),
                ("lowmemory", Temporality::Delta),
            ],
        )?;
        let insecure = choice(
            pick("INSECURE").map(|(name, v)| (name, v.to_ascii_lowercase())),
            &[("true", true), ("false", false)],
        )?;
        let timeout = match pick("TIMEOUT") {
            None => None,
            Some((name, v)) => Some(Duration::from_millis(v.trim().parse().map_err(|_| {
                ConfigError::new(format!(
                    "{name}={v:?} is not a timeout: give whole milliseconds, e.g. 10000"
                ))
            })?)),
        };
        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES") {
            Some(value) => parse_pairs("OTEL_RESOURCE_ATTRIBUTES", &value)?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        Ok(OtlpEnv {
            metrics_endpoint: get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            endpoint: get("OTEL_EXPORTER_OTLP_ENDPOINT"),
            headers,
            protocol,
            compression,
            timeout,
            temporality,
            resource_attributes,
            ca_file: pick("CERTIFICATE").map(|(_, v)| PathBuf::from(v)),
            cert_file: pick("CLIENT_CERTIFICATE").map(|(_, v)| PathBuf::from(v)),
            key_file: pick("CLIENT_KEY").map(|(_, v)| PathBuf::from(v)),
            insecure,
        })
    }

    /// True when an endpoint variable is set: the agent then enables the
    /// OTLP exporter even without an `otlp` section.
    pub fn names_an_endpoint(&self) -> bool {
        self.metrics_endpoint.is_some() || self.endpoint.is_some()
    }
}

/// The value of a variable that names one of `choices`.
fn choice<T: Copy>(
    variable: Option<(String, String)>,
    choices: &[(&str, T)],
) -> Result<Option<T>, ConfigError> {
    let Some((name, value)) = variable else {
        return Ok(None);
    };
    match choices.iter().find(|(text, _)| *text == value.trim()) {
        Some(&(_, chosen)) => Ok(Some(chosen)),
        None => {
            let names: Vec<&str> = choices.iter().map(|(text, _)| *text).collect();
            Err(ConfigError::new(format!(
                "{name}={value:?} is not supported: use {}",
                names.join(" or ")
            )))
        }
    }
}

/// `key1=value1,key2=value2` (the W3C baggage form the specification uses
/// for headers and resource attributes), values percent-decoded.
fn parse_pairs(variable: &str, text: &str) -> Result<Vec<(String, String)>, ConfigError> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let Some((key, value)) = item.split_once('=') else {
                // Never echo the item: it may be a header carrying a key.
                return Err(ConfigError::new(format!(
                    "{variable} has an entry without '=': write key1=value1,key2=value2"
                )));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(ConfigError::new(format!(
                    "{variable} has an entry with an empty key: write key1=value1,key2=value2"
                )));
            }
            Ok((key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

/// Decodes `%XX` escapes; a malformed escape is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<OtlpEnv, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtlpEnv::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn nothing_set_is_all_defaults() {
        assert_eq!(env(&[]).unwrap(), OtlpEnv::default());
    }

    #[test]
    fn the_metrics_variables_win_over_the_generic_ones() {
        let got = env(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=2"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "b=3"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
            ("OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY", "/etc/key.pem"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
                "Cumulative",
            ),
        ])
        .unwrap();
        assert_eq!(got.temporality, Some(Temporality::Cumulative));
        assert_eq!(got.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(got.key_file, Some(PathBuf::from("/etc/key.pem")));
        assert_eq!(got.protocol, Some(Protocol::HttpProtobuf));
        assert_eq!(got.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(got.compression, Some(Compression::Gzip));
        let headers: Vec<_> = got
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose()))
            .collect();
        assert_eq!(headers, [("a", "1"), ("b", "3")]);
    }

    #[test]
    fn header_and_attribute_values_are_percent_decoded() {
        let got = env(&[
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20abc, x=%2C",
            ),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,team=net%3Dops",
            ),
        ])
        .unwrap();
        assert_eq!(got.headers["authorization"].expose(), "Bearer abc");
        assert_eq!(got.headers["x"].expose(), ",");
        assert_eq!(got.resource_attributes["team"], "net=ops");
        assert_eq!(got.resource_attributes["deployment.environment"], "prod");
    }

    #[test]
    fn bad_values_are_one_line_errors_that_never_echo_a_header() {
        let error = env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "OTEL_EXPORTER_OTLP_PROTOCOL=\"http/json\" is not supported: use grpc or http/protobuf"
        );
        let error = env(&[("OTEL_EXPORTER_OTLP_HEADERS", "secretkey")]).unwrap_err();
        assert!(!error.to_string().contains("secretkey"), "{error}");
        assert!(env(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).is_err());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let got = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap();
        assert!(!got.names_an_endpoint());
    }
}
