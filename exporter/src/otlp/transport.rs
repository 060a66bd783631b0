//! One request to the backend over OTLP/gRPC (tonic) or OTLP/HTTP protobuf
//! (reqwest), with its TLS, headers, compression and timeout; the answer
//! classified as an [`Attempt`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::config::{Compression, Protocol};
use super::destination::Destination;
use super::retry::{self, Attempt};
use crate::{ConfigError, Secret};

/// A connection to one backend.
#[derive(Debug, Clone)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc(GrpcTransport),
    /// OTLP/HTTP protobuf.
    Http(HttpTransport),
}

impl Transport {
    /// Sets up the client for `destination`. Connects lazily: a backend
    /// that is down at start-up is retried like any other outage.
    pub fn new(destination: &Destination) -> Result<Transport, ConfigError> {
        match destination.protocol {
            Protocol::Grpc => GrpcTransport::new(destination).map(Transport::Grpc),
            Protocol::HttpProtobuf => HttpTransport::new(destination).map(Transport::Http),
        }
    }

    /// Sends one request, given as its protobuf encoding, and says how it
    /// went.
    pub async fn send(&mut self, encoded: &[u8]) -> Attempt {
        match self {
            Transport::Grpc(grpc) => grpc.send(encoded).await,
            Transport::Http(http) => http.send(encoded).await,
        }
    }
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::new(format!(
            "could not read the otlp tls {what} {}: {e}",
            path.display()
        ))
    })
}

/// gRPC metadata.
type Metadata = Vec<(
    MetadataKey<tonic::metadata::Ascii>,
    MetadataValue<tonic::metadata::Ascii>,
)>;

/// The headers as gRPC metadata; what [`Destination::check`] checks too.
pub(crate) fn grpc_metadata(headers: &BTreeMap<String, Secret>) -> Result<Metadata, ConfigError> {
    headers
        .iter()
        .map(|(name, value)| {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()).map_err(|_| {
                ConfigError::new(format!(
                    "otlp header name {name:?} is not valid gRPC metadata"
                ))
            })?;
            let value = MetadataValue::try_from(value.expose()).map_err(|_| {
                ConfigError::new(format!(
                    "the value of otlp header {name:?} is not valid gRPC metadata (printable ASCII only)"
                ))
            })?;
            Ok((key, value))
        })
        .collect()
}

/// The headers as HTTP headers, values marked sensitive; what
/// [`Destination::check`] checks too.
pub(crate) fn http_headers(
    headers: &BTreeMap<String, Secret>,
) -> Result<reqwest::header::HeaderMap, ConfigError> {
    let mut map = reqwest::header::HeaderMap::new();
    for (name, value) in headers {
        let key = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            ConfigError::new(format!(
                "otlp header name {name:?} is not a valid HTTP header name"
            ))
        })?;
        let mut value = reqwest::header::HeaderValue::from_str(value.expose()).map_err(|_| {
            ConfigError::new(format!(
                "the value of otlp header {name:?} is not a valid HTTP header value"
            ))
        })?;
        value.set_sensitive(true);
        map.insert(key, value);
    }
    Ok(map)
}

/// The gRPC client.
#[derive(Debug, Clone)]
pub struct GrpcTransport {
    client: MetricsServiceClient<Channel>,
    headers: Metadata,
    timeout: Duration,
}

impl GrpcTransport {
    fn new(d: &Destination) -> Result<GrpcTransport, ConfigError> {
        let invalid = |e: &dyn std::fmt::Display| {
            ConfigError::new(format!(
                "otlp endpoint {:?} is not usable for gRPC: {e}",
                d.shown_url()
            ))
        };
        let mut endpoint = Endpoint::from_shared(d.url.clone())
            .map_err(|e| invalid(&e))?
            .timeout(d.timeout)
            .connect_timeout(d.timeout);
        if d.url.starts_with("https://") {
            let mut tls = ClientTlsConfig::new()
                .with_native_roots()
                .with_webpki_roots();
            if let Some(ca) = &d.tls.ca_file {
                tls = tls.ca_certificate(Certificate::from_pem(read_pem("ca_file", ca)?));
            }
            if let (Some(cert), Some(key)) = (&d.tls.cert_file, &d.tls.key_file) {
                tls = tls.identity(Identity::from_pem(
                    read_pem("cert_file", cert)?,
                    read_pem("key_file", key)?,
                ));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| invalid(&e))?;
        }
        let mut client = MetricsServiceClient::new(endpoint.connect_lazy());
        if d.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip);
        }
        Ok(GrpcTransport {
            client,
            headers: grpc_metadata(&d.headers)?,
            timeout: d.timeout,
        })
    }

    async fn send(&mut self, encoded: &[u8]) -> Attempt {
        // tonic's codec encodes a message: decoded again for the call only.
        let request = match ExportMetricsServiceRequest::decode(encoded) {
            Ok(request) => request,
            Err(e) => {
                return Attempt::Permanent {
                    reason: format!("the queued request does not decode: {e}"),
                }
            }
        };
        let mut call = tonic::Request::new(request);
        call.set_timeout(self.timeout);
        for (key, value) in &self.headers {
            call.metadata_mut().insert(key.clone(), value.clone());
        }
        match self.client.export(call).await {
            Ok(response) => accepted(response.into_inner()),
            Err(status) => retry::grpc_code(
                status.code(),
                status.message(),
                retry_info::delay(status.details()),
            ),
        }
    }
}

