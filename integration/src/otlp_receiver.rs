//! A real OTLP receiver for the tests: an OTLP/gRPC server built from
//! opentelemetry-proto's generated `MetricsService` server stub, or an
//! OTLP/HTTP protobuf server (axum), on a loopback port. It keeps every
//! request it got, decoded, and answers as its [`Behaviour`] says: accept,
//! fail the first few with a retryable status, refuse everything, or answer
//! slowly.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;

/// Which OTLP transport the receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP protobuf at `/v1/metrics`.
    Http,
}

impl Protocol {
    /// The name flowtel's configuration and `OTEL_EXPORTER_OTLP_PROTOCOL` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http/protobuf",
        }
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    /// Answer the first this many requests with 503 / UNAVAILABLE.
    pub unavailable_first: u32,
    /// Answer every request with 401 / UNAUTHENTICATED.
    pub unauthorized: bool,
    /// Wait this long before answering each request.
    pub delay: Duration,
    /// Accept, but answer with a partial success rejecting this many points.
    pub rejected_points: i64,
    /// Answer the first request with gRPC RESOURCE_EXHAUSTED and a
    /// `google.rpc.RetryInfo` asking for this delay (HTTP: a bare 429).
    pub exhausted_retry_delay: Option<Duration>,
    /// HTTP: answer the first this many requests with 200 and an HTML page,
    /// as a web server that is not an OTLP receiver would (not accepted).
    pub html_first: u32,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// When it arrived, after the receiver started.
    pub at: Duration,
    /// When it arrived, on the wall clock (to compare with window times).
    pub received: std::time::SystemTime,
    /// Whether the body was gzip-compressed.
    pub gzip: bool,
    /// Request headers (gRPC metadata), lower-case names.
    pub headers: Vec<(String, String)>,
    /// The decoded request.
    pub request: ExportMetricsServiceRequest,
    /// Whether the receiver accepted it (answered 200 / OK).
    pub accepted: bool,
}

#[derive(Debug)]
struct State {
    behaviour: Behaviour,
    started: Instant,
    arrivals: Vec<Arrival>,
}

impl State {
    /// Records a request; says whether to accept it.
    fn arrive(
        &mut self,
        gzip: bool,
        headers: Vec<(String, String)>,
        request: ExportMetricsServiceRequest,
    ) -> Answer {
        let answer = if self.behaviour.unauthorized {
            Answer::Unauthorized
        } else if self.arrivals.is_empty() && self.behaviour.exhausted_retry_delay.is_some() {
            Answer::Exhausted
        } else if self.arrivals.len() < self.behaviour.unavailable_first as usize {
            Answer::Unavailable
        } else if self.arrivals.len() < self.behaviour.html_first as usize {
            Answer::Html
        } else {
            Answer::Ok
        };
        self.arrivals.push(Arrival {
            at: self.started.elapsed(),
            received: std::time::SystemTime::now(),
            gzip,
            headers,
            request,
            accepted: answer == Answer::Ok,
        });
        answer
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Html,
    Unavailable,
    Unauthorized,
    Exhausted,
}

/// TLS for the gRPC receiver: its certificate and key (PEM), and the CA
/// that client certificates must chain to, when it asks for one.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// Require a client certificate signed by this CA.
    pub client_ca_pem: Option<String>,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    protocol: Protocol,
    tls: bool,
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

impl OtlpReceiver {
    /// Starts a receiver on `127.0.0.1` on a free port.
    pub fn start(protocol: Protocol, behaviour: Behaviour) -> OtlpReceiver {
        OtlpReceiver::start_with_tls(protocol, behaviour, None)
    }

    /// Starts a receiver that speaks TLS when `tls` is given (gRPC only:
    /// the HTTP receiver is plain text).
    pub fn start_with_tls(
        protocol: Protocol,
        behaviour: Behaviour,
        tls: Option<ServerTls>,
    ) -> OtlpReceiver {
        assert!(
            tls.is_none() || protocol == Protocol::Grpc,
            "the test receiver speaks TLS over gRPC only"
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime for the OTLP receiver");
        let state = Arc::new(Mutex::new(State {
            behaviour,
            started: Instant::now(),
            arrivals: Vec::new(),
        }));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("a loopback port for the OTLP receiver");
        let address = listener.local_addr().expect("the receiver's address");
        let shared = Arc::clone(&state);
        match protocol {
            Protocol::Grpc => {
                let service = MetricsServiceServer::new(GrpcService(shared))
                    .accept_compressed(CompressionEncoding::Gzip);
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                let mut server = tonic::transport::Server::builder();
                if let Some(tls) = &tls {
                    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
                    let mut config = ServerTlsConfig::new()
                        .identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem));
                    if let Some(ca) = &tls.client_ca_pem {
                        config = config.client_ca_root(Certificate::from_pem(ca));
                    }
                    server = server.tls_config(config).expect("the receiver's TLS setup");
                }
                runtime.spawn(server.add_service(service).serve_with_incoming(incoming));
            }
            Protocol::Http => {
                let app = axum::Router::new()
                    .route("/v1/metrics", axum::routing::post(http_export))
                    .with_state(shared);
                runtime.spawn(async move { axum::serve(listener, app).await });
            }
        }
        OtlpReceiver {
            protocol,
            tls: tls.is_some(),
            address,
            state,
            _runtime: runtime,
        }
    }

