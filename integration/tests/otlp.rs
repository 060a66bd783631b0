//! flowtel's windows reach a real OTLP receiver (gRPC and HTTP, gzip on and
//! off) with flowtel's metrics, resource, attributes and aligned window
//! timestamps, and this process's TCP bytes exact; a receiver that fails
//! first gets each window once, a refusing one gets no retry storm, a slow
//! one times out without stalling the agent's polls.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use integration::agent::Agent;
use integration::otlp_metrics::{self, Kind, Point};
use integration::otlp_receiver::{accepted_requests, Arrival, Behaviour, OtlpReceiver, Protocol};
use integration::privilege;
use integration::traffic::tcp;

const POLL: Duration = Duration::from_millis(200);
const WINDOW_NS: u64 = 1_000_000_000;
const WAIT: Duration = Duration::from_secs(30);

/// flowtel exporting to `receiver`, with `env` besides.
fn agent(receiver: &OtlpReceiver, env: &[(&str, &str)]) -> Agent {
    let mut command = receiver.agent_command(env!("CARGO_BIN_EXE_flowtel"));
    command.env("RUST_LOG", "info").envs(env.iter().copied());
    Agent::launch(command, POLL)
}

fn mine(p: &Point) -> bool {
    p.of_this_process()
}

/// Sum of this process's `network.flow.bytes` points for one direction of
/// the flow to or from `port`.
fn bytes(points: &[Point], port: u16, direction: &str) -> i64 {
    otlp_metrics::flow_bytes(points, port, direction)
}

/// This process's transmitted bytes at `port` in the accepted arrivals.
fn accepted_bytes(arrivals: &[Arrival], port: u16) -> i64 {
    bytes(
        &otlp_metrics::points(&accepted_requests(arrivals)),
        port,
        "transmit",
    )
}

/// A receiver that answers as `behaviour` says, an agent exporting to it,
/// and a transfer of `upload` and `download` bytes with its truth: the
/// bytes both ends transmitted.
fn export_transfer(
    behaviour: Behaviour,
    upload: usize,
    download: usize,
) -> (OtlpReceiver, Agent, tcp::Transfer, i64) {
    let receiver = OtlpReceiver::start(Protocol::Http, behaviour);
    let agent = agent(&receiver, &[]);
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), upload, download);
    let expected = (truth.client_sent + truth.server_sent) as i64;
    (receiver, agent, truth, expected)
}

/// The first three arrivals were not accepted, and the fourth, accepted,
/// is the same request again.
fn assert_refused_three_times_then_resent(arrivals: &[Arrival]) {
    assert!(arrivals[..3].iter().all(|a| !a.accepted));
    assert!(
        arrivals[..4]
            .iter()
            .all(|a| a.request == arrivals[0].request),
        "the refused request came again, unchanged: same window, same points"
    );
    assert!(
        arrivals[3].accepted,
        "the retry carries the original window"
    );
}

