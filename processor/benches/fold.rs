//! Processor throughput: connection samples folded per second on one core,
//! with 10,000 and 1,000,000 distinct connections open. Each iteration is
//! one poll in which every connection moved some bytes.
//!
//! `cargo bench -p processor --bench fold` (see BENCHMARKS.md).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use processor::{Config, Processor};
use receiver::{
    ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, Poll, ProcessInfo,
    Transport,
};

/// `connections` outgoing TCP connections from 50 processes to 1,000
/// services (10.0.x.y:port): a flow table of about 1,000 rows.
fn poll_of(connections: u64) -> Poll {
    let processes: Vec<Arc<ProcessInfo>> = (0..50)
        .map(|i| {
            Arc::new(ProcessInfo {
                pid: 1000 + i,
                name: format!("service-{i}"),
                container_id: None,
                pod_uid: None,
            })
        })
        .collect();
    let samples = (0..connections)
        .map(|i| {
            let service = i % 1000;
            ConnectionSample {
                id: ConnectionId {
                    socket_cookie: i + 1,
                    peer: None,
                    first_seen_ns: 1,
                },
                netns: 4026531840,
                transport: Transport::Tcp,
                local: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
                    30000 + (i % 30000) as u16,
                ),
                remote: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(
                        10,
                        0,
                        (service / 250) as u8,
                        (service % 250) as u8,
                    )),
                    8000 + (service % 7) as u16,
                ),
                direction: Direction::Outgoing,
                process: Arc::clone(&processes[(i % 50) as usize]),
                counters: Counters::default(),
                rtt: None,
                seen_opening: true,
                established: true,
                state: ConnectionState::Open,
                translation: Default::default(),
            }
        })
        .collect();
    Poll {
        at: None,
        samples,
        health: Default::default(),
        ports: Default::default(),
        ..Poll::default()
    }
}

fn fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("fold");
    group.sample_size(10);
    for connections in [10_000u64, 1_000_000] {
        let mut poll = poll_of(connections);
        let started = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // Defaults for everything else, whatever the config grows.
        #[allow(clippy::needless_update)]
        let config = Config {
            interval: Duration::from_secs(3600),
            ..Config::default()
        };
        let mut processor = Processor::new(config, started).expect("a valid config");
        let mut now = started;
        group.throughput(Throughput::Elements(connections));
        group.bench_with_input(
            BenchmarkId::from_parameter(connections),
            &connections,
            |b, _| {
                b.iter(|| {
                    for sample in &mut poll.samples {
                        sample.counters.bytes_sent += 100;
                        sample.counters.bytes_received += 1000;
                        sample.counters.packets_sent += 1;
                        sample.counters.packets_received += 1;
                    }
                    now += Duration::from_millis(1);
                    black_box(processor.ingest(&poll, now));
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
