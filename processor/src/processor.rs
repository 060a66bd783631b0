//! The processor: polls in, poll reports and closed windows out.

use foldhash::HashMap;
use std::time::{Duration, SystemTime};

use receiver::{ConnectionId, Counters, Poll};

use crate::dns::{self, DnsStats, Lookups, NameCache};
use crate::series::fold_series;
use crate::window::{window_end, window_start};
use crate::Attributes;
use crate::{
    Config, DeltaTracker, Error, Flow, FlowKey, FlowStats, PollReport, Resolver, WindowReport,
};

/// What an agent has counted: per open connection, its counters at the
/// last poll, and that poll's time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    /// The last poll's time; windows up to it are exported.
    pub at: SystemTime,
    /// Each open connection's counters at that poll.
    pub counted: Vec<(ConnectionId, Counters)>,
}

/// Folds polls into flows and aligned windows.
///
/// The driver calls [`ingest`](Processor::ingest) with every poll, then
/// [`close_window`](Processor::close_window) with the same time. A poll's
/// deltas go to the window that is open when it arrives, so the driver polls
/// exactly at each window boundary ([`window_end`](Processor::window_end)):
/// then every delta belongs to one window. At shutdown it polls once more and
/// [`flush`](Processor::flush)es the partial window.
#[derive(Debug)]
pub struct Processor {
    interval: Duration,
    resolver: Resolver,
    selected: Option<Vec<String>>,
    max_series: usize,
    tracker: DeltaTracker,
    last_poll: SystemTime,
    window: OpenWindow,
    /// Reused between polls to keep its capacity.
    poll_flows: HashMap<FlowKey, FlowStats>,
    /// DNS queries awaiting their answer.
    lookups: Lookups,
    /// Names for remote addresses, from the lookups' answers.
    names: NameCache,
}

#[derive(Debug)]
struct OpenWindow {
    start: SystemTime,
    end: SystemTime,
    flows: HashMap<FlowKey, FlowStats>,
    dns: HashMap<Attributes, DnsStats>,
}

impl OpenWindow {
    fn holding(t: SystemTime, interval: Duration) -> OpenWindow {
        OpenWindow {
            start: window_start(t, interval),
            end: window_end(t, interval),
            flows: HashMap::default(),
            dns: HashMap::default(),
        }
    }
}

impl Processor {
    /// A processor whose first poll period starts at `started`, when the
    /// receiver began counting. Fails when the configuration is invalid.
    pub fn new(config: Config, started: SystemTime) -> Result<Processor, Error> {
        config.validate()?;
        Ok(Processor {
            interval: config.interval,
            resolver: Resolver::new(&config.mappings),
            selected: config.attributes,
            max_series: config.max_series,
            tracker: DeltaTracker::new(),
            last_poll: started,
            window: OpenWindow::holding(started, config.interval),
            poll_flows: HashMap::default(),
            lookups: Lookups::new(config.dns.max_pending, config.dns.timeout),
            names: NameCache::new(config.dns.max_names),
        })
    }

    /// Like [`Processor::new`], continuing `checkpoint`: its connections'
    /// counters count only beyond what it recorded, and the first window
    /// starts no earlier than the checkpoint's time (the earlier agent
    /// exported the window up to it).
    pub fn resume(
        config: Config,
        started: SystemTime,
        checkpoint: Checkpoint,
    ) -> Result<Processor, Error> {
        let mut processor = Processor::new(config, started)?;
        processor.tracker = DeltaTracker::resuming(checkpoint.counted);
        processor.window.start = processor.window.start.max(checkpoint.at);
        processor.last_poll = processor.last_poll.max(checkpoint.at);
        Ok(processor)
    }

    /// What has been counted so far, at `at` (the time of the last poll,
    /// after its window was closed or flushed): an agent that continues the
    /// same kernel counters resumes from it.
    pub fn checkpoint(&self, at: SystemTime) -> Checkpoint {
        Checkpoint {
            at,
            counted: self.tracker.baselines().collect(),
        }
    }

    /// The window length.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The mappings, to name the flows of poll reports the same way.
    pub fn resolver(&self) -> &Resolver {
        &self.resolver
    }