    /// The URL to give flowtel as `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        match (self.protocol, self.tls) {
            (Protocol::Grpc, false) => format!("http://{}", self.address),
            (Protocol::Grpc, true) => format!("https://{}", self.address),
            (Protocol::Http, _) => format!("http://{}/v1/metrics", self.address),
        }
    }

    /// `binary run --format json` polling every 200ms with 1s windows,
    /// exporting to this receiver through the standard variables
    /// (`OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`);
    /// start it with [`Agent::launch`](crate::agent::Agent::launch).
    pub fn agent_command(&self, binary: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut command = std::process::Command::new(binary);
        command
            .args(["run", "--format", "json", "--poll-interval", "200ms"])
            .args(["--interval", "1s"])
            .env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", self.endpoint())
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", self.protocol.as_str());
        command
    }

    /// The transport it speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The base URL, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn base_endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every request so far, accepted or not, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.lock().unwrap().arrivals.clone()
    }

    /// The requests the receiver accepted, in arrival order.
    pub fn accepted(&self) -> Vec<ExportMetricsServiceRequest> {
        accepted_requests(&self.arrivals())
    }

    /// Waits up to `timeout` until `done` holds for the arrivals; returns
    /// them. Panics with what arrived when it does not.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Arrival]) -> bool,
    ) -> Vec<Arrival> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrivals = self.arrivals();
            if done(&arrivals) {
                return arrivals;
            }
            if Instant::now() > deadline {
                panic!(
                    "the OTLP receiver did not see {what} within {timeout:?}; {} requests arrived",
                    arrivals.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The requests of the accepted `arrivals`, in arrival order.
pub fn accepted_requests(arrivals: &[Arrival]) -> Vec<ExportMetricsServiceRequest> {
    arrivals
        .iter()
        .filter(|a| a.accepted)
        .map(|a| a.request.clone())
        .collect()
}

/// The success answer: a partial success when the behaviour says so.
fn success(behaviour: &Behaviour) -> ExportMetricsServiceResponse {
    let partial_success = (behaviour.rejected_points > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: behaviour.rejected_points,
        error_message: "test receiver: points rejected".to_owned(),
    });
    ExportMetricsServiceResponse { partial_success }
}

struct GrpcService(Arc<Mutex<State>>);

#[tonic::async_trait]
impl MetricsService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers: Vec<(String, String)> = request
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let gzip = headers
            .iter()
            .any(|(k, v)| k == "grpc-encoding" && v == "gzip");
        let (answer, behaviour) = {
            let mut state = self.0.lock().unwrap();
            (
                state.arrive(gzip, headers, request.into_inner()),
                state.behaviour,
            )
        };
        tokio::time::sleep(behaviour.delay).await;
        match answer {
            Answer::Ok | Answer::Html => Ok(tonic::Response::new(success(&behaviour))),
            Answer::Unavailable => Err(tonic::Status::unavailable("test receiver: unavailable")),
            Answer::Unauthorized => Err(tonic::Status::unauthenticated("test receiver: bad key")),
            Answer::Exhausted => {
                use tonic_types::{ErrorDetails, StatusExt as _};
                Err(tonic::Status::with_error_details(
                    tonic::Code::ResourceExhausted,
                    "test receiver: slow down",
                    ErrorDetails::with_retry_info(behaviour.exhausted_retry_delay),
                ))
            }
        }
    }
}

async fn http_export(
    axum::extract::State(state): axum::extract::State<Arc<Mutex<State>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>) {
    let gzip = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let body = if gzip {
        let mut plain = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .is_err()
        {
            return (StatusCode::BAD_REQUEST, TEXT, b"bad gzip".to_vec());
        }
        plain
    } else {
        body.to_vec()
    };
    let Ok(request) = ExportMetricsServiceRequest::decode(&body[..]) else {
        return (
            StatusCode::BAD_REQUEST,
            TEXT,
            b"not an ExportMetricsServiceRequest".to_vec(),
        );
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let (answer, behaviour) = {
        let mut state = state.lock().unwrap();
        (state.arrive(gzip, headers, request), state.behaviour)
    };
    tokio::time::sleep(behaviour.delay).await;
    match answer {
        Answer::Ok => (
            StatusCode::OK,
            PROTOBUF,
            success(&behaviour).encode_to_vec(),
        ),
        Answer::Html => (StatusCode::OK, HTML, HTML_PAGE.to_vec()),
        Answer::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, TEXT, Vec::new()),
        Answer::Unauthorized => (StatusCode::UNAUTHORIZED, TEXT, Vec::new()),
        Answer::Exhausted => (StatusCode::TOO_MANY_REQUESTS, TEXT, Vec::new()),
    }
}

/// OTLP/HTTP's answer content type.
const PROTOBUF: [(header::HeaderName, &str); 1] =
    [(header::CONTENT_TYPE, "application/x-protobuf")];
const TEXT: [(header::HeaderName, &str); 1] = [(header::CONTENT_TYPE, "text/plain")];
const HTML: [(header::HeaderName, &str); 1] = [(header::CONTENT_TYPE, "text/html; charset=utf-8")];
/// What a web server that is not an OTLP receiver sends.
const HTML_PAGE: &[u8] = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>\n";
