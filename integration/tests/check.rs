//! `flowtel check` says whether the configured OTLP endpoint answers, and
//! exits 1 when it does not, or when what answers is not an OTLP receiver.

use std::net::TcpListener;
use std::process::{Command, Output};

use integration::otlp_receiver::{Behaviour, OtlpReceiver, Protocol};
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

#[test]
fn check_reports_an_endpoint_that_answers_200_with_html() {
    privilege::require_root();
    let web = OtlpReceiver::start(
        Protocol::Http,
        Behaviour {
            html_first: u32::MAX,
            ..Behaviour::default()
        },
    );
    let output = check_with_endpoint(&web.base_endpoint());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains(
            "otlp probe    the endpoint answered 200 but is not an OTLP receiver: its content type is \"text/html\""
        ),
        "{stdout}"
    );
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the endpoint answered 200 but is not an OTLP receiver"),
        "{stderr}"
    );
    let ok = OtlpReceiver::start(Protocol::Http, Behaviour::default());
    let output = check_with_endpoint(&ok.base_endpoint());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("otlp probe    an empty export request was accepted"),
        "{stdout}"
    );

    // A user and password in the URL: the probe reaches the host, the
    // report never shows them.
    let with_password = ok
        .base_endpoint()
        .replacen("http://", "http://flowtel:pw-check-7e1@", 1);
    let output = check_with_endpoint(&with_password);
    let all = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(all.contains("http://<redacted>@127.0.0.1:"), "{all}");
    assert!(
        all.contains("otlp probe    an empty export request was accepted"),
        "{all}"
    );
    assert!(!all.contains("pw-check-7e1"), "{all}");
}
