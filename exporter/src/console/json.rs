//! JSON lines: one object per flow per poll and per window, and one health
//! object per poll. Integration tests and scripts parse this shape; keep it
//! stable.
//!
//! ```text
//! {"record":"poll","start":"2024-01-01T12:00:00.000Z","end":"2024-01-01T12:00:10.000Z",
//!  "attributes":{"destination.address":"127.0.0.1","destination.port":80,
//!   "flow.direction":"outgoing","network.namespace":4026531840,"network.transport":"tcp",
//!   "network.type":"ipv4","source.address":"127.0.0.1","source.process.name":"curl",
//!   "source.process.pid":123},
//!  "bytes_sent":0,"bytes_received":0,"packets_sent":0,"packets_received":0,"retransmits":0,
//!  "connections_opened":0,"connections_closed":0,"connections_failed":{"refused":1},
//!  "rtt_us":null,"rtt_variance_us":null,"bandwidth_bps":0.0}
//! {"record":"health","end":"2024-01-01T12:00:10.000Z","connections_dropped":0,
//!  "untracked_events":0,"close_events_deferred":0,"udp_releases_lost":0,"tcp_closes_missed":0,
//!  "insert_failures":0,"cgroups_lost":0,"container_runtime_errors":0,"runs_missed":0,"namespaces_unreachable":0,"nat_resyncs":0,"nat_entries_dropped":0,"kubernetes_relists":0,
//!  "kubernetes_objects_malformed":0,"kubernetes_api_errors":0,"dns_lost":0,"dns_malformed":0,"tracked_connections":3,
//!  "map_capacity":65536,"features":{"tcp connections":"on","tcp live bytes":"on",...,"nat":"on"}}
//! {"record":"dns","start":"2024-01-01T12:00:00.000Z","end":"2024-01-01T12:05:00.000Z",
//!  "attributes":{"destination.address":"127.0.0.53","dns.question.name":"example.com",
//!   "dns.question.type":"A","dns.response.code":"NOERROR","network.transport":"udp",
//!   "source.address":"127.0.0.1","source.process.name":"dig"},
//!  "requests":3,"answered":3,"duration_mean_us":412,"duration_max_us":530}
//! {"record":"window_summary","start":"2024-01-01T12:00:00.000Z","end":"2024-01-01T12:05:00.000Z",
//!  "series":1,"overflowed_series":0}
//! ```
//! (each object on one line; attributes sorted by name; a window's series
//! carry only the selected attributes and what the mappings add). A collapsed port or a missing container id is
//! left out of `attributes`; `connections_failed` lists only nonzero
//! reasons; RTTs are whole microseconds, `null` without an estimate;
//! `bandwidth_bps` is bytes both ways × 8 over the record's period.

use std::borrow::Cow;
use std::io::Write;
use std::time::{Duration, SystemTime};

use health::PollHealth;
use processor::{
    AttributeValue, Attributes, ConnectionFailures, FlowStats, PollReport, WindowReport,
};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::units::timestamp;
use crate::{Error, Exporter};

/// Writes reports as JSON lines to `W`, flushing after each report.
#[derive(Debug)]
pub struct JsonLines<W> {
    out: W,
    /// One report's lines, written at once.
    buffer: Vec<u8>,
}

impl<W: Write> JsonLines<W> {
    /// Writes to `out`.
    pub fn new(out: W) -> JsonLines<W> {
        JsonLines {
            out,
            buffer: Vec::with_capacity(4096),
        }
    }

    /// The writer back, for tests.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn flows(
        &mut self,
        record: &'static str,
        start: SystemTime,
        end: SystemTime,
        mut flows: Vec<(Cow<'_, Attributes>, &FlowStats)>,
    ) -> Result<(), Error> {
        let period = end.duration_since(start).unwrap_or_default();
        let (start, end) = (timestamp(start), timestamp(end));
        // Busiest first, so that a reader that stops early sees what matters.
        flows.sort_by_key(|(_, stats)| std::cmp::Reverse(stats.bytes()));
        for (attributes, stats) in &flows {
            let line = FlowRecord::new(record, &start, &end, period, attributes, stats);
            self.line(&line)?;
        }
        Ok(())
    }

    fn line(&mut self, record: &impl Serialize) -> Result<(), Error> {
        serde_json::to_writer(&mut self.buffer, record).map_err(Error::Json)?;
        self.buffer.push(b'\n');
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), Error> {
        let result = self
            .out
            .write_all(&self.buffer)
            .and_then(|()| self.out.flush());
        self.buffer.clear();
        result.map_err(Error::Console)
    }
}

