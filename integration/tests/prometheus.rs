//! flowtel's Prometheus endpoint, scraped every second by a real Prometheus
//! server (Debian's `/usr/bin/prometheus`): a PromQL query over the scraped
//! cumulative counters gives this process's TCP bytes exactly, by
//! direction too, and the endpoint speaks the exposition format with
//! `# HELP`, `# TYPE` and `target_info`.
//!
//! Run with `--nocapture` to see the queries and Prometheus' answers.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use integration::agent::Agent;
use integration::privilege;
use integration::prometheus::{self, free_port, Prometheus, TempDir};
use integration::traffic::tcp;

const POLL: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(25);

/// One answer of Prometheus, for people: `{label="value", ...} => value` per
/// sample.
fn show(query: &str, answer: &[(serde_json::Map<String, serde_json::Value>, f64)]) {
    println!("PromQL: {query}");
    for (labels, value) in answer {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!("  {{{}}} => {value}", labels.join(", "));
    }
}

fn total(answer: &[(serde_json::Map<String, serde_json::Value>, f64)]) -> f64 {
    answer.iter().map(|(_, v)| v).sum()
}

#[test]
fn prometheus_scrapes_exact_cumulative_bytes() {
    privilege::require_root();
    let dir = TempDir::new("prometheus-agent");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.write(
        "flowtel.yaml",
        &format!(
            "processor:\n  interval: 1s\n\
             exporters:\n  prometheus:\n    listen: {listen}\n  console:\n    format: json\n"
        ),
    );
    let mut agent = Agent::start_with_config(env!("CARGO_BIN_EXE_flowtel"), POLL, &config);
    let server = Prometheus::start(listen);

    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 3 << 20, 1 << 20);
    let port = truth.server_port;
    // The client's flow: this process, to the server's port (the server's
    // own flow has the port as its source.port, and is left out).
    let selector = format!(
        r#"network_flow_bytes_total{{job="flowtel",source_process_pid="{}",network_transport="tcp",destination_port="{port}"}}"#,
        std::process::id()
    );
    let by_port = format!("sum by (source_process_name, destination_port) ({selector})");
    let by_direction = format!("sum by (network_io_direction) ({selector})");
    let expected = (truth.client_sent + truth.client_received) as f64;

    // Until a scrape after the transfer's last window closed has it all.
    let deadline = Instant::now() + WAIT;
    loop {
        let answer = server.query(&by_port);
        if total(&answer) >= expected {
            break;
        }
        assert!(agent.is_running(), "flowtel exited: {:?}", agent.stderr());
        if Instant::now() > deadline {
            show(&by_port, &answer);
            panic!(
                "Prometheus did not see {expected} bytes within {WAIT:?}\nflowtel stderr: {:#?}\nprometheus log:\n{}",
                agent.stderr(),
                server.log()
            );
        }
        thread::sleep(Duration::from_millis(250));
    }
    // Two more windows and a scrape after them: nothing is counted twice.
    agent.wait_for_another_window();
    agent.wait_for_another_window();
    let closed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let deadline = Instant::now() + WAIT;
    while !server
        .query(r#"timestamp(up{job="flowtel"})"#)
        .iter()
        .any(|(_, scraped)| *scraped > closed)
    {
        assert!(Instant::now() < deadline, "no scrape after the windows");
        thread::sleep(Duration::from_millis(100));
    }

    let answer = server.query(&by_port);
    show(&by_port, &answer);
    println!(
        "truth: client sent {} + received {} = {expected} bytes",
        truth.client_sent, truth.client_received
    );
    assert_eq!(answer.len(), 1, "one flow: {answer:?}");
    assert_eq!(
        answer[0].0.get("destination_port").and_then(|v| v.as_str()),
        Some(port.to_string().as_str())
    );
    assert_eq!(answer[0].1, expected, "bytes to port {port}");

    let directions = server.query(&by_direction);
    show(&by_direction, &directions);
    let direction = |name: &str| {
        directions
            .iter()
            .find(|(labels, _)| {
                labels.get("network_io_direction").and_then(|v| v.as_str()) == Some(name)
            })
            .map(|(_, v)| *v)
    };
    assert_eq!(direction("transmit"), Some(truth.client_sent as f64));
    assert_eq!(direction("receive"), Some(truth.client_received as f64));

    let info = server.query(r#"target_info{job="flowtel"}"#);
    show(r#"target_info{job="flowtel"}"#, &info);
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(
        info[0].0.get("service_name").and_then(|v| v.as_str()),
        Some("flowtel")
    );

    let (status, text) = prometheus::get(listen, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    for line in [
        "# TYPE network_flow_bytes_total counter",
        "# HELP network_flow_bytes_total ",
        "# TYPE network_flow_packets_total counter",
        "# TYPE network_flow_connections_opened_total counter",
        "# TYPE target_info gauge",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(
        !agent.records().is_empty(),
        "the console ran beside Prometheus"
    );
}
