//! Property: whatever the connections do (open, move bytes, close, reuse a
//! 5-tuple or a process id) and wherever the window boundaries and polls
//! fall, the deltas the processor emits add up to exactly what moved, in
//! the polls and in the windows, and no counter ever goes backwards.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use processor::{Config, FlowStats, Processor, WindowReport};
use proptest::prelude::*;
use receiver::{
    ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, Poll, ProcessInfo,
    Transport,
};

/// What happens to one connection between two polls.
#[derive(Debug, Clone)]
enum Step {
    /// Bytes move (possibly none).
    Move { sent: u32, received: u32 },
    /// Bytes move, then the connection closes; the 5-tuple is reused by a
    /// new connection later when `reuse` is set.
    Close {
        sent: u32,
        received: u32,
        reuse: bool,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u32..5000, 0u32..5000).prop_map(|(sent, received)| Step::Move { sent, received }),
        1 => (0u32..5000, 0u32..5000, any::<bool>())
            .prop_map(|(sent, received, reuse)| Step::Close { sent, received, reuse }),
    ]
}

/// One scenario: connections (each a list of steps, one per poll from
/// the poll it opens at), the gaps between polls, the window length and the
/// series cap.
#[derive(Debug, Clone)]
struct Scenario {
    connections: Vec<(usize, Vec<Step>)>,
    poll_gaps_ms: Vec<u64>,
    interval_s: u64,
    max_series: usize,
    tcp: Vec<bool>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (2usize..30).prop_flat_map(|polls| {
        (
            prop::collection::vec((0..polls, prop::collection::vec(step(), 1..polls)), 1..12),
            prop::collection::vec(100u64..20_000, polls),
            1u64..30,
            1usize..6,
            prop::collection::vec(any::<bool>(), 12),
        )
            .prop_map(|(connections, poll_gaps_ms, interval_s, max_series, tcp)| {
                Scenario {
                    connections,
                    poll_gaps_ms,
                    interval_s,
                    max_series,
                    tcp,
                }
            })
    })
}

/// A connection's state in the simulated kernel.
struct Live {
    id: ConnectionId,
    tuple: usize,
    counters: Counters,
    closed: bool,
}

fn sample(live: &Live, tcp: bool) -> ConnectionSample {
    // Reused tuples share addresses, ports and the pid with their
    // predecessor: only the id tells them apart.
    let port = 40000 + live.tuple as u16;
    ConnectionSample {
        id: live.id,
        netns: 1,
        transport: if tcp { Transport::Tcp } else { Transport::Udp },
        local: format!("10.0.0.1:{port}").parse().unwrap(),
        remote: "10.0.0.2:443".parse().unwrap(),
        direction: Direction::Outgoing,
        process: Arc::new(ProcessInfo {
            pid: 100 + live.tuple as u32,
            name: "app".into(),
            container_id: None,
            pod_uid: None,
        }),
        counters: live.counters,
        rtt: None,
        seen_opening: true,
        established: true,
        state: if live.closed {
            ConnectionState::Closed { error: None }
        } else {
            ConnectionState::Open
        },
        translation: Default::default(),
    }
}

fn bytes(stats: &FlowStats) -> u64 {
    stats.bytes_sent + stats.bytes_received
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_byte_is_emitted_exactly_once(s in scenario()) {
        let interval = Duration::from_secs(s.interval_s);
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(123);
        let config = Config { interval, max_series: s.max_series, ..Config::default() };
        let mut processor = Processor::new(config, start).unwrap();

        let mut live: Vec<Live> = Vec::new();
        let mut pending: Vec<(usize, usize, Vec<Step>)> = s
            .connections
            .iter()
            .enumerate()
            .map(|(tuple, (opens_at, steps))| (*opens_at, tuple, steps.clone()))
            .collect();
        let mut steps_of: Vec<std::collections::VecDeque<Step>> = Vec::new();
        let mut true_total = 0u64;
        let mut polled_total = 0u64;
        let mut windows: Vec<WindowReport> = Vec::new();
        let mut now = start;
        let mut next_id = 1u64;

        for (poll_index, gap) in s.poll_gaps_ms.iter().enumerate() {
            now += Duration::from_millis(*gap);
            // Connections that open before this poll.
            for (opens_at, tuple, steps) in pending.iter_mut() {
                if *opens_at == poll_index && !steps.is_empty() {
                    live.push(Live {
                        id: ConnectionId { socket_cookie: next_id, peer: None, first_seen_ns: next_id },
                        tuple: *tuple,
                        counters: Counters::default(),
                        closed: false,
                    });
                    next_id += 1;
                    steps_of.push(std::mem::take(steps).into());
                }
            }
            // Each live connection takes its next step.
            let mut samples = Vec::new();
            let mut reopen = Vec::new();
            for (conn, steps) in live.iter_mut().zip(steps_of.iter_mut()) {
                if conn.closed {
                    continue;
                }
                let Some(step) = steps.pop_front() else {
                    samples.push(sample(conn, s.tcp[conn.tuple % s.tcp.len()]));
                    continue;
                };
                let (sent, received, close, reuse) = match step {
                    Step::Move { sent, received } => (sent, received, false, false),
                    Step::Close { sent, received, reuse } => (sent, received, true, reuse),
                };
                conn.counters.bytes_sent += u64::from(sent);
                conn.counters.bytes_received += u64::from(received);
                conn.counters.packets_sent += u64::from(sent.div_ceil(1000));
                true_total += u64::from(sent) + u64::from(received);
                conn.closed = close;
                samples.push(sample(conn, s.tcp[conn.tuple % s.tcp.len()]));
                if close && reuse && !steps.is_empty() {
                    reopen.push((conn.tuple, std::mem::take(steps)));
                }
            }
            // A closed connection is reported once, then gone; its tuple
            // may come back as a new connection at the next poll.
            for (tuple, steps) in reopen {
                pending.push((poll_index + 1, tuple, steps.into()));
            }
            let poll = Poll { at: Some(now), samples, ..Poll::default() };
            let report = processor.ingest(&poll, now);
            prop_assert_eq!(report.counter_resets, 0, "a counter went backwards");
            for flow in &report.flows {
                polled_total += bytes(&flow.stats);
            }
            if let Some(window) = processor.close_window(now) {
                windows.push(window);
            }
        }
        windows.push(processor.flush(now));

        prop_assert_eq!(polled_total, true_total, "polls");
        let mut windowed_total = 0u64;
        let mut previous_end = None;
        for window in &windows {
            let since_epoch = window.start.duration_since(UNIX_EPOCH).unwrap();
            prop_assert_eq!(since_epoch.as_nanos() % interval.as_nanos(), 0, "aligned start");
            prop_assert!(window.end <= window.start + interval);
            if let Some(end) = previous_end {
                prop_assert!(window.start >= end, "windows never overlap");
            }
            previous_end = Some(window.end);
            prop_assert!(window.series.len() <= s.max_series + 1);
            for series in &window.series {
                windowed_total += bytes(&series.stats);
            }
        }
        prop_assert_eq!(windowed_total, true_total, "windows");
    }
}
