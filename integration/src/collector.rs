//! A real OpenTelemetry collector between flowtel and the tests' own
//! receiver: rotel (PyPI's `rotel`, whose wheel bundles its `rotel-agent`
//! binary; `.ci/run` installs it from `integration/collector/requirements.txt`
//! into `target/ci-python`), started in the foreground on loopback ports,
//! receiving OTLP/gRPC and OTLP/HTTP and exporting OTLP to the receiver.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::otlp_receiver::{OtlpReceiver, Protocol};

/// How to get rotel, for the messages of a test that cannot start it.
pub const INSTALL: &str =
    "pip install -r integration/collector/requirements.txt into the python3 first on PATH (.ci/run: target/ci-python)";

/// How long rotel may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `rotel-agent start`; killed when dropped.
pub struct Rotel {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    log: PathBuf,
}

/// The `rotel-agent` binary of the `rotel` package that `python3` (the one
/// first on PATH) imports. Panics, saying how to install it, without one.
pub fn binary() -> PathBuf {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): {INSTALL}"));
    assert!(
        output.status.success(),
        "python3 has no rotel package: {}{INSTALL}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(path.is_file(), "{} is missing: {INSTALL}", path.display());
    path
}

/// A loopback port nobody listens on (now).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

impl Rotel {
    /// Starts rotel receiving OTLP on two free loopback ports and exporting
    /// every metric to `receiver` with `receiver`'s protocol, uncompressed,
    /// with short batches (100 ms) so that a window passes through at once.
    pub fn start(receiver: &OtlpReceiver) -> Rotel {
        let (grpc, http) = (free_port(), free_port());
        let dir = std::env::temp_dir().join(format!(
            "flowtel-rotel-{}-{}",
            std::process::id(),
            grpc.port()
        ));
        std::fs::create_dir_all(&dir).expect("rotel's directory");
        let log = dir.join("rotel.log");
        let log_file = std::fs::File::create(&log).expect("rotel's log");
        let protocol = match receiver.protocol() {
            Protocol::Grpc => "grpc",
            Protocol::Http => "http",
        };
        let mut command = Command::new(binary());
        command
            .arg("start")
            .args(["--otlp-grpc-endpoint", &grpc.to_string()])
            .args(["--otlp-http-endpoint", &http.to_string()])
            .args(["--exporter", "otlp"])
            .args(["--otlp-exporter-endpoint", &receiver.base_endpoint()])
            .args(["--otlp-exporter-protocol", protocol])
            .args(["--otlp-exporter-compression", "none"])
            .args(["--batch-timeout", "100ms"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(&log)
            // Its own ROTEL_* and OTEL_* settings of the environment, if any,
            // stay out.
            .env_remove("ROTEL_EXPORTER")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rotel-agent ({e}): {INSTALL}"));
        let mut rotel = Rotel {
            child,
            grpc,
            http,
            log,
        };
        rotel.wait_listening();
        rotel
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let listening =
            |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200)).is_ok();
        while !(listening(&self.grpc) && listening(&self.http)) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("rotel-agent exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "rotel-agent did not listen on {} and {} within {START_TIMEOUT:?}:\n{}",
                self.grpc,
                self.http,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The endpoint flowtel is given for `protocol`, as
    /// `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`.
    pub fn endpoint(&self, protocol: Protocol) -> String {
        match protocol {
            Protocol::Grpc => format!("http://{}", self.grpc),
            Protocol::Http => format!("http://{}/v1/metrics", self.http),
        }
    }

    /// What rotel logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        crate::agent::terminate(&mut self.child);
        if let Some(dir) = self.log.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