/// The HTTP client.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    client: reqwest::Client,
    url: String,
    headers: reqwest::header::HeaderMap,
    gzip: bool,
}

impl HttpTransport {
    fn new(d: &Destination) -> Result<HttpTransport, ConfigError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(d.timeout)
            .connect_timeout(d.timeout);
        if let Some(ca) = &d.tls.ca_file {
            let pem = read_pem("ca_file", ca)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ConfigError::new(format!(
                    "the otlp tls ca_file {} is not PEM certificates: {e}",
                    ca.display()
                ))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&d.tls.cert_file, &d.tls.key_file) {
            let mut pem = read_pem("cert_file", cert)?;
            pem.extend(read_pem("key_file", key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ConfigError::new(format!(
                    "the otlp tls client certificate or key is not usable PEM: {e}"
                ))
            })?;
            builder = builder.identity(identity);
        }
        if d.tls.insecure_skip_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| ConfigError::new(format!("could not set up the OTLP/HTTP client: {e}")))?;
        Ok(HttpTransport {
            client,
            url: d.url.clone(),
            headers: http_headers(&d.headers)?,
            gzip: d.compression == Compression::Gzip,
        })
    }

    async fn send(&mut self, encoded: &[u8]) -> Attempt {
        let mut body = encoded.to_vec();
        let mut call = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf");
        if self.gzip {
            body = gzip(&body);
            call = call.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let response = match call.body(body).send().await {
            Ok(response) => response,
            Err(e) => {
                // Without the URL: the caller names the endpoint once.
                let kind = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "could not connect"
                } else {
                    "request failed"
                };
                return Attempt::Retryable {
                    reason: format!("{kind}: {}", e.without_url()),
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        if let Some(failed) = retry::http_status(status, retry_after) {
            return failed;
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        match response.bytes().await {
            Ok(body) => http_answer(content_type.as_deref(), &body),
            // The data arrived; only the answer was cut.
            Err(_) => accepted(ExportMetricsServiceResponse::default()),
        }
    }
}

/// A 2xx answer of OTLP/HTTP: an `ExportMetricsServiceResponse` in
/// protobuf or JSON, as its content type says. Anything else (an HTML page,
/// garbage, a cut protobuf) is some other service's answer. An empty body
/// with no content type is taken as a bare full success.
fn http_answer(content_type: Option<&str>, body: &[u8]) -> Attempt {
    let media = content_type.map(|t| {
        t.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    });
    let not_otlp = |reason: String| Attempt::NotOtlp { reason };
    match media.as_deref() {
        Some("application/x-protobuf" | "application/protobuf") => {
            match ExportMetricsServiceResponse::decode(body) {
                Ok(response) => accepted(response),
                Err(e) => not_otlp(format!(
                    "its protobuf body ({} bytes) is not an ExportMetricsServiceResponse ({e})",
                    body.len()
                )),
            }
        }
        Some("application/json") => match json_answer(body) {
            Some(response) => accepted(response),
            None => not_otlp(format!(
                "its JSON body ({} bytes) is not an ExportMetricsServiceResponse",
                body.len()
            )),
        },
        None if body.is_empty() => accepted(ExportMetricsServiceResponse::default()),
        None => not_otlp(format!(
            "its body ({} bytes) has no content type",
            body.len()
        )),
        Some(other) => not_otlp(format!(
            "its content type is {other:?}, not application/x-protobuf or application/json"
        )),
    }
}

/// The JSON form of an `ExportMetricsServiceResponse`: an object, with an
/// optional `partialSuccess` whose `rejectedDataPoints` is a number or, as
/// proto3 JSON writes 64-bit integers, a string.
fn json_answer(body: &[u8]) -> Option<ExportMetricsServiceResponse> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    let Some(partial) = object.get("partialSuccess") else {
        return Some(ExportMetricsServiceResponse::default());
    };
    let partial = partial.as_object()?;
    let rejected = match partial.get("rejectedDataPoints") {
        None => 0,
        Some(serde_json::Value::Number(n)) => n.as_i64()?,
        Some(serde_json::Value::String(s)) => s.parse().ok()?,
        Some(_) => return None,
    };
    let message = match partial.get("errorMessage") {
        None => String::new(),
        Some(m) => m.as_str()?.to_owned(),
    };
    Some(ExportMetricsServiceResponse {
        partial_success: Some(ExportMetricsPartialSuccess {
            rejected_data_points: rejected,
            error_message: message,
        }),
    })
}

/// Sends one empty request to `destination` (which an OTLP receiver takes
/// as a full success) and says how it went: `flowtel check`'s probe. Waits
/// at most `timeout`.
pub async fn probe(destination: &Destination, timeout: Duration) -> Attempt {
    let mut destination = destination.clone();
    destination.timeout = destination.timeout.min(timeout);
    match Transport::new(&destination) {
        Ok(mut transport) => {
            transport
                .send(&ExportMetricsServiceRequest::default().encode_to_vec())
                .await
        }
        Err(e) => Attempt::Permanent {
            reason: e.to_string(),
        },
    }
}

fn accepted(response: ExportMetricsServiceResponse) -> Attempt {
    let partial = response.partial_success.unwrap_or_default();
    Attempt::Accepted {
        rejected: partial.rejected_data_points,
        message: partial.error_message,
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    encoder.write_all(body).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// `google.rpc.RetryInfo` in a gRPC status's details, the delay a server
/// asks for. Decoded with prost directly: these three messages are all that
/// is needed of the googleapis protos.
mod retry_info {
    use std::time::Duration;

    use prost::Message;

    #[derive(Clone, PartialEq, Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct Any {
        #[prost(string, tag = "1")]
        type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<ProtoDuration>,
    }

    #[derive(Clone, PartialEq, Message)]
    struct ProtoDuration {
        #[prost(int64, tag = "1")]
        seconds: i64,
        #[prost(int32, tag = "2")]
        nanos: i32,
    }

    const RETRY_INFO: &str = "type.googleapis.com/google.rpc.RetryInfo";

    /// The RetryInfo delay in `details`, if there is one.
    pub fn delay(details: &[u8]) -> Option<Duration> {
        let status = RpcStatus::decode(details).ok()?;
        let info = status.details.iter().find(|d| d.type_url == RETRY_INFO)?;
        let delay = RetryInfo::decode(info.value.as_slice()).ok()?.retry_delay?;
        Some(Duration::new(
            u64::try_from(delay.seconds).ok()?,
            u32::try_from(delay.nanos).ok()?,
        ))
    }

    /// Encodes `delay` as a status's details (for tests and test servers).
    pub fn details(delay: Duration) -> Vec<u8> {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: delay.as_secs() as i64,
                nanos: delay.subsec_nanos() as i32,
            }),
        };
        RpcStatus {
            code: tonic::Code::ResourceExhausted as i32,
            message: String::new(),
            details: vec![Any {
                type_url: RETRY_INFO.to_owned(),
                value: info.encode_to_vec(),
            }],
        }
        .encode_to_vec()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn retry_info_round_trips() {
            let d = Duration::from_millis(2500);
            assert_eq!(delay(&details(d)), Some(d));
            assert_eq!(delay(b""), None);
        }
    }
}

