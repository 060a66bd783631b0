//! The queue's memory bound holds: with about 10,000 series in every window
//! and the backend down, the agent's RSS stays below its baseline plus
//! `queue_bytes`, because the queue holds windows encoded, as `queue_bytes`
//! counts them (it used to hold them decoded, several times larger); beside
//! the queue, only the window being encoded and the one in flight.
//! `FLOWTEL_QUEUE_MEMORY_SECS` sets how long the outage lasts (default 90).

use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::agent::Agent;
use integration::otlp_receiver::{Behaviour, OtlpReceiver, Protocol};
use integration::privilege;

const FLOWTEL: &str = env!("CARGO_BIN_EXE_flowtel");
/// Destination ports, one series each.
const SERIES: u16 = 10_000;
const FIRST_PORT: u16 = 40_000;
const QUEUE_BYTES: u64 = 128 << 20;

/// Sends one datagram to each of the ports, over and over, until `stop`.
fn series_traffic(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let round = Instant::now();
            for port in FIRST_PORT..FIRST_PORT + SERIES {
                // Nobody listens: the send is counted all the same.
                let _ = socket.send_to(b"x", (Ipv4Addr::LOCALHOST, port));
            }
            std::thread::sleep(Duration::from_millis(500).saturating_sub(round.elapsed()));
        }
    })
}

#[test]
fn with_the_backend_down_rss_stays_below_the_baseline_plus_queue_bytes() {
    privilege::require_root();
    let secs: u64 = std::env::var("FLOWTEL_QUEUE_MEMORY_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let dir = std::env::temp_dir().join(format!("flowtel-queue-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("flowtel.yaml");
    std::fs::write(
        &config,
        format!(
            "processor:\n  max_series: 30000\nexporters:\n  otlp:\n    queue_size: 100000\n    queue_bytes: {QUEUE_BYTES}\n"
        ),
    )
    .unwrap();
    let down = OtlpReceiver::start(
        Protocol::Http,
        Behaviour {
            unavailable_first: u32::MAX,
            ..Behaviour::default()
        },
    );
    // No console output: 10,000 JSON lines a second are not the point.
    let mut command = std::process::Command::new(FLOWTEL);
    command
        .args(["run", "--poll-interval", "200ms", "--interval", "1s"])
        .arg("--config")
        .arg(&config)
        .env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", down.endpoint())
        // The exporter's debug line gives each window's encoded size.
        .env("RUST_LOG", "info,exporter::otlp::exporter=debug");
    let agent = Agent::launch(command, Duration::from_millis(200));
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = series_traffic(Arc::clone(&stop));

    // The baseline: the agent at work, before the queue holds much.
    std::thread::sleep(Duration::from_secs(3));
    let baseline = agent.rss_kib();
    let started = Instant::now();
    let mut curve = vec![(0, baseline)];
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(5));
        curve.push((started.elapsed().as_secs(), agent.rss_kib()));
    }
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let curve_text: Vec<String> = curve
        .iter()
        .map(|(t, kib)| format!("{t}s {} MiB", kib / 1024))
        .collect();
    println!(
        "RSS with the backend down (queue_bytes {} MiB): {}",
        QUEUE_BYTES >> 20,
        curve_text.join(", ")
    );
    let full = agent
        .stderr()
        .iter()
        .filter(|l| l.contains("OTLP queue full"))
        .count();
    assert!(
        full > 0,
        "the queue never reached queue_bytes: the windows were smaller than this test needs"
    );
    let largest_window_kib = agent
        .stderr()
        .iter()
        .filter(|l| l.contains("encoded in"))
        .filter_map(|l| {
            l.rsplit(", ")
                .next()?
                .strip_suffix(" bytes")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("the exporter's debug line with a window's encoded size")
        / 1024;
    let peak = curve.iter().map(|(_, kib)| *kib).max().unwrap();
    // Beside the queue: the window being encoded and the one in flight as a
    // request body, each at most the largest window.
    let bound = baseline + QUEUE_BYTES / 1024 + 2 * largest_window_kib;
    assert!(
        peak <= bound,
        "RSS peaked at {} MiB, above the baseline {} MiB plus queue_bytes {} MiB plus two windows of {} MiB",
        peak / 1024,
        baseline / 1024,
        QUEUE_BYTES >> 20,
        largest_window_kib / 1024
    );
    println!("largest window {} MiB encoded", largest_window_kib / 1024);
    let _ = std::fs::remove_dir_all(&dir);
}