fn exact_windows(protocol: Protocol, gzip: bool) {
    privilege::require_root();
    let receiver = OtlpReceiver::start(protocol, Behaviour::default());
    let compression = if gzip { "gzip" } else { "none" };
    let mut agent = agent(
        &receiver,
        &[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", compression),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-flowtel-test=hello%20otlp"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=integration",
            ),
        ],
    );
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 3 << 20, 1 << 20);
    let port = truth.server_port;
    // Client and server are both this process: each direction's bytes
    // appear once on the client's flow and once on the server's.
    let expected_transmit = (truth.client_sent + truth.server_sent) as i64;
    let expected_receive = (truth.client_received + truth.server_received) as i64;
    receiver.wait_for("this process's bytes", WAIT, |arrivals| {
        let requests: Vec<_> = arrivals.iter().map(|a| a.request.clone()).collect();
        let points = otlp_metrics::points(&requests);
        bytes(&points, port, "transmit") >= expected_transmit
            && bytes(&points, port, "receive") >= expected_receive
    });
    // Two more windows: nothing is counted twice.
    let seen = receiver.arrivals().len();
    receiver.wait_for("two more windows", WAIT, |a| a.len() >= seen + 2);
    agent.stop();
    let arrivals = receiver.arrivals();
    let requests = receiver.accepted();
    assert_eq!(requests.len(), arrivals.len(), "every request accepted");
    // The console exporter ran beside OTLP (--format json).
    assert!(!agent.records().is_empty(), "no console records");
    let points = otlp_metrics::points(&requests);
    assert_eq!(
        bytes(&points, port, "transmit"),
        expected_transmit,
        "bytes transmitted"
    );
    assert_eq!(
        bytes(&points, port, "receive"),
        expected_receive,
        "bytes received"
    );

    for a in &arrivals {
        assert_eq!(a.gzip, gzip, "compression");
        assert!(
            a.headers
                .iter()
                .any(|(k, v)| k == "x-flowtel-test" && v == "hello otlp"),
            "custom header: {:?}",
            a.headers.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
    }

    let units: BTreeMap<&str, &str> = [
        ("network.flow.bytes", "By"),
        ("network.flow.packets", "{packet}"),
        ("network.flow.tcp.retransmits", "{segment}"),
        ("network.flow.connections.opened", "{connection}"),
        ("network.flow.connections.closed", "{connection}"),
        ("network.flow.connections.failed", "{connection}"),
        ("network.flow.tcp.rtt", "s"),
        ("network.flow.tcp.rtt.variance", "s"),
    ]
    .into_iter()
    .collect();
    let seen: BTreeSet<&str> = points.iter().map(|p| p.metric.as_str()).collect();
    for name in [
        "network.flow.bytes",
        "network.flow.packets",
        "network.flow.tcp.retransmits",
        "network.flow.connections.opened",
    ] {
        assert!(seen.contains(name), "{name} missing; got {seen:?}");
    }
    for p in &points {
        assert_eq!(
            units.get(p.metric.as_str()),
            Some(&p.unit.as_str()),
            "unit of {}",
            p.metric
        );
        match p.kind {
            Kind::Sum {
                temporality,
                monotonic,
            } => {
                assert_eq!(temporality, 1, "{} is delta", p.metric);
                assert!(monotonic, "{} is monotonic", p.metric);
                assert!(p.int() >= 0);
            }
            Kind::Gauge => assert!(p.metric.starts_with("network.flow.tcp.rtt"), "{}", p.metric),
            Kind::Other => panic!("{} is neither Sum nor Gauge", p.metric),
        }
        assert_eq!(
            p.resource.get("service.name").map(String::as_str),
            Some("flowtel")
        );
        assert!(p.resource.contains_key("host.name") && p.resource.contains_key("service.version"));
        assert_eq!(
            p.resource.get("deployment.environment").map(String::as_str),
            Some("integration")
        );
        assert_eq!(p.scope.0, "flowtel");
        // Aligned windows; every window but the one flushed at shutdown is
        // exactly one interval long.
        assert_eq!(p.start_ns % WINDOW_NS, 0, "window start aligned");
        assert!(p.time_ns > p.start_ns && p.time_ns - p.start_ns <= WINDOW_NS);
        for key in [
            "network.transport",
            "network.type",
            "source.address",
            "destination.address",
        ] {
            assert!(p.attributes.contains_key(key), "{} lacks {key}", p.metric);
        }
    }
    let full = points
        .iter()
        .filter(|p| p.time_ns - p.start_ns == WINDOW_NS)
        .count();
    assert!(full > 0, "no full window");
    let mine_tcp: Vec<&Point> = points
        .iter()
        .filter(|p| mine(p) && p.metric == "network.flow.bytes")
        .collect();
    assert!(mine_tcp
        .iter()
        .all(|p| p.attribute("network.transport") == Some("tcp")
            && p.attribute("source.process.name").is_some()));

    // One of this test's windows, decoded, for people to read.
    if let Some(request) = requests.iter().find(|r| {
        bytes(
            &otlp_metrics::points(std::slice::from_ref(*r)),
            port,
            "transmit",
        ) > 0
    }) {
        // Only this test's two flows: the process also has other tests'.
        let port = port.to_string();
        let excerpt = otlp_metrics::only_points(request, |a| {
            a.get("source.process.pid") == Some(&std::process::id().to_string())
                && (a.get("destination.port") == Some(&port) || a.get("source.port") == Some(&port))
        });
        let json = serde_json::to_string_pretty(&excerpt).unwrap();
        let path = std::env::temp_dir().join(format!(
            "flowtel-otlp-window-{}.json",
            protocol.as_str().replace('/', "-")
        ));
        std::fs::write(&path, &json).unwrap();
        eprintln!(
            "one window, this process's points ({}):\n{json}",
            path.display()
        );
    }
}