impl<W: Write> Exporter for JsonLines<W> {
    fn export_poll(&mut self, report: &PollReport) -> Result<(), Error> {
        let flows = report
            .flows
            .iter()
            .map(|flow| (Cow::Owned(flow.key.attributes()), &flow.stats))
            .collect();
        self.flows("poll", report.start, report.end, flows)?;
        self.line(&HealthRecord::new(report.end, &report.health))?;
        self.write_out()
    }

    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error> {
        let series = report
            .series
            .iter()
            .map(|s| (Cow::Borrowed(&s.attributes), &s.stats))
            .collect();
        self.flows("window", report.start, report.end, series)?;
        let (start, end) = (timestamp(report.start), timestamp(report.end));
        for dns in &report.dns {
            self.line(&super::dns::DnsRecord::new(&start, &end, dns))?;
        }
        self.line(&WindowSummary {
            record: "window_summary",
            start: timestamp(report.start),
            end: timestamp(report.end),
            series: report.series.len(),
            overflowed_series: report.overflowed_series,
        })?;
        self.write_out()
    }
}

/// How many series a window had, and how many went into the overflow
/// series.
#[derive(Serialize)]
struct WindowSummary {
    record: &'static str,
    start: String,
    end: String,
    series: usize,
    overflowed_series: u64,
}

#[derive(Serialize)]
struct FlowRecord<'a> {
    record: &'static str,
    start: &'a str,
    end: &'a str,
    attributes: AttributeMap<'a>,
    bytes_sent: u64,
    bytes_received: u64,
    packets_sent: u64,
    packets_received: u64,
    retransmits: u64,
    connections_opened: u64,
    connections_closed: u64,
    connections_failed: Failures<'a>,
    rtt_us: Option<u64>,
    rtt_variance_us: Option<u64>,
    bandwidth_bps: f64,
}

impl<'a> FlowRecord<'a> {
    fn new(
        record: &'static str,
        start: &'a str,
        end: &'a str,
        period: Duration,
        attributes: &'a Attributes,
        stats: &'a FlowStats,
    ) -> FlowRecord<'a> {
        FlowRecord {
            record,
            start,
            end,
            attributes: AttributeMap(attributes),
            bytes_sent: stats.bytes_sent,
            bytes_received: stats.bytes_received,
            packets_sent: stats.packets_sent,
            packets_received: stats.packets_received,
            retransmits: stats.retransmits,
            connections_opened: stats.connections_opened,
            connections_closed: stats.connections_closed,
            connections_failed: Failures(&stats.connections_failed),
            rtt_us: stats.rtt.mean().map(micros),
            rtt_variance_us: stats.rtt.mean_variance().map(micros),
            bandwidth_bps: stats.bandwidth_bps(period),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `{"network.transport":"tcp","source.port":80,...}`: numbers stay numbers.
pub(super) struct AttributeMap<'a>(pub(super) &'a Attributes);

impl Serialize for AttributeMap<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0.iter() {
            match value {
                AttributeValue::String(s) => map.serialize_entry(name, s.as_ref())?,
                AttributeValue::Int(n) => map.serialize_entry(name, n)?,
                AttributeValue::Bool(b) => map.serialize_entry(name, b)?,
            }
        }
        map.end()
    }
}

/// `{"refused":1,"reset":2}`: only the reasons that happened.
struct Failures<'a>(&'a ConnectionFailures);

impl Serialize for Failures<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (reason, count) in self.0.nonzero() {
            map.serialize_entry(reason, &count)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
struct HealthRecord {
    record: &'static str,
    end: String,
    connections_dropped: u64,
    untracked_events: u64,
    close_events_deferred: u64,
    udp_releases_lost: u64,
    tcp_closes_missed: u64,
    insert_failures: u64,
    cgroups_lost: u64,
    container_runtime_errors: u64,
    runs_missed: u64,
    namespaces_unreachable: u64,
    nat_resyncs: u64,
    /// Translated conntrack entries not held: the table was full.
    nat_entries_dropped: u64,
    kubernetes_relists: u64,
    kubernetes_objects_malformed: u64,
    kubernetes_api_errors: u64,
    /// DNS messages lost (kernel ring buffer or inbox full).
    dns_lost: u64,
    /// Packets of the DNS port that were no readable DNS message.
    dns_malformed: u64,
    tracked_connections: u64,
    map_capacity: u64,
    features: FeatureLevels,
}

/// `{"tcp connections":"on","udp":"fallback",...}`
struct FeatureLevels(health::Levels);

impl Serialize for FeatureLevels {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (feature, level) in self.0.iter() {
            let level = match level {
                health::Level::On => "on",
                health::Level::Fallback => "fallback",
                health::Level::Off => "off",
            };
            map.serialize_entry(feature.name(), level)?;
        }
        map.end()
    }
}

