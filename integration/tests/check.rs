//! `flowtel check` says whether the configured OTLP endpoint answers, and
//! exits 1 when it does not.

use std::net::TcpListener;
use std::process::{Command, Output};

use integration::privilege;

fn check_with_endpoint(endpoint: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .arg("check")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .output()
        .expect("run flowtel check")
}

#[test]
fn check_reports_whether_the_otlp_endpoint_answers() {
    privilege::require_root();
    let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().unwrap().port();

    let up = check_with_endpoint(&format!("http://127.0.0.1:{port}"));
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        stdout.contains(&format!(
            "endpoint      http://127.0.0.1:{port}/v1/metrics answers"
        )),
        "{stdout}"
    );
    assert!(up.status.success(), "{stdout}");

    drop(listener);
    let down = check_with_endpoint(&format!("http://127.0.0.1:{port}"));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert_eq!(down.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not answer"),
        "one line saying why: {stderr}"
    );
}