#[test]
fn grpc_windows_arrive_exact_and_well_formed() {
    exact_windows(Protocol::Grpc, false);
}

#[test]
fn grpc_gzip_windows_arrive_exact_and_well_formed() {
    exact_windows(Protocol::Grpc, true);
}

#[test]
fn http_windows_arrive_exact_and_well_formed() {
    exact_windows(Protocol::Http, false);
}

#[test]
fn http_gzip_windows_arrive_exact_and_well_formed() {
    exact_windows(Protocol::Http, true);
}

#[test]
fn windows_queued_through_an_outage_arrive_once_in_order_with_their_timestamps() {
    privilege::require_root();
    // 503 three times: with backoff of about 1s, 2s and 4s the outage
    // lasts about 7 one-second windows.
    let behaviour = Behaviour {
        unavailable_first: 3,
        ..Behaviour::default()
    };
    let (receiver, mut agent, truth, expected) = export_transfer(behaviour, 1 << 20, 1 << 10);
    // Traffic in every window of the outage, so that each has a request.
    while !receiver.arrivals().iter().any(|a| a.accepted) {
        let attempts = receiver.arrivals().len();
        assert!(attempts <= 3, "accepted nothing after three 503s");
        tcp::transfer("127.0.0.1".parse().unwrap(), 4 << 10, 1 << 10);
        receiver.wait_for("the next attempt", WAIT, |a| a.len() > attempts);
    }
    receiver.wait_for("this process's bytes, accepted", WAIT, |arrivals| {
        accepted_bytes(arrivals, truth.server_port) >= expected
    });
    // The windows of the outage, queued behind the retried one, and one
    // window after them.
    agent.wait_for_another_window();
    let closed = receiver.arrivals().len();
    receiver.wait_for("the window after", WAIT, |a| a.len() > closed);
    agent.stop();
    let arrivals = receiver.arrivals();
    assert_refused_three_times_then_resent(&arrivals);
    // Windows that closed during the outage were sent after it with their
    // own timestamps.
    let recovered = arrivals[3]
        .received
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let queued = arrivals[4..]
        .iter()
        .filter(|a| {
            let p = &otlp_metrics::points(std::slice::from_ref(&a.request))[0];
            Duration::from_nanos(p.time_ns) < recovered
        })
        .count();
    assert!(
        queued >= 2,
        "only {queued} windows waited through the outage"
    );
    let accepted = receiver.accepted();
    assert_eq!(
        bytes(
            &otlp_metrics::points(&accepted),
            truth.server_port,
            "transmit"
        ),
        expected
    );
    // Each accepted window once, in order.
    let windows: Vec<(u64, u64)> = accepted
        .iter()
        .map(|r| {
            let p = &otlp_metrics::points(std::slice::from_ref(r))[0];
            (p.start_ns, p.time_ns)
        })
        .collect();
    let mut sorted = windows.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(windows, sorted, "windows arrive once each, in order");
    assert!(agent
        .stderr()
        .iter()
        .any(|l| l.contains("HTTP status 503") && l.contains("retry")));
}