impl HealthRecord {
    fn new(end: SystemTime, health: &PollHealth) -> HealthRecord {
        HealthRecord {
            record: "health",
            end: timestamp(end),
            connections_dropped: health.connections_dropped,
            untracked_events: health.untracked_events,
            close_events_deferred: health.close_events_deferred,
            udp_releases_lost: health.udp_releases_lost,
            tcp_closes_missed: health.tcp_closes_missed,
            insert_failures: health.insert_failures,
            cgroups_lost: health.cgroups_lost,
            container_runtime_errors: health.container_runtime_errors,
            runs_missed: health.runs_missed,
            namespaces_unreachable: health.namespaces_unreachable,
            nat_resyncs: health.nat_resyncs,
            nat_entries_dropped: health.nat_entries_dropped,
            kubernetes_relists: health.kubernetes_relists,
            kubernetes_objects_malformed: health.kubernetes_objects_malformed,
            kubernetes_api_errors: health.kubernetes_api_errors,
            dns_lost: health.dns_lost + health.dns_overflowed,
            dns_malformed: health.dns_malformed,
            tracked_connections: health.tracked_connections,
            map_capacity: health.map_capacity,
            features: FeatureLevels(health.features),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::UNIX_EPOCH;

    use processor::{Flow, FlowKey, FlowStats, NetworkType, RttSummary};
    use receiver::{Direction, ProcessInfo, Rtt, Transport};
    use serde_json::{json, Value};

    use super::*;

    // 2024-01-01T12:00:00Z
    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_704_110_400 + secs)
    }

    fn curl_to_port_80() -> FlowKey {
        FlowKey {
            transport: Transport::Tcp,
            network_type: NetworkType::Ipv4,
            netns: 4026531840,
            direction: Direction::Outgoing,
            source_address: "127.0.0.1".parse().unwrap(),
            source_port: None,
            source_process: Arc::new(ProcessInfo {
                pid: 123,
                name: "curl".into(),
                container_id: None,
                pod_uid: None,
            }),
            destination_address: "127.0.0.1".parse().unwrap(),
            destination_port: Some(80),
            translation: Default::default(),
            destination_domain: None,
        }
    }

