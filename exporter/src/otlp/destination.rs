//! Where one exporter sends, every setting resolved: the file, then the
//! environment, then the defaults. Built once at start-up; the sending side
//! trusts it.

use std::collections::BTreeMap;
use std::time::Duration;

use super::config::{Compression, OtlpConfig, Protocol, Temporality, TlsConfig};
use super::env::OtlpEnv;
use crate::{ConfigError, Secret};

/// The request timeout when nothing sets one (the specification's 10s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of the metrics service on an OTLP/HTTP server.
pub const HTTP_METRICS_PATH: &str = "v1/metrics";

/// A resolved OTLP destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The full URL: for HTTP including `/v1/metrics`.
    pub url: String,
    /// gRPC or HTTP.
    pub protocol: Protocol,
    /// Extra headers (values secret).
    pub headers: BTreeMap<String, Secret>,
    /// Body compression.
    pub compression: Compression,
    /// Per request.
    pub timeout: Duration,
    /// Delta or cumulative Sums.
    pub temporality: Temporality,
    /// TLS for `https://` URLs.
    pub tls: TlsConfig,
    /// Cleartext `http://` to another host was allowed.
    pub insecure: bool,
    /// Capacity of the window queue, in windows.
    pub queue_size: usize,
    /// Capacity of the window queue, in bytes of encoded requests.
    pub queue_bytes: u64,
    /// The queue directory, when the queue is kept on disk.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Destination {
    /// Resolves `config` over `env`: the file wins where both are set.
    pub fn resolve(config: &OtlpConfig, env: &OtlpEnv) -> Result<Destination, ConfigError> {
        let protocol = config
            .protocol
            .or(env.protocol)
            .unwrap_or(Protocol::HttpProtobuf);
        let url = match (&config.endpoint, &env.metrics_endpoint, &env.endpoint) {
            (Some(url), _, _) | (None, Some(url), _) => url.clone(),
            (None, None, Some(base)) => match protocol {
                Protocol::Grpc => base.clone(),
                Protocol::HttpProtobuf => append_metrics_path(base),
            },
            (None, None, None) => match protocol {
                Protocol::Grpc => "http://localhost:4317".to_owned(),
                Protocol::HttpProtobuf => "http://localhost:4318/v1/metrics".to_owned(),
            },
        };
        check_url(&url)?;
        let mut headers = env.headers.clone();
        headers.extend(config.headers.clone());
        let destination = Destination {
            url,
            protocol,
            headers,
            compression: config
                .compression
                .or(env.compression)
                .unwrap_or(Compression::None),
            timeout: config.timeout.or(env.timeout).unwrap_or(DEFAULT_TIMEOUT),
            temporality: config.temporality.or(env.temporality).unwrap_or_default(),
            tls: TlsConfig {
                ca_file: config.tls.ca_file.clone().or_else(|| env.ca_file.clone()),
                cert_file: config
                    .tls
                    .cert_file
                    .clone()
                    .or_else(|| env.cert_file.clone()),
                key_file: config.tls.key_file.clone().or_else(|| env.key_file.clone()),
                insecure_skip_verify: config.tls.insecure_skip_verify,
            },
            insecure: config.insecure.or(env.insecure).unwrap_or(false),
            queue_size: config.queue_size.get(),
            queue_bytes: config.queue_bytes,
            spill_dir: config.spill_dir.clone(),
        };
        destination.check()?;
        Ok(destination)
    }

    /// The URL as it may be printed: a user and password in it are
    /// redacted.
    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks what only makes sense together, and the header values as
    /// the transport will take them, so that `config check` refuses what
    /// `run` would.
    pub fn check(&self) -> Result<(), ConfigError> {
        check_url(&self.url)?;
        if !self.insecure && self.url.starts_with("http://") && !is_loopback_url(&self.url) {
            return Err(ConfigError::new(format!(
                "otlp endpoint {} would send flows and headers in cleartext to another host: use https://, or allow it with exporters.otlp.insecure: true (OTEL_EXPORTER_OTLP_INSECURE=true)",
                self.shown_url()
            )));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                "the otlp timeout is zero: give a duration such as 10s",
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ConfigError::new(
                "otlp tls needs both cert_file and key_file for a client certificate, or neither",
            ));
        }
        if self.tls.insecure_skip_verify && self.protocol == Protocol::Grpc {
            return Err(ConfigError::new(
                "otlp tls.insecure_skip_verify works only with protocol http/protobuf: give the server's CA in tls.ca_file instead",
            ));
        }
        for name in self.headers.keys() {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(ConfigError::new(format!(
                    "otlp header name {name:?} is not a valid HTTP header name"
                )));
            }
        }
        match self.protocol {
            Protocol::Grpc => super::transport::grpc_metadata(&self.headers).map(drop),
            Protocol::HttpProtobuf => super::transport::http_headers(&self.headers).map(drop),
        }
    }
}