#[test]
fn a_200_with_an_html_page_is_not_delivery_logged_once_counted_and_retried() {
    privilege::require_root();
    // A web server that is not an OTLP receiver answers the first three.
    let behaviour = Behaviour {
        html_first: 3,
        ..Behaviour::default()
    };
    let (receiver, mut agent, truth, expected) = export_transfer(behaviour, 4_000_000, 4_000_000);
    assert_eq!(expected, 8_000_000);
    let counted = |requests: &[_]| {
        let health = otlp_metrics::health_points(requests);
        health
            .iter()
            .filter(|p| p.metric == "flowtel.export.not_otlp")
            .map(Point::int)
            .sum::<i64>()
    };
    receiver.wait_for(
        "the bytes, accepted, and the answers counted",
        WAIT,
        |arrivals| {
            accepted_bytes(arrivals, truth.server_port) >= expected
                && counted(&accepted_requests(arrivals)) >= 3
        },
    );
    agent.stop();
    assert_refused_three_times_then_resent(&receiver.arrivals());
    let accepted = receiver.accepted();
    let arrived = bytes(
        &otlp_metrics::points(&accepted),
        truth.server_port,
        "transmit",
    );
    println!("a 200 with HTML three times: {arrived} of {expected} bytes arrived");
    assert_eq!(arrived, expected);
    assert_eq!(counted(&accepted), 3, "flowtel.export.not_otlp");
    let said: Vec<_> = agent
        .stderr()
        .into_iter()
        .filter(|l| l.contains("the endpoint answered 200 but is not an OTLP receiver"))
        .collect();
    assert_eq!(said.len(), 1, "logged once: {said:?}");
    assert!(said[0].contains("text/html"), "{said:?}");
}

#[test]
fn a_password_in_the_endpoint_never_shows_in_the_log() {
    privilege::require_root();
    const PASSWORD: &str = "pw-otlp-test-4d2a";
    let receiver = OtlpReceiver::start(
        Protocol::Http,
        Behaviour {
            unavailable_first: 2,
            ..Behaviour::default()
        },
    );
    let endpoint =
        receiver
            .endpoint()
            .replacen("http://", &format!("http://flowtel:{PASSWORD}@"), 1);
    let mut agent = agent(
        &receiver,
        &[("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", endpoint.as_str())],
    );
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 64 << 10, 1 << 10);
    receiver.wait_for("the bytes, after two 503s", WAIT, |arrivals| {
        accepted_bytes(arrivals, truth.server_port)
            >= (truth.client_sent + truth.server_sent) as i64
    });
    agent.stop();
    let stderr = agent.stderr();
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("retry") && l.contains("<redacted>@127.0.0.1")),
        "the retry warnings name the endpoint, redacted: {stderr:?}"
    );
    assert!(stderr.iter().all(|l| !l.contains(PASSWORD)), "{stderr:?}");
    assert!(
        receiver.arrivals().iter().all(|a| a
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v.starts_with("Basic "))),
        "the user and password go as basic authentication"
    );
}

#[test]
fn a_401_is_logged_once_without_the_key_and_never_retried() {
    privilege::require_root();
    let behaviour = Behaviour {
        unauthorized: true,
        ..Behaviour::default()
    };
    let receiver = OtlpReceiver::start(Protocol::Http, behaviour);
    let mut agent = agent(
        &receiver,
        &[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20s3cr3t-key",
        )],
    );
    // Three windows with traffic, each refused, then one more window.
    for window in 1..=3 {
        tcp::transfer("127.0.0.1".parse().unwrap(), 64 << 10, 1 << 10);
        receiver.wait_for("a refused request", WAIT, |a| a.len() >= window);
    }
    agent.wait_for_another_window();
    let closed = receiver.arrivals().len();
    receiver.wait_for("the window after", WAIT, |a| a.len() > closed);
    agent.stop();
    let arrivals = receiver.arrivals();
    let mut bodies: Vec<String> = arrivals
        .iter()
        .map(|a| format!("{:?}", a.request))
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(
        bodies.len(),
        arrivals.len(),
        "a refused window was sent again: {} requests, {} distinct",
        arrivals.len(),
        bodies.len()
    );
    let stderr = agent.stderr();
    let refusals: Vec<_> = stderr
        .iter()
        .filter(|l| l.contains("HTTP status 401"))
        .collect();
    assert_eq!(refusals.len(), 1, "logged once: {refusals:#?}");
    assert!(
        refusals[0].contains(&receiver.endpoint()),
        "{}",
        refusals[0]
    );
    assert!(
        stderr.iter().all(|l| !l.contains("s3cr3t")),
        "the key was logged"
    );
}