    /// Adds a source of names for the ends of flows (a container runtime,
    /// the Kubernetes API).
    pub fn add_end_names(&mut self, names: std::sync::Arc<dyn crate::EndNames>) {
        self.resolver.add_end_names(names);
    }

    /// The start of the open window.
    pub fn window_start(&self) -> SystemTime {
        self.window.start
    }

    /// The end of the open window: the driver must poll at this time.
    pub fn window_end(&self) -> SystemTime {
        self.window.end
    }

    /// Connections whose counters are remembered.
    pub fn tracked_connections(&self) -> usize {
        self.tracker.len()
    }

    /// Turns one poll, read at `now`, into the deltas since the previous
    /// poll, adds them to the open window and returns the flows active in
    /// the poll.
    pub fn ingest(&mut self, poll: &Poll, now: SystemTime) -> PollReport {
        let start = self.last_poll;
        // A clock stepped backwards gives an empty period rather than a
        // negative one.
        let end = now.max(start);
        self.last_poll = end;

        // Lookups first: a connection to an address answered in this poll
        // gets its name.
        let mut dns_lookups = 0;
        let window_dns = &mut self.window.dns;
        self.lookups
            .observe(&poll.dns, poll.monotonic_ns, &mut self.names, |lookup| {
                dns_lookups += 1;
                let stats = window_dns.entry(dns::attributes(&lookup)).or_default();
                stats.requests += 1;
                if let Some(took) = lookup.duration {
                    stats.durations.record(took);
                }
            });

        let resets_before = self.tracker.counter_resets();
        let poll_flows = &mut self.poll_flows;
        let ports = &poll.ports;
        let names = &mut self.names;
        let now_ns = poll.monotonic_ns;
        self.tracker
            .track_poll(&poll.samples, &poll.quiet, |sample, delta| {
                let stats = FlowStats::of_sample(sample, &delta.counters, delta.first_sight);
                if stats.has_activity() {
                    let mut key = FlowKey::of(sample, ports);
                    key.destination_domain = names.name(key.netns, key.destination_address, now_ns);
                    poll_flows.entry(key).or_default().merge(&stats);
                }
            });
        self.names.sweep(now_ns);

        let mut flows = Vec::with_capacity(self.poll_flows.len());
        for (key, stats) in self.poll_flows.drain() {
            self.window
                .flows
                .entry(key.clone())
                .or_default()
                .merge(&stats);
            flows.push(Flow { key, stats });
        }
        PollReport {
            start,
            end,
            flows,
            health: poll.health,
            counter_resets: self.tracker.counter_resets() - resets_before,
            dns_lookups,
            dns_health: dns::DnsHealth {
                pending_overflowed: self.lookups.overflowed,
                unmatched_answers: self.lookups.unmatched,
                names_dropped: self.names.dropped,
                pending: self.lookups.pending() as u64,
            },
        }
    }

    /// Closes the open window when `now` has reached its end, returning it
    /// with its aligned start and end; the next window is the one holding
    /// `now`. `None` while the window is still open.
    pub fn close_window(&mut self, now: SystemTime) -> Option<WindowReport> {
        if now < self.window.end {
            return None;
        }
        let end = self.window.end;
        Some(self.replace_window(end, now))
    }

    /// Closes the open window early, at `end` (shutdown): its report carries
    /// `end` as its true end.
    pub fn flush(&mut self, end: SystemTime) -> WindowReport {
        let end = end.max(self.window.start);
        self.replace_window(end, end)
    }

    fn replace_window(&mut self, end: SystemTime, next: SystemTime) -> WindowReport {
        let closed = std::mem::replace(&mut self.window, OpenWindow::holding(next, self.interval));
        let folded = fold_series(
            closed.flows,
            &self.resolver,
            self.selected.as_deref(),
            self.max_series,
        );
        let (dns, overflowed_dns_series) = dns::fold_dns(closed.dns, self.max_series);
        WindowReport {
            start: closed.start,
            end,
            series: folded.series,
            overflowed_series: folded.overflowed,
            dns,
            overflowed_dns_series,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use health::PollHealth;
    use receiver::CloseError;

    use super::*;
    use crate::test_samples::{closed, counters, open};

    // 2024-01-01T12:00:00Z
    const NOON: u64 = 1_704_110_400;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOON + secs)
    }