/// `url` with the user and password of its authority, if any, replaced by
/// `<redacted>`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((_, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let scheme = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    format!("{scheme}{}@{host}{path}", crate::REDACTED)
}

/// The host and port of `url`'s authority, without any user and password.
pub fn host_port(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port)
}

/// The generic endpoint is a base URL: HTTP appends the signal's path.
fn append_metrics_path(base: &str) -> String {
    if base.ends_with('/') {
        format!("{base}{HTTP_METRICS_PATH}")
    } else {
        format!("{base}/{HTTP_METRICS_PATH}")
    }
}

/// True when the URL's host is this machine: `localhost`, 127.0.0.0/8 or
/// `[::1]`.
fn is_loopback_url(url: &str) -> bool {
    let authority = host_port(url);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn check_url(url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ => Err(ConfigError::new(format!(
            "otlp endpoint {:?} is not an http:// or https:// URL with a host, e.g. http://localhost:4318/v1/metrics",
            redact_url(url)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(f: impl FnOnce(&mut OtlpEnv)) -> OtlpEnv {
        let mut env = OtlpEnv::default();
        f(&mut env);
        env
    }

    #[test]
    fn defaults_follow_the_specification() {
        let d = Destination::resolve(&OtlpConfig::default(), &OtlpEnv::default()).unwrap();
        assert_eq!(d.url, "http://localhost:4318/v1/metrics");
        assert_eq!(d.protocol, Protocol::HttpProtobuf);
        assert_eq!(d.compression, Compression::None);
        assert_eq!(d.timeout, DEFAULT_TIMEOUT);
        assert_eq!(d.temporality, Temporality::Delta);
        let grpc = OtlpConfig {
            protocol: Some(Protocol::Grpc),
            ..OtlpConfig::default()
        };
        let d = Destination::resolve(&grpc, &OtlpEnv::default()).unwrap();
        assert_eq!(d.url, "http://localhost:4317");
    }

    #[test]
    fn the_generic_endpoint_gets_the_path_for_http_only() {
        let env = env_with(|e| {
            e.endpoint = Some("http://collector:4318".into());
            e.insecure = Some(true);
        });
        let d = Destination::resolve(&OtlpConfig::default(), &env).unwrap();
        assert_eq!(d.url, "http://collector:4318/v1/metrics");
        let env = env_with(|e| {
            e.endpoint = Some("http://collector:4317/".into());
            e.protocol = Some(Protocol::Grpc);
            e.insecure = Some(true);
        });
        let d = Destination::resolve(&OtlpConfig::default(), &env).unwrap();
        assert_eq!(d.url, "http://collector:4317/");
    }

    #[test]
    fn the_metrics_endpoint_is_used_as_is_and_the_file_wins() {
        let env = env_with(|e| {
            e.endpoint = Some("http://generic:4318".into());
            e.metrics_endpoint = Some("http://specific:9999/custom".into());
            e.timeout = Some(Duration::from_secs(3));
            e.headers.insert("a".into(), Secret::new("env"));
            e.insecure = Some(true);
        });
        let d = Destination::resolve(&OtlpConfig::default(), &env).unwrap();
        assert_eq!(d.url, "http://specific:9999/custom");
        assert_eq!(d.timeout, Duration::from_secs(3));

        let mut file = OtlpConfig {
            endpoint: Some("https://file:4318/v1/metrics".into()),
            timeout: Some(Duration::from_secs(1)),
            ..OtlpConfig::default()
        };
        file.headers.insert("a".into(), Secret::new("file"));
        let d = Destination::resolve(&file, &env).unwrap();
        assert_eq!(d.url, "https://file:4318/v1/metrics");
        assert_eq!(d.timeout, Duration::from_secs(1));
        assert_eq!(d.headers["a"].expose(), "file");
    }

    #[test]
    fn cleartext_to_another_host_needs_insecure_but_loopback_does_not() {
        let to = |url: &str, insecure: Option<bool>| {
            let config = OtlpConfig {
                endpoint: Some(url.into()),
                insecure,
                ..OtlpConfig::default()
            };
            Destination::resolve(&config, &OtlpEnv::default())
        };
        let error = to("http://collector:4318/v1/metrics", None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "otlp endpoint http://collector:4318/v1/metrics would send flows and headers in cleartext to another host: use https://, or allow it with exporters.otlp.insecure: true (OTEL_EXPORTER_OTLP_INSECURE=true)"
        );
        assert!(to("http://10.0.0.5:4317", None).is_err());
        assert!(to("http://collector:4318/v1/metrics", Some(true)).is_ok());
        assert!(to("https://collector:4318/v1/metrics", None).is_ok());
        for loopback in [
            "http://localhost:4318/v1/metrics",
            "http://127.0.0.1:4317",
            "http://127.3.2.1:4317",
            "http://[::1]:4317",
        ] {
            assert!(to(loopback, None).is_ok(), "{loopback}");
        }
        let env = env_with(|e| {
            e.endpoint = Some("http://collector:4318".into());
            e.insecure = Some(true);
        });
        assert!(Destination::resolve(&OtlpConfig::default(), &env).is_ok());
    }

    #[test]
    fn userinfo_is_redacted_when_shown_and_the_loopback_rule_reads_the_host() {
        assert_eq!(
            redact_url("http://admin:s3cr3t@collector:4318/v1/metrics"),
            "http://<redacted>@collector:4318/v1/metrics"
        );
        assert_eq!(
            redact_url("https://tok@[::1]:4317"),
            "https://<redacted>@[::1]:4317"
        );
        assert_eq!(
            redact_url("http://collector:4318/a@b"),
            "http://collector:4318/a@b",
            "an @ in the path is not userinfo"
        );
        assert_eq!(host_port("http://a:b@127.0.0.1:4318/v1"), "127.0.0.1:4318");
        let to = |url: &str| {
            let config = OtlpConfig {
                endpoint: Some(url.into()),
                ..OtlpConfig::default()
            };
            Destination::resolve(&config, &OtlpEnv::default())
        };
        let local = to("http://admin:s3cr3t@127.0.0.1:4318/v1/metrics").unwrap();
        assert_eq!(
            local.shown_url(),
            "http://<redacted>@127.0.0.1:4318/v1/metrics"
        );
        let error = to("http://admin:s3cr3t@collector:4318/v1/metrics").unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
        assert!(
            error.to_string().contains("<redacted>@collector"),
            "{error}"
        );
        let error = to("ftp://admin:s3cr3t@collector").unwrap_err();
        assert!(!error.to_string().contains("s3cr3t"), "{error}");
    }

    #[test]
    fn header_values_the_transport_refuses_are_refused_by_the_check() {
        for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
            let mut config = OtlpConfig {
                protocol: Some(protocol),
                ..OtlpConfig::default()
            };
            config
                .headers
                .insert("authorization".into(), Secret::new("Bearer a\r\nX-Evil: 1"));
            let error = Destination::resolve(&config, &OtlpEnv::default()).unwrap_err();
            assert_eq!(
                error.to_string(),
                match protocol {
                    Protocol::HttpProtobuf =>
                        "the value of otlp header \"authorization\" is not a valid HTTP header value",
                    Protocol::Grpc =>
                        "the value of otlp header \"authorization\" is not valid gRPC metadata (printable ASCII only)",
                }
            );
        }
    }

    #[test]
    fn nonsense_is_refused_in_one_line() {
        let bad = OtlpConfig {
            endpoint: Some("localhost:4317".into()),
            ..OtlpConfig::default()
        };
        let error = Destination::resolve(&bad, &OtlpEnv::default()).unwrap_err();
        assert!(error
            .to_string()
            .starts_with("otlp endpoint \"localhost:4317\" is not"));
        let mut half_mtls = OtlpConfig::default();
        half_mtls.tls.cert_file = Some("client.pem".into());
        assert!(Destination::resolve(&half_mtls, &OtlpEnv::default()).is_err());
    }
}
