//! OTLP/gRPC over TLS with the standard variables: a CA of the test's own
//! (`OTEL_EXPORTER_OTLP_CERTIFICATE`) and a client certificate the receiver
//! requires (`..._CLIENT_CERTIFICATE`, `..._CLIENT_KEY`). The windows arrive,
//! this process's bytes exact.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration::agent::Agent;
use integration::otlp_metrics::{self, Point};
use integration::otlp_receiver::{Behaviour, OtlpReceiver, Protocol, ServerTls};
use integration::privilege;
use integration::traffic::tcp;
use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, KeyPair};

/// A certificate and its key.
struct Issued {
    cert: Certificate,
    key: KeyPair,
}

fn ca() -> Issued {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    Issued {
        cert: params.self_signed(&key).unwrap(),
        key,
    }
}

fn leaf(names: &[&str], ca: &Issued) -> Issued {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    Issued {
        cert: params.signed_by(&key, &ca.cert, &ca.key).unwrap(),
        key,
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).unwrap();
    path
}

#[test]
fn grpc_over_mutual_tls_with_a_custom_ca_delivers_exact_windows() {
    privilege::require_root();
    let ca = ca();
    let server = leaf(&["127.0.0.1", "localhost"], &ca);
    let client = leaf(&["flowtel-agent"], &ca);
    let dir = std::env::temp_dir().join(format!("flowtel-otlp-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_file = write(&dir, "ca.pem", &ca.cert.pem());
    let cert_file = write(&dir, "client.pem", &client.cert.pem());
    let key_file = write(&dir, "client-key.pem", &client.key.serialize_pem());

    let receiver = OtlpReceiver::start_with_tls(
        Protocol::Grpc,
        Behaviour::default(),
        Some(ServerTls {
            cert_pem: server.cert.pem(),
            key_pem: server.key.serialize_pem(),
            client_ca_pem: Some(ca.cert.pem()),
        }),
    );
    assert!(receiver.endpoint().starts_with("https://"));
    let mut command = receiver.agent_command(env!("CARGO_BIN_EXE_flowtel"));
    command
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca_file)
        .env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", &cert_file)
        .env("OTEL_EXPORTER_OTLP_CLIENT_KEY", &key_file);
    let mut agent = Agent::launch(command, Duration::from_millis(200));

    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 1 << 10);
    let port = truth.server_port.to_string();
    let sent = |points: &[Point]| -> i64 {
        points
            .iter()
            .filter(|p| p.metric == "network.flow.bytes")
            .filter(|p| p.attribute("source.process.pid") == Some(&std::process::id().to_string()))
            .filter(|p| p.attribute("network.io.direction") == Some("transmit"))
            .filter(|p| p.attribute("destination.port") == Some(&port))
            .map(Point::int)
            .sum()
    };
    receiver.wait_for(
        "the client's bytes over TLS",
        Duration::from_secs(30),
        |arrivals| {
            let requests: Vec<_> = arrivals.iter().map(|a| a.request.clone()).collect();
            sent(&otlp_metrics::points(&requests)) >= truth.client_sent as i64
        },
    );
    std::thread::sleep(Duration::from_millis(1500));
    agent.stop();
    let points = otlp_metrics::points(&receiver.accepted());
    assert_eq!(sent(&points), truth.client_sent as i64);
    let _ = std::fs::remove_dir_all(&dir);
}
