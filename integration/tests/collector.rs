//! flowtel beside a real OpenTelemetry collector: flowtel sends OTLP/gRPC
//! and OTLP/HTTP to rotel (PyPI's `rotel`, `integration/collector/`), which
//! forwards OTLP (gRPC, HTTP) to the test's own receiver. What arrives is
//! what flowtel's console printed for the same windows: this process's TCP
//! bytes exact, every series' attributes and window timestamps unchanged,
//! the resource and the health metrics carried, the sums still delta.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use integration::agent::Agent;
use integration::collector::Rotel;
use integration::otlp_metrics::{self, Kind, Point, HEALTH_SCOPE};
use integration::otlp_receiver::{Behaviour, OtlpReceiver, Protocol};
use integration::privilege;
use integration::record::Record;
use integration::traffic::tcp;

const POLL: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(30);
const WINDOW_NS: u64 = 1_000_000_000;

/// Nanoseconds since the epoch of an RFC 3339 time as the console prints
/// it (`2024-01-01T12:00:00.000Z`, UTC, milliseconds).
fn console_ns(time: &str) -> u64 {
    let field = |range: std::ops::Range<usize>| -> i64 {
        time[range]
            .parse()
            .unwrap_or_else(|_| panic!("not a console time: {time}"))
    };
    let (y, m, d) = (field(0..4), field(5..7), field(8..10));
    let (hh, mm, ss, ms) = (field(11..13), field(14..16), field(17..19), field(20..23));
    // Days from 1970-01-01 of a proleptic Gregorian date.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    (secs * 1000 + ms) as u64 * 1_000_000
}

#[test]
fn console_times_convert_to_unix_nanoseconds() {
    assert_eq!(console_ns("1970-01-01T00:00:00.000Z"), 0);
    assert_eq!(
        console_ns("2024-01-01T12:00:00.250Z"),
        1_704_110_400_250_000_000
    );
    assert_eq!(
        console_ns("2000-03-01T00:00:01.000Z"),
        951_868_801_000_000_000
    );
}

