//! Export cost: time and bytes to encode one window of 100,000 series as
//! OTLP protobuf, with and without gzip, and bytes per series.
//!
//! `cargo bench -p exporter --bench encode` (see BENCHMARKS.md).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use exporter::otlp::encode::Encoder;
use exporter::otlp::Temporality;
use processor::{Processor, WindowReport};
use prost::Message as _;
use receiver::{
    ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, Poll, ProcessInfo,
    Transport,
};

const SERIES: u64 = 100_000;

/// A window of `SERIES` flows: each connection goes to its own destination.
fn window() -> WindowReport {
    let process = Arc::new(ProcessInfo {
        pid: 4242,
        name: "api-server".into(),
        container_id: Some("0123456789abcdef".into()),
        pod_uid: None,
    });
    let samples = (0..SERIES)
        .map(|i| ConnectionSample {
            id: ConnectionId {
                socket_cookie: i + 1,
                peer: None,
                first_seen_ns: 1,
            },
            netns: 4026531840,
            transport: Transport::Tcp,
            local: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), 40000),
            remote: SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(
                    10,
                    2,
                    (i / 60000) as u8,
                    (i / 250 % 240) as u8,
                )),
                1024 + (i % 60000) as u16,
            ),
            direction: Direction::Outgoing,
            process: Arc::clone(&process),
            counters: Counters {
                bytes_sent: 1000 + i,
                bytes_received: 5000 + i,
                packets_sent: 10,
                packets_received: 12,
                retransmits: i % 3,
            },
            rtt: None,
            seen_opening: true,
            established: true,
            state: ConnectionState::Open,
            translation: Default::default(),
        })
        .collect();
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    // Every flow its own series: the bench measures 100k series.
    let config = processor::Config {
        interval: Duration::from_secs(300),
        max_series: usize::MAX,
        ..processor::Config::default()
    };
    let mut processor = Processor::new(config, start).expect("valid config");
    let poll = Poll {
        at: None,
        samples,
        health: Default::default(),
        ports: Default::default(),
        ..Poll::default()
    };
    processor.ingest(&poll, start + Duration::from_secs(10));
    processor.flush(start + Duration::from_secs(300))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).expect("gzip in memory");
    encoder.finish().expect("gzip in memory")
}

fn encode(c: &mut Criterion) {
    let window = window();
    let series = window.series.len() as u64;
    let mut encoder = Encoder::new(&BTreeMap::new(), Temporality::Delta);
    let bodies: Vec<Vec<u8>> = encoder
        .encode(&window)
        .iter()
        .map(|request| request.encode_to_vec())
        .collect();
    let raw: usize = bodies.iter().map(Vec::len).sum();
    let zipped: usize = bodies.iter().map(|b| gzip(b).len()).sum();
    println!(
        "window of {series} flows: {} requests, {raw} bytes protobuf ({:.1} B/flow), {zipped} bytes gzip ({:.1} B/flow)",
        bodies.len(),
        raw as f64 / series as f64,
        zipped as f64 / series as f64
    );

    let mut group = c.benchmark_group("encode");
    group.sample_size(10);
    group.throughput(Throughput::Elements(series));
    group.bench_function("protobuf/100k", |b| {
        b.iter(|| {
            let requests = encoder.encode(black_box(&window));
            black_box(
                requests
                    .iter()
                    .map(|r| r.encode_to_vec().len())
                    .sum::<usize>(),
            )
        })
    });
    group.bench_function("protobuf+gzip/100k", |b| {
        b.iter(|| {
            let requests = encoder.encode(black_box(&window));
            black_box(
                requests
                    .iter()
                    .map(|r| gzip(&r.encode_to_vec()).len())
                    .sum::<usize>(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
