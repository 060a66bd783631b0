//! A real Prometheus server (Debian's `/usr/bin/prometheus`) scraping one
//! target, or run with a configuration of the caller's, in a temporary
//! directory of its own, and questions to its HTTP API. The server is
//! stopped and its directory removed when the [`Prometheus`] is dropped,
//! also when a test panics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Where Debian's `prometheus` package puts the server.
pub const BINARY: &str = "/usr/bin/prometheus";

/// How long the server may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A private temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new directory under the system's temporary directory, named after
    /// `what` and this process.
    pub fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("flowtel-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to the file `name` in the directory; its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running Prometheus server.
pub struct Prometheus {
    child: Child,
    web: SocketAddr,
    log: PathBuf,
    // Dropped after the child is stopped (fields drop in order).
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping
    /// `http://<target>/metrics` every second, with its data in a temporary
    /// directory; waits until it is ready. Panics, with its log, if it is
    /// missing or does not become ready.
    pub fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: flowtel\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        );
        Prometheus::launch(
            dir,
            &[
                format!("--config.file={}", config.display()),
                "--storage.tsdb.retention.time=5d".to_owned(),
            ],
        )
    }

    /// Starts Prometheus with `args` (at least `--config.file`, and neither
    /// `--storage.tsdb.path` nor `--web.listen-address`), its data in `dir`
    /// and its web interface on a free loopback port; waits until it is
    /// ready. Panics, with its
    /// log, if it is missing or does not become ready.
    pub fn launch(dir: TempDir, args: &[String]) -> Prometheus {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: install Debian's `prometheus` package (see README.md)"
        );
        let web = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("create the log file");
        let child = Command::new(BINARY)
            .args(args)
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone the log file"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BINARY}: {e}"));
        let mut prometheus = Prometheus {
            child,
            web,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok((200, _)) = get(web, "/-/ready") {
                return prometheus;
            }
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "prometheus was not ready within {READY_TIMEOUT:?}:\n{}",
                    prometheus.log()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` of the HTTP API (`/api/v1/...`): the `data` of its
    /// answer. Panics unless the server answers 200 with status `success`.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(self.web, path)
            .unwrap_or_else(|e| panic!("cannot ask prometheus at {}: {e}", self.web));
        let mut answer: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("prometheus answered {status} with non-JSON ({e}): {body}"));
        assert_eq!(
            (status, answer["status"].as_str()),
            (200, Some("success")),
            "{path}: {body}"
        );
        answer["data"].take()
    }

    /// Evaluates the PromQL `query` now (`GET /api/v1/query`) and returns the
    /// vector it answers: each sample's labels and value. Panics if the
    /// server does not answer with a vector.
    pub fn query(&self, query: &str) -> Vec<(serde_json::Map<String, serde_json::Value>, f64)> {
        let data = self.api(&format!("/api/v1/query?query={}", percent_encode(query)));
        data["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{query}: not a vector: {data}"))
            .iter()
            .map(|sample| {
                let labels = sample["metric"].as_object().cloned().unwrap_or_default();
                let value = sample["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{query}: a sample without a value: {data}"));
                (labels, value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        crate::agent::terminate(&mut self.child);
    }
}

/// `GET path` over HTTP/1.0 (no chunked answer): the status and the body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let bad = || std::io::Error::other(format!("not an HTTP response: {response:?}"));
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    let body = response
        .split_once("\r\n\r\n")
        .ok_or_else(bad)?
        .1
        .to_owned();
    Ok((status, body))
}

/// `text` with every byte outside RFC 3986's unreserved set percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_promql_query() {
        assert_eq!(
            percent_encode(r#"sum by (a) (m{b="1"})"#),
            "sum%20by%20%28a%29%20%28m%7Bb%3D%221%22%7D%29"
        );
    }
}