    fn five_minutes(started: SystemTime) -> Processor {
        let config = Config {
            interval: Duration::from_secs(300),
            ..Config::default()
        };
        Processor::new(config, started).unwrap()
    }

    fn poll(samples: Vec<receiver::ConnectionSample>) -> Poll {
        Poll {
            at: None,
            samples,
            health: PollHealth::default(),
            ports: Default::default(),
            ..Poll::default()
        }
    }

    fn total(series: &[crate::Series]) -> FlowStats {
        let mut sum = FlowStats::default();
        for s in series {
            sum.merge(&s.stats);
        }
        sum
    }

    #[test]
    fn a_flow_to_an_answered_address_has_its_domain_and_the_lookup_its_series() {
        use receiver::{DnsAnswer, DnsContent, DnsMessage, DnsQuestion, MessageKind};
        let message = |kind, at_ms: u64| DnsMessage {
            at_ns: at_ms * 1_000_000,
            kind,
            transport: receiver::Transport::Udp,
            socket: 99,
            client: "10.0.0.1:53000".parse().unwrap(),
            server: "10.0.0.53:53".parse().unwrap(),
            netns: if kind == MessageKind::Query {
                4026531840
            } else {
                0
            },
            pid: 9,
            process_name: "curl".into(),
            content: DnsContent {
                id: 7,
                is_response: kind == MessageKind::Answer,
                question: Some(DnsQuestion {
                    name: "web.example".into(),
                    record_type: "A".into(),
                }),
                response_code: "NOERROR",
                answers: vec![DnsAnswer {
                    address: "10.0.0.2".parse().unwrap(),
                    ttl_secs: 30,
                }],
                cut: false,
            },
        };
        let mut p = five_minutes(at(0));
        let mut first = poll(vec![open(1, counters(100, 0))]);
        first.dns = vec![
            message(MessageKind::Query, 1_000),
            message(MessageKind::Answer, 1_004),
        ];
        first.monotonic_ns = 2_000_000_000;
        let report = p.ingest(&first, at(10));
        assert_eq!(report.dns_lookups, 1);
        assert_eq!(
            report.flows[0].key.destination_domain.as_deref(),
            Some("web.example")
        );
        let window = p.flush(at(20));
        assert_eq!(window.dns.len(), 1);
        let lookups = &window.dns[0];
        assert_eq!(lookups.stats.requests, 1);
        assert_eq!(lookups.stats.durations.count, 1);
        assert!((lookups.stats.durations.sum_secs - 0.004).abs() < 1e-9);
        assert_eq!(
            lookups.attributes.get("network.namespace"),
            Some(&crate::AttributeValue::Int(4026531840))
        );
    }

    #[test]
    fn a_resumed_processor_counts_only_beyond_the_checkpoint() {
        let mut first = five_minutes(at(10));
        first.ingest(&poll(vec![open(1, counters(100, 10))]), at(20));
        let partial = first.flush(at(30));
        assert_eq!(total(&partial.series).bytes_sent, 100);
        let checkpoint = first.checkpoint(at(30));

        let config = Config {
            interval: Duration::from_secs(300),
            ..Config::default()
        };
        let mut second = Processor::resume(config, at(40), checkpoint).unwrap();
        assert_eq!(
            second.window_start(),
            at(30),
            "starts where the first ended"
        );
        let report = second.ingest(&poll(vec![closed(1, counters(150, 10), None)]), at(50));
        assert_eq!(report.start, at(40));
        let stats = report.flows[0].stats;
        assert_eq!(stats.bytes_sent, 50);
        assert_eq!(stats.connections_opened, 0, "opened under the first agent");
        assert_eq!(stats.connections_closed, 1);
    }

    #[test]
    fn rejects_an_invalid_interval() {
        let config = Config {
            interval: Duration::from_millis(10),
            ..Config::default()
        };
        assert!(matches!(
            Processor::new(config, at(0)),
            Err(Error::IntervalTooShort { .. })
        ));
    }