pub use retry_info::details as retry_info_details;

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsPartialSuccess;

    use super::*;

    fn is_not_otlp(attempt: &Attempt) -> bool {
        matches!(attempt, Attempt::NotOtlp { .. })
    }

    #[test]
    fn only_an_otlp_answer_counts_as_delivered() {
        let partial = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 3,
                error_message: "bad points".into(),
            }),
        };
        let rejected_three = Attempt::Accepted {
            rejected: 3,
            message: "bad points".into(),
        };
        let protobuf = Some("application/x-protobuf");
        assert_eq!(
            http_answer(protobuf, &partial.encode_to_vec()),
            rejected_three
        );
        assert_eq!(http_answer(protobuf, b""), accepted(Default::default()));
        assert_eq!(http_answer(None, b""), accepted(Default::default()));
        let json = Some("application/json; charset=utf-8");
        let body = br#"{"partialSuccess":{"rejectedDataPoints":"3","errorMessage":"bad points"}}"#;
        assert_eq!(http_answer(json, body), rejected_three);
        assert_eq!(http_answer(json, b"{}"), accepted(Default::default()));

        let html = b"<!doctype html><html><body>Welcome</body></html>";
        let answer = http_answer(Some("text/html; charset=utf-8"), html);
        assert_eq!(
            answer,
            Attempt::NotOtlp {
                reason: "its content type is \"text/html\", not application/x-protobuf or application/json".into()
            }
        );
        assert!(is_not_otlp(&http_answer(None, html)));
        assert!(is_not_otlp(&http_answer(protobuf, &[0xff, 0xff, 0xff])));
        let cut = partial.encode_to_vec();
        assert!(is_not_otlp(&http_answer(protobuf, &cut[..cut.len() - 2])));
        assert!(is_not_otlp(&http_answer(json, b"<html>")));
        assert!(is_not_otlp(&http_answer(json, b"[1, 2]")));
    }
}