#[test]
fn a_slow_receiver_times_out_and_never_stalls_the_polls() {
    privilege::require_root();
    let behaviour = Behaviour {
        delay: Duration::from_secs(5),
        ..Behaviour::default()
    };
    let receiver = OtlpReceiver::start(Protocol::Grpc, behaviour);
    let mut agent = agent(&receiver, &[("OTEL_EXPORTER_OTLP_TIMEOUT", "500")]);
    tcp::transfer("127.0.0.1".parse().unwrap(), 64 << 10, 1 << 10);
    let polls_before = agent.records().len();
    receiver.wait_for("a request", WAIT, |a| !a.is_empty());
    let deadline = std::time::Instant::now() + WAIT;
    // tonic reports its own deadline as CANCELLED "Timeout expired".
    let timed_out = |l: &String| {
        l.contains("OTLP export failed")
            && (l.contains("Timeout expired") || l.contains("timed out"))
    };
    while !agent.stderr().iter().any(timed_out) {
        assert!(
            std::time::Instant::now() < deadline,
            "no timeout logged: {:#?}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Polls go on while the export waits: the next two come on time (the
    // receiver answers after 5 s; a poll waiting on the export would be
    // late by the export's 500 ms timeout at least).
    let waiting = std::time::Instant::now();
    agent.wait_polls(2);
    assert!(
        waiting.elapsed() < POLL * 2 + Duration::from_millis(450),
        "polls stalled behind the export: two polls took {:?}",
        waiting.elapsed()
    );
    assert!(agent.records().len() > polls_before);
    agent.stop();
}

#[test]
fn a_partial_success_is_logged_with_the_rejected_count_and_not_resent() {
    privilege::require_root();
    let behaviour = Behaviour {
        rejected_points: 3,
        ..Behaviour::default()
    };
    let receiver = OtlpReceiver::start(Protocol::Grpc, behaviour);
    let mut agent = agent(&receiver, &[]);
    tcp::transfer("127.0.0.1".parse().unwrap(), 64 << 10, 1 << 10);
    let first = receiver.wait_for("a request", WAIT, |a| !a.is_empty());
    let deadline = std::time::Instant::now() + WAIT;
    while !agent
        .stderr()
        .iter()
        .any(|l| l.contains("3 data points rejected"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no partial success logged: {:#?}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    agent.stop();
    // A partial success is final: the same request never comes again.
    let arrivals = receiver.arrivals();
    assert!(arrivals
        .iter()
        .skip(1)
        .all(|a| a.request != first[0].request));
}

#[test]
fn cumulative_sums_grow_from_one_start_time_to_the_exact_total() {
    privilege::require_root();
    use std::io::{Read, Write};
    let receiver = OtlpReceiver::start(Protocol::Http, Behaviour::default());
    let mut agent = agent(
        &receiver,
        &[(
            "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
            "cumulative",
        )],
    );
    // One connection sending in bursts over several windows: one series.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut sink = Vec::new();
        conn.read_to_end(&mut sink).unwrap();
        sink.len()
    });
    let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let burst = vec![7u8; 32 << 10];
    for _ in 0..12 {
        client.write_all(&burst).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(client);
    let total = server.join().unwrap() as i64;
    assert_eq!(total, 12 * (32 << 10));

    let port = port.to_string();
    let series = |points: Vec<Point>| -> Vec<Point> {
        let mut points: Vec<Point> = points
            .into_iter()
            .filter(|p| p.metric == "network.flow.bytes" && mine(p))
            .filter(|p| p.attribute("network.io.direction") == Some("transmit"))
            .filter(|p| p.attribute("destination.port") == Some(&port))
            .collect();
        points.sort_by_key(|p| p.time_ns);
        points
    };
    receiver.wait_for("the running total", WAIT, |arrivals| {
        let requests: Vec<_> = arrivals.iter().map(|a| a.request.clone()).collect();
        series(otlp_metrics::points(&requests))
            .last()
            .is_some_and(|p| p.int() >= total)
    });
    agent.stop();
    let points = series(otlp_metrics::points(&receiver.accepted()));
    assert!(points.len() >= 2, "the series spans windows: {points:#?}");
    for pair in points.windows(2) {
        assert!(
            pair[1].int() >= pair[0].int(),
            "cumulative sums never go down"
        );
        assert_eq!(
            pair[1].start_ns, pair[0].start_ns,
            "one start time per series"
        );
        assert!(pair[1].time_ns > pair[0].time_ns);
    }
    assert!(points.iter().all(|p| p.kind
        == Kind::Sum {
            temporality: 2,
            monotonic: true
        }));
    assert_eq!(
        points.last().unwrap().int(),
        total,
        "the running total is exact"
    );
}

#[test]
fn grpc_resource_exhausted_is_retried_after_the_servers_retry_info_delay() {
    privilege::require_root();
    let asked = Duration::from_millis(300);
    let behaviour = Behaviour {
        exhausted_retry_delay: Some(asked),
        ..Behaviour::default()
    };
    let receiver = OtlpReceiver::start(Protocol::Grpc, behaviour);
    let mut agent = agent(&receiver, &[]);
    tcp::transfer("127.0.0.1".parse().unwrap(), 64 << 10, 1 << 10);
    let arrivals = receiver.wait_for("the retry", WAIT, |a| a.len() >= 2);
    agent.stop();
    assert!(!arrivals[0].accepted && arrivals[1].accepted);
    assert_eq!(arrivals[1].request, arrivals[0].request);
    // Backoff alone would wait at least 800ms (1s less 20% jitter).
    let waited = arrivals[1].at - arrivals[0].at;
    assert!(
        waited >= asked && waited < Duration::from_millis(800),
        "retried after {waited:?}, asked for {asked:?}"
    );
    assert!(agent
        .stderr()
        .iter()
        .any(|l| l.contains("ResourceExhausted") && l.contains("retry 1 in 300ms")));
}

#[test]
fn the_agents_health_rides_with_the_windows_and_counts_dropped_connections() {
    privilege::require_root();
    let receiver = OtlpReceiver::start(Protocol::Grpc, Behaviour::default());
    let mut command = receiver.agent_command(env!("CARGO_BIN_EXE_flowtel"));
    command.args(["--max-connections", "16"]);
    let mut agent = Agent::launch(command, POLL);
    // 32 connections (64 sockets) held open: most cannot be tracked.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(std::net::TcpStream::connect(server).unwrap());
        held.push(listener.accept().unwrap().0);
    }
    // A transfer, so that windows have data to carry the health with.
    tcp::transfer("127.0.0.1".parse().unwrap(), 64 << 10, 1 << 10);
    let dropped = |requests: &[_]| {
        otlp_metrics::health_points(requests)
            .iter()
            .filter(|p| p.metric == "flowtel.connections.dropped")
            .map(Point::int)
            .max()
            .unwrap_or(0)
    };
    receiver.wait_for("health with dropped connections", WAIT, |arrivals| {
        let requests: Vec<_> = arrivals.iter().map(|a| a.request.clone()).collect();
        dropped(&requests) > 0
    });
    agent.stop();
    drop(held);

    let accepted = receiver.accepted();
    let health = otlp_metrics::health_points(&accepted);
    let names: BTreeSet<&str> = health.iter().map(|p| p.metric.as_str()).collect();
    for name in [
        "flowtel.connections.dropped",
        "flowtel.events.untracked",
        "flowtel.map.fill",
        "flowtel.windows.dropped",
        "flowtel.windows.queued",
        "flowtel.export.failures",
        "flowtel.feature.state",
        "flowtel.netns.unreachable",
        "flowtel.udp.releases.lost",
        "flowtel.map.insert.failures",
        "flowtel.kernel.runs.missed",
        "flowtel.nat.resyncs",
        "flowtel.nat.entries.dropped",
        "flowtel.kubernetes.relists",
        "flowtel.kubernetes.objects.malformed",
        "flowtel.kubernetes.api.errors",
    ] {
        assert!(names.contains(name), "{name} missing from {names:?}");
    }
    // The exported count is the agent's own, as its health records say.
    let reported = agent
        .health()
        .iter()
        .map(|h| h.connections_dropped)
        .max()
        .unwrap();
    assert!(dropped(&accepted) > 0 && dropped(&accepted) as u64 <= reported);
    let fill = health
        .iter()
        .filter(|p| p.metric == "flowtel.map.fill")
        .map(|p| match p.value {
            otlp_metrics::Value::Double(d) => d,
            otlp_metrics::Value::Int(n) => n as f64,
        })
        .fold(0.0, f64::max);
    assert!(fill > 0.9, "the map was full: fill {fill}");
    // Health rides in the windows' requests, with their resource.
    assert!(health.iter().all(|p| p.resource.contains_key("host.name")));
    assert!(health.iter().all(|p| p.scope.0 == "flowtel.health"));
}

#[test]
fn windows_unsent_at_shutdown_are_kept_on_disk_and_sent_by_the_next_agent() {
    privilege::require_root();
    let dir = std::env::temp_dir().join(format!("flowtel-spill-test-{}", std::process::id()));
    let spill = dir.join("spill");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("flowtel.yaml");
    std::fs::write(
        &config,
        format!("exporters:\n  otlp:\n    spill_dir: {}\n", spill.display()),
    )
    .unwrap();
    let with_config = |receiver: &OtlpReceiver| {
        let mut command = receiver.agent_command(env!("CARGO_BIN_EXE_flowtel"));
        command.arg("--config").arg(&config);
        Agent::launch(command, POLL)
    };

    // The backend is down for the first agent's whole life.
    let down = OtlpReceiver::start(
        Protocol::Http,
        Behaviour {
            unavailable_first: u32::MAX,
            ..Behaviour::default()
        },
    );
    let mut first = with_config(&down);
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 1 << 10);
    let expected = (truth.client_sent + truth.server_sent) as i64;
    std::thread::sleep(Duration::from_millis(2500));
    first.stop();
    let first_stopped = std::time::SystemTime::now();
    let kept = std::fs::read_dir(&spill).map_or(0, |d| d.count());
    assert!(kept > 0, "nothing kept on disk: {:?}", first.stderr());
    assert!(down.accepted().is_empty());

    // The next agent sends them first, with their own timestamps.
    let up = OtlpReceiver::start(Protocol::Http, Behaviour::default());
    let mut second = with_config(&up);
    up.wait_for("the kept windows", WAIT, |arrivals| {
        let requests: Vec<_> = arrivals.iter().map(|a| a.request.clone()).collect();
        bytes(
            &otlp_metrics::points(&requests),
            truth.server_port,
            "transmit",
        ) >= expected
    });
    second.stop();
    let points = otlp_metrics::points(&up.accepted());
    assert_eq!(bytes(&points, truth.server_port, "transmit"), expected);
    let stopped_ns = first_stopped
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let port = truth.server_port.to_string();
    let transfer: Vec<_> = points
        .iter()
        .filter(|p| mine(p) && p.metric == "network.flow.bytes")
        .filter(|p| {
            p.attribute("destination.port") == Some(&port)
                || p.attribute("source.port") == Some(&port)
        })
        .collect();
    assert!(!transfer.is_empty());
    assert!(
        transfer.iter().all(|p| p.time_ns <= stopped_ns),
        "the kept windows keep their original timestamps"
    );
    assert_eq!(
        std::fs::read_dir(&spill).map_or(0, |d| d.count()),
        0,
        "sent once, then gone from disk"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