    #[test]
    fn poll_report_carries_deltas_and_its_period() {
        let mut p = five_minutes(at(7));
        let first = p.ingest(&poll(vec![open(1, counters(100, 10))]), at(17));
        assert_eq!((first.start, first.end), (at(7), at(17)));
        assert_eq!(first.duration(), Duration::from_secs(10));
        assert_eq!(first.flows.len(), 1);
        assert_eq!(first.flows[0].stats.bytes_sent, 100);
        assert_eq!(first.flows[0].stats.connections_opened, 1);

        let second = p.ingest(&poll(vec![open(1, counters(150, 10))]), at(27));
        assert_eq!((second.start, second.end), (at(17), at(27)));
        assert_eq!(second.flows[0].stats.bytes_sent, 50);
        assert_eq!(second.flows[0].stats.bytes_received, 0);
        assert_eq!(second.flows[0].stats.connections_opened, 0);
    }

    #[test]
    fn idle_flows_are_left_out_of_the_poll_report() {
        let mut p = five_minutes(at(0));
        p.ingest(&poll(vec![open(1, counters(100, 10))]), at(10));
        let idle = p.ingest(&poll(vec![open(1, counters(100, 10))]), at(20));
        assert!(idle.flows.is_empty());
        assert_eq!(p.tracked_connections(), 1);
    }

    #[test]
    fn connections_of_one_flow_are_summed() {
        let mut p = five_minutes(at(0));
        let mut other_client = open(2, counters(5, 7));
        other_client.local.set_port(40001);
        let report = p.ingest(
            &poll(vec![open(1, counters(100, 10)), other_client]),
            at(10),
        );
        assert_eq!(report.flows.len(), 1);
        let stats = report.flows[0].stats;
        assert_eq!((stats.bytes_sent, stats.bytes_received), (105, 17));
        assert_eq!(stats.connections_opened, 2);
    }

    #[test]
    fn closed_connection_contributes_its_last_bytes_once() {
        let mut p = five_minutes(at(0));
        p.ingest(&poll(vec![open(1, counters(100, 10))]), at(10));
        let last = p.ingest(&poll(vec![closed(1, counters(180, 30), None)]), at(20));
        assert_eq!(last.flows[0].stats.bytes_sent, 80);
        assert_eq!(last.flows[0].stats.bytes_received, 20);
        assert_eq!(last.flows[0].stats.connections_closed, 1);
        assert_eq!(p.tracked_connections(), 0);
        let after = p.ingest(&poll(vec![]), at(30));
        assert!(after.flows.is_empty());
    }

    #[test]
    fn reused_tuple_with_new_id_counts_fully() {
        let mut p = five_minutes(at(0));
        p.ingest(&poll(vec![closed(1, counters(1000, 1000), None)]), at(10));
        let mut again = open(1, counters(40, 4));
        again.id.first_seen_ns += 1;
        let report = p.ingest(&poll(vec![again]), at(20));
        assert_eq!(report.flows[0].stats.bytes_sent, 40);
        assert_eq!(report.flows[0].stats.connections_opened, 1);
    }

    #[test]
    fn counters_going_backwards_are_reported_as_resets() {
        let mut p = five_minutes(at(0));
        p.ingest(&poll(vec![open(1, counters(1000, 1000))]), at(10));
        let report = p.ingest(&poll(vec![open(1, counters(10, 1000))]), at(20));
        assert_eq!(report.flows[0].stats.bytes_sent, 10);
        assert_eq!(report.counter_resets, 1);
    }