    fn lines(out: Vec<u8>) -> Vec<Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn poll_writes_one_object_per_flow_then_health() {
        let stats = FlowStats {
            bytes_sent: 1000,
            bytes_received: 250,
            packets_sent: 3,
            packets_received: 2,
            connections_opened: 1,
            ..FlowStats::default()
        };
        let report = PollReport {
            start: at(0),
            end: at(10),
            flows: vec![Flow {
                key: curl_to_port_80(),
                stats,
            }],
            health: PollHealth {
                connections_dropped: 2,
                untracked_events: 5,
                close_events_deferred: 1,
                tracked_connections: 7,
                map_capacity: 65536,
                ..PollHealth::default()
            },
            counter_resets: 0,
            dns_lookups: 0,
            dns_health: Default::default(),
        };
        let mut json = JsonLines::new(Vec::new());
        json.export_poll(&report).unwrap();
        let out = json.into_inner();
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"record":"poll","start":"2024-01-01T12:00:00.000Z","end":"2024-01-01T12:00:10.000Z","attributes":{"destination.address":"127.0.0.1","destination.port":80,"flow.direction":"outgoing","network.namespace":4026531840,"network.transport":"tcp","network.type":"ipv4","source.address":"127.0.0.1","source.process.name":"curl","source.process.pid":123},"bytes_sent":1000,"bytes_received":250,"packets_sent":3,"packets_received":2,"retransmits":0,"connections_opened":1,"connections_closed":0,"connections_failed":{},"rtt_us":null,"rtt_variance_us":null,"bandwidth_bps":1000.0}"#
        );
        let records = lines(out);
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[1],
            json!({"record":"health","end":"2024-01-01T12:00:10.000Z","connections_dropped":2,
                   "untracked_events":5,"close_events_deferred":1,"udp_releases_lost":0,"tcp_closes_missed":0,
                   "insert_failures":0,"cgroups_lost":0,"container_runtime_errors":0,"runs_missed":0,"namespaces_unreachable":0,"nat_resyncs":0,"nat_entries_dropped":0,"kubernetes_relists":0,"kubernetes_objects_malformed":0,"kubernetes_api_errors":0,"dns_lost":0,"dns_malformed":0,"tracked_connections":7,"map_capacity":65536,
                   "features":{"tcp connections":"off","tcp live bytes":"off",
                               "existing connections":"off","socket owners":"off",
                               "retransmits":"off","udp":"off","udp peers":"off",
                               "udp release":"off","containers":"off","nat":"off","dns":"off"}})
        );
    }

    #[test]
    fn window_records_carry_every_attribute_failures_and_rtt() {
        let mut key = curl_to_port_80();
        key.transport = Transport::Udp;
        key.network_type = NetworkType::Ipv6;
        key.direction = Direction::Unknown;
        key.source_address = "::1".parse().unwrap();
        key.source_port = Some(5353);
        key.destination_address = "::1".parse().unwrap();
        key.destination_port = Some(53);
        key.source_process = Arc::new(ProcessInfo {
            pid: 9,
            name: "resolver".into(),
            container_id: Some("abc".into()),
            pod_uid: None,
        });
        let mut rtt = RttSummary::default();
        rtt.record(Rtt::from_micros(150, 40));
        rtt.record(Rtt::from_micros(250, 60));
        let mut stats = FlowStats {
            bytes_sent: 300,
            rtt,
            ..FlowStats::default()
        };
        stats.connections_failed.refused = 2;
        stats.connections_failed.reset = 1;
        let report = WindowReport {
            start: at(0),
            end: at(300),
            series: vec![processor::Series {
                attributes: key.attributes(),
                stats,
            }],
            overflowed_series: 0,
            dns: Vec::new(),
            overflowed_dns_series: 0,
        };
        let mut json = JsonLines::new(Vec::new());
        json.export_window(&report).unwrap();
        let records = lines(json.into_inner());
        assert_eq!(records.len(), 2, "no health record for a window");
        assert_eq!(
            records[1],
            json!({"record":"window_summary","start":"2024-01-01T12:00:00.000Z",
                "end":"2024-01-01T12:05:00.000Z","series":1,"overflowed_series":0})
        );
        assert_eq!(
            records[0],
            json!({"record":"window","start":"2024-01-01T12:00:00.000Z","end":"2024-01-01T12:05:00.000Z",
                "attributes":{"network.transport":"udp","network.type":"ipv6","network.namespace":4026531840u32,
                    "flow.direction":"unknown","source.address":"::1","source.port":5353,
                    "source.process.pid":9,"source.process.name":"resolver","source.container.id":"abc",
                    "destination.address":"::1","destination.port":53},
                "bytes_sent":300,"bytes_received":0,"packets_sent":0,"packets_received":0,"retransmits":0,
                "connections_opened":0,"connections_closed":0,"connections_failed":{"refused":2,"reset":1},
                "rtt_us":200,"rtt_variance_us":50,"bandwidth_bps":8.0})
        );
    }

    #[test]
    fn flows_are_written_busiest_first() {
        let flow = |port, bytes| Flow {
            key: FlowKey {
                destination_port: Some(port),
                ..curl_to_port_80()
            },
            stats: FlowStats {
                bytes_received: bytes,
                ..FlowStats::default()
            },
        };
        let report = WindowReport {
            start: at(0),
            end: at(300),
            series: [flow(1, 10), flow(2, 1000), flow(3, 100)]
                .into_iter()
                .map(processor::Series::from)
                .collect(),
            overflowed_series: 0,
            dns: Vec::new(),
            overflowed_dns_series: 0,
        };
        let mut json = JsonLines::new(Vec::new());
        json.export_window(&report).unwrap();
        let ports: Vec<_> = lines(json.into_inner())
            .iter()
            .filter(|r| r["record"] == "window")
            .map(|r| r["attributes"]["destination.port"].as_u64().unwrap())
            .collect();
        assert_eq!(ports, [2, 3, 1]);
    }

    #[test]
    fn empty_period_has_zero_bandwidth() {
        let report = PollReport {
            start: at(10),
            end: at(10),
            flows: vec![Flow {
                key: curl_to_port_80(),
                stats: FlowStats {
                    bytes_sent: 5,
                    ..FlowStats::default()
                },
            }],
            health: PollHealth::default(),
            counter_resets: 0,
            dns_lookups: 0,
            dns_health: Default::default(),
        };
        let mut json = JsonLines::new(Vec::new());
        json.export_poll(&report).unwrap();
        let records = lines(json.into_inner());
        assert_eq!(records[0]["bandwidth_bps"], json!(0.0));
    }
}