/// A series' attributes as text, the way the OTLP points carry them.
fn texts(attributes: &integration::record::Attributes) -> BTreeMap<String, String> {
    let value = serde_json::to_value(attributes).unwrap();
    value
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// A window's bytes of one series: (attributes, start ns, end ns) ->
/// (transmitted, received).
type Windows = BTreeMap<(BTreeMap<String, String>, u64, u64), (i64, i64)>;

/// The `network.flow.bytes` points of this process at `port`, by series
/// and window.
fn point_windows(points: &[Point], port: u16) -> Windows {
    let mut windows = Windows::new();
    for p in points {
        if p.metric != "network.flow.bytes" || !p.of_this_process() || !p.at_port(port) {
            continue;
        }
        let mut attributes = p.attributes.clone();
        let direction = attributes
            .remove("network.io.direction")
            .expect("network.io.direction");
        // The console prints milliseconds.
        let ms = |ns: u64| ns / 1_000_000 * 1_000_000;
        let entry = windows
            .entry((attributes, ms(p.start_ns), ms(p.time_ns)))
            .or_default();
        match direction.as_str() {
            "transmit" => entry.0 += p.int(),
            "receive" => entry.1 += p.int(),
            other => panic!("network.io.direction {other}"),
        }
    }
    windows
}

/// The console's window records of this process at `port`, the same way.
fn console_windows(records: &[Record], port: u16) -> Windows {
    let mut windows = Windows::new();
    for record in records {
        let Record::Window(flow) = record else {
            continue;
        };
        let a = &flow.attributes;
        if a.pid != Some(std::process::id())
            || (a.destination_port != Some(port) && a.source_port != Some(port))
        {
            continue;
        }
        let entry = windows
            .entry((texts(a), console_ns(&flow.start), console_ns(&flow.end)))
            .or_default();
        entry.0 += flow.bytes_sent as i64;
        entry.1 += flow.bytes_received as i64;
    }
    windows
}

fn through_rotel(into: Protocol, out: Protocol) {
    privilege::require_root();
    let receiver = OtlpReceiver::start(out, Behaviour::default());
    let rotel = Rotel::start(&receiver);
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command
        .args(["run", "--format", "json", "--poll-interval", "200ms"])
        .args(["--interval", "1s"])
        .env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", rotel.endpoint(into))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", into.as_str())
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=collector-test",
        );
    let mut agent = Agent::launch(command, POLL);
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 3 << 20, 1 << 20);
    let port = truth.server_port;
    // Client and server are this process: each direction shows on both
    // ends' flows.
    let transmitted = (truth.client_sent + truth.server_sent) as i64;
    let received = (truth.client_received + truth.server_received) as i64;
    receiver.wait_for("this process's bytes, through rotel", WAIT, |arrivals| {
        let requests: Vec<_> = arrivals.iter().map(|a| a.request.clone()).collect();
        let points = otlp_metrics::points(&requests);
        otlp_metrics::flow_bytes(&points, port, "transmit") >= transmitted
            && otlp_metrics::flow_bytes(&points, port, "receive") >= received
    });
    // Two more windows, and the last flushed at the stop: nothing counted
    // twice on the way.
    std::thread::sleep(Duration::from_millis(2500));
    agent.stop();
    std::thread::sleep(Duration::from_millis(500));

    let arrivals = receiver.arrivals();
    assert!(!arrivals.is_empty());
    assert!(
        arrivals.iter().all(|a| a.accepted),
        "the receiver accepts everything"
    );
    let requests = receiver.accepted();
    let points = otlp_metrics::points(&requests);
    assert_eq!(
        otlp_metrics::flow_bytes(&points, port, "transmit"),
        transmitted,
        "bytes transmitted, through rotel; its log:\n{}",
        rotel.log()
    );
    assert_eq!(
        otlp_metrics::flow_bytes(&points, port, "receive"),
        received,
        "bytes received, through rotel"
    );

    // Every window the console printed for this transfer arrived with the
    // same attributes, the same start and end, the same bytes.
    let printed = console_windows(&agent.records(), port);
    let arrived = point_windows(&points, port);
    assert!(!printed.is_empty(), "no window records on the console");
    assert_eq!(
        arrived, printed,
        "series, window timestamps and bytes after rotel (left) and on flowtel's console (right)"
    );

    // Delta temporality kept, units and kinds as flowtel sent them.
    let seen: BTreeSet<&str> = points.iter().map(|p| p.metric.as_str()).collect();
    for name in [
        "network.flow.bytes",
        "network.flow.packets",
        "network.flow.connections.opened",
    ] {
        assert!(seen.contains(name), "{name} missing: {seen:?}");
    }
    for p in &points {
        match p.kind {
            Kind::Sum {
                temporality,
                monotonic,
            } => {
                assert_eq!(temporality, 1, "{} is still delta after rotel", p.metric);
                assert!(monotonic, "{}", p.metric);
            }
            Kind::Gauge => assert!(p.metric.starts_with("network.flow.tcp.rtt"), "{}", p.metric),
            Kind::Other => panic!("{}: neither Sum nor Gauge after rotel", p.metric),
        }
        assert_eq!(
            p.start_ns % WINDOW_NS,
            0,
            "{}: window start aligned",
            p.metric
        );
        assert!(p.time_ns > p.start_ns && p.time_ns - p.start_ns <= WINDOW_NS);
        assert_eq!(p.scope.0, "flowtel");
        assert_eq!(
            p.resource.get("service.name").map(String::as_str),
            Some("flowtel")
        );
        assert_eq!(
            p.resource.get("deployment.environment").map(String::as_str),
            Some("collector-test")
        );
        assert!(p.resource.contains_key("host.name") && p.resource.contains_key("service.version"));
    }
    let unit = |name: &str| {
        points
            .iter()
            .find(|p| p.metric == name)
            .map(|p| p.unit.as_str())
    };
    assert_eq!(unit("network.flow.bytes"), Some("By"));
    assert_eq!(unit("network.flow.packets"), Some("{packet}"));

    // The agent's health rode along, delta too, one feature state each.
    let health = otlp_metrics::health_points(&requests);
    assert!(health.iter().all(|p| p.scope.0 == HEALTH_SCOPE));
    let features: BTreeSet<&str> = health
        .iter()
        .filter(|p| p.metric == "flowtel.feature.state")
        .filter_map(|p| p.attribute("feature"))
        .collect();
    assert_eq!(features.len(), 11, "{features:?}");
    for p in health
        .iter()
        .filter(|p| p.metric == "flowtel.connections.dropped")
    {
        assert_eq!(
            p.kind,
            Kind::Sum {
                temporality: 1,
                monotonic: true
            }
        );
    }
    println!(
        "flowtel --{}--> rotel --{}--> receiver: {} requests, {} windows of this transfer, {transmitted} bytes transmitted and {received} received, exact",
        into.as_str(),
        out.as_str(),
        arrivals.len(),
        printed.len()
    );
}

#[test]
fn grpc_through_rotel_arrives_exact_and_unchanged() {
    through_rotel(Protocol::Grpc, Protocol::Grpc);
}

#[test]
fn http_through_rotel_arrives_exact_and_unchanged() {
    through_rotel(Protocol::Http, Protocol::Http);
}

#[test]
fn grpc_in_http_out_through_rotel_arrives_exact_and_unchanged() {
    through_rotel(Protocol::Grpc, Protocol::Http);
}