    #[test]
    fn window_sums_its_polls_and_closes_at_the_aligned_boundary() {
        // Started at 12:02:30 with 5m windows: the first window is 12:00-12:05.
        let mut p = five_minutes(at(150));
        assert_eq!(p.window_start(), at(0));
        assert_eq!(p.window_end(), at(300));

        p.ingest(&poll(vec![open(1, counters(100, 10))]), at(160));
        assert!(p.close_window(at(160)).is_none());
        let mut refused = closed(2, counters(0, 0), Some(CloseError::Refused));
        refused.established = false;
        refused.remote.set_port(81);
        p.ingest(&poll(vec![open(1, counters(300, 20)), refused]), at(300));
        let window = p.close_window(at(300)).expect("boundary reached");
        assert_eq!((window.start, window.end), (at(0), at(300)));
        assert_eq!(window.series.len(), 2);
        let sum = total(&window.series);
        assert_eq!((sum.bytes_sent, sum.bytes_received), (300, 20));
        assert_eq!(sum.connections_opened, 2);
        assert_eq!(sum.connections_failed.refused, 1);

        // The next window starts at the boundary and holds only new deltas.
        assert_eq!((p.window_start(), p.window_end()), (at(300), at(600)));
        p.ingest(&poll(vec![open(1, counters(350, 20))]), at(310));
        p.ingest(&poll(vec![open(1, counters(350, 20))]), at(600));
        let next = p.close_window(at(600)).unwrap();
        assert_eq!((next.start, next.end), (at(300), at(600)));
        assert_eq!(next.series.len(), 1);
        assert_eq!(next.series[0].stats.bytes_sent, 50);
        assert_eq!(next.series[0].stats.connections_opened, 0);
    }

    #[test]
    fn a_late_boundary_poll_closes_the_window_at_its_aligned_end() {
        let mut p = five_minutes(at(0));
        p.ingest(
            &poll(vec![open(1, counters(1, 1))]),
            at(300) + Duration::from_millis(3),
        );
        let window = p.close_window(at(300) + Duration::from_millis(3)).unwrap();
        assert_eq!(window.end, at(300));
        assert_eq!(p.window_start(), at(300));
    }

    #[test]
    fn a_window_without_activity_closes_empty() {
        let mut p = five_minutes(at(0));
        p.ingest(&poll(vec![]), at(300));
        let window = p.close_window(at(300)).unwrap();
        assert!(window.series.is_empty());
    }

    #[test]
    fn rtt_of_a_window_is_the_mean_over_its_polls() {
        let rtt = |us| receiver::Rtt::from_micros(us, us / 2);
        let mut p = five_minutes(at(0));
        let mut s = open(1, counters(10, 10));
        s.rtt = Some(rtt(100));
        p.ingest(&poll(vec![s.clone()]), at(10));
        s.counters = counters(20, 20);
        s.rtt = Some(rtt(300));
        p.ingest(&poll(vec![s]), at(300));
        let window = p.close_window(at(300)).unwrap();
        let stats = window.series[0].stats;
        assert_eq!(stats.rtt.mean(), Some(Duration::from_micros(200)));
        assert_eq!(stats.rtt.mean_variance(), Some(Duration::from_micros(100)));
    }

    #[test]
    fn flush_closes_the_partial_window_with_its_true_end() {
        let mut p = five_minutes(at(10));
        p.ingest(&poll(vec![open(1, counters(64, 0))]), at(20));
        p.ingest(&poll(vec![closed(1, counters(100, 0), None)]), at(42));
        let window = p.flush(at(42));
        assert_eq!((window.start, window.end), (at(0), at(42)));
        assert_eq!(window.duration(), Duration::from_secs(42));
        assert_eq!(total(&window.series).bytes_sent, 100);
        assert_eq!(total(&window.series).connections_closed, 1);
    }

    #[test]
    fn a_clock_stepping_backwards_gives_an_empty_period() {
        let mut p = five_minutes(at(100));
        let report = p.ingest(&poll(vec![open(1, counters(1, 0))]), at(50));
        assert_eq!(report.start, at(100));
        assert_eq!(report.end, at(100));
        assert_eq!(report.duration(), Duration::ZERO);
    }

    #[test]
    fn polls_missed_across_windows_go_to_the_open_window() {
        // The machine slept through 12:05 and 12:10.
        let mut p = five_minutes(at(0));
        p.ingest(&poll(vec![open(1, counters(5, 5))]), at(700));
        let window = p.close_window(at(700)).unwrap();
        assert_eq!((window.start, window.end), (at(0), at(300)));
        assert_eq!(total(&window.series).bytes_sent, 5);
        assert_eq!((p.window_start(), p.window_end()), (at(600), at(900)));
    }
}
