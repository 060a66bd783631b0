//! A typed view of the JSON lines `flowtel run --format json` prints, and
//! sums over them.
//!
//! Every poll prints one `"record":"poll"` object per flow with activity in
//! that poll, carrying that poll's *deltas*; so a flow's total is the sum of
//! its poll records. At a window's close come `"record":"window"` objects
//! (the window's totals), and `"record":"health"` objects report the agent
//! itself.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The agent's report on itself, printed once per poll. Counters are
/// totals since the agent started.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Health {
    /// Connections the kernel side could not track: the map was full.
    pub connections_dropped: u64,
    /// Events on sockets left out of the full map (their bytes are lost).
    pub untracked_events: u64,
    /// Connections in the map at the poll.
    pub tracked_connections: u64,
    /// The map's capacity.
    pub map_capacity: u64,
    /// Network namespaces with TCP connections the poll could not enter.
    pub namespaces_unreachable: u64,
    /// UDP socket releases lost to a full ring buffer.
    pub udp_releases_lost: u64,
    /// Established TCP connections whose skipped close a walk found.
    #[serde(default)]
    pub tcp_closes_missed: u64,
    /// New entries the kernel refused though the map had room.
    pub insert_failures: u64,
    /// Runs of the tracing programs the kernel skipped.
    pub runs_missed: u64,
    /// Container cgroups the agent could not keep.
    pub cgroups_lost: u64,
    /// Failed requests to the container runtime's API.
    pub container_runtime_errors: u64,
    /// DNS messages lost to a full ring buffer or an overflowing queue.
    #[serde(default)]
    pub dns_lost: u64,
    /// DNS messages that did not parse.
    #[serde(default)]
    pub dns_malformed: u64,
    /// Each feature's level: "on", "fallback" or "off".
    pub features: std::collections::BTreeMap<String, String>,
}

/// One line of the agent's JSON output.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// One flow's deltas over one poll.
    Poll(Flow),
    /// One flow's totals over one window.
    Window(Flow),
    /// The agent's own health, kept as it came.
    Health(Value),
    /// A record kind these helpers do not know, kept as it came.
    Other(Value),
}

impl Record {
    /// Parses one output line. A flow record whose fields do not have the
    /// documented types is an error: the output is a contract.
    pub fn parse(line: &str) -> Result<Record, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        let kind = value
            .get("record")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no \"record\" field: {line}"))?;
        let flow = |value: Value| {
            serde_json::from_value::<Flow>(value)
                .map_err(|e| format!("not a flow record ({e}): {line}"))
        };
        match kind {
            "poll" => flow(value).map(Record::Poll),
            "window" => flow(value).map(Record::Window),
            "health" => Ok(Record::Health(value)),
            _ => Ok(Record::Other(value)),
        }
    }

    /// The health figures of a health record.
    pub fn as_health(&self) -> Option<Health> {
        match self {
            Record::Health(value) => serde_json::from_value(value.clone()).ok(),
            _ => None,
        }
    }

    /// The flow of a poll or window record.
    pub fn flow(&self) -> Option<&Flow> {
        match self {
            Record::Poll(flow) | Record::Window(flow) => Some(flow),
            _ => None,
        }
    }

    /// One line for a person reading a test failure: the kind, the
    /// attributes and the non-zero counters.
    pub fn summary(&self) -> String {
        let (kind, flow) = match self {
            Record::Poll(flow) => ("poll", flow),
            Record::Window(flow) => ("window", flow),
            Record::Health(value) | Record::Other(value) => return value.to_string(),
        };
        let attributes = serde_json::to_string(&flow.attributes).unwrap_or_default();
        let counters: Vec<String> = [
            ("bytes_sent", flow.bytes_sent),
            ("bytes_received", flow.bytes_received),
            ("packets_sent", flow.packets_sent),
            ("packets_received", flow.packets_received),
            ("retransmits", flow.retransmits),
            ("opened", flow.connections_opened),
            ("closed", flow.connections_closed),
        ]
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(name, n)| format!("{name}={n}"))
        .chain(
            flow.connections_failed
                .iter()
                .map(|(reason, n)| format!("failed.{reason}={n}")),
        )
        .collect();
        format!(
            "{kind} {}..{} {attributes} {}",
            flow.start,
            flow.end,
            counters.join(" ")
        )
    }

    /// The flow of a poll record.
    pub fn as_poll(&self) -> Option<&Flow> {
        match self {
            Record::Poll(flow) => Some(flow),
            _ => None,
        }
    }
}

/// The counters of one flow over one poll (or one window).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Flow {
    /// Start of the period, RFC 3339.
    pub start: String,
    /// End of the period, RFC 3339.
    pub end: String,
    /// What identifies the flow.
    pub attributes: Attributes,
    /// Bytes from source (the local end) to destination.
    pub bytes_sent: u64,
    /// Bytes from destination to source.
    pub bytes_received: u64,
    /// TCP segments or UDP datagrams sent.
    pub packets_sent: u64,
    /// TCP segments or UDP datagrams received.
    pub packets_received: u64,
    /// TCP segments the source retransmitted.
    pub retransmits: u64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Failed connection attempts by reason (`refused`, `reset`, `timeout`).
    #[serde(default)]
    pub connections_failed: BTreeMap<String, u64>,
    /// Smoothed round-trip time, microseconds; TCP only.
    pub rtt_us: Option<f64>,
    /// Round-trip time variance (jitter), microseconds; TCP only.
    pub rtt_variance_us: Option<f64>,
    /// Bits per second over the period, both directions (bytes × 8 / seconds).
    pub bandwidth_bps: f64,
}

/// The attributes of a flow. The source is the local end. TCP outgoing flows
/// have no `source.port` (the client's ephemeral port is collapsed), TCP
/// incoming flows no `destination.port`; UDP flows keep both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attributes {
    /// `tcp` or `udp`.
    #[serde(rename = "network.transport", skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "network.type", skip_serializing_if = "Option::is_none")]
    pub network_type: Option<String>,
    /// Inode of the network namespace the connection lives in.
    #[serde(rename = "network.namespace", skip_serializing_if = "Option::is_none")]
    pub namespace: Option<u64>,
    /// `outgoing`, `incoming` or `unknown`.
    #[serde(rename = "flow.direction", skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Local address.
    #[serde(rename = "source.address", skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// Local port.
    #[serde(rename = "source.port", skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    /// Owning process id.
    #[serde(rename = "source.process.pid", skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Owning process name.
    #[serde(
        rename = "source.process.name",
        skip_serializing_if = "Option::is_none"
    )]
    pub process_name: Option<String>,
    /// Container of the owning process.
    #[serde(
        rename = "source.container.id",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// Remote address.
    #[serde(
        rename = "destination.address",
        skip_serializing_if = "Option::is_none"
    )]
    pub destination_address: Option<String>,
    /// Remote port.
    #[serde(rename = "destination.port", skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    /// Any other attribute.
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

/// Which flows a test looks at. Every condition set must hold; an unset one
/// matches anything.
///
/// ```
/// use integration::record::FlowFilter;
/// let server = FlowFilter::this_process().tcp().incoming().source_port(8080);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FlowFilter {
    transport: Option<&'static str>,
    network_type: Option<&'static str>,
    direction: Option<&'static str>,
    pid: Option<u32>,
    namespace: Option<u64>,
    source_address: Option<IpAddr>,
    source_port: Option<u16>,
    destination_address: Option<IpAddr>,
    destination_port: Option<u16>,
}

impl FlowFilter {
    /// Matches every flow.
    pub fn any() -> FlowFilter {
        FlowFilter::default()
    }

    /// Matches flows owned by this (the test's) process.
    pub fn this_process() -> FlowFilter {
        FlowFilter::any().pid(std::process::id())
    }

    /// Only TCP.
    pub fn tcp(mut self) -> Self {
        self.transport = Some("tcp");
        self
    }

    /// Only UDP.
    pub fn udp(mut self) -> Self {
        self.transport = Some("udp");
        self
    }

    /// Only IPv4.
    pub fn ipv4(mut self) -> Self {
        self.network_type = Some("ipv4");
        self
    }

    /// Only IPv6.
    pub fn ipv6(mut self) -> Self {
        self.network_type = Some("ipv6");
        self
    }

    /// Only flows the local end opened (TCP clients).
    pub fn outgoing(mut self) -> Self {
        self.direction = Some("outgoing");
        self
    }

    /// Only flows the remote end opened (TCP servers).
    pub fn incoming(mut self) -> Self {
        self.direction = Some("incoming");
        self
    }

    /// Only flows owned by process `pid`.
    pub fn pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Only flows in the network namespace with this inode.
    pub fn namespace(mut self, inode: u64) -> Self {
        self.namespace = Some(inode);
        self
    }

    /// Only flows whose local address is `address`.
    pub fn source_address(mut self, address: IpAddr) -> Self {
        self.source_address = Some(address);
        self
    }

    /// Only flows whose local port is `port`.
    pub fn source_port(mut self, port: u16) -> Self {
        self.source_port = Some(port);
        self
    }

    /// Only flows whose remote address is `address`.
    pub fn destination_address(mut self, address: IpAddr) -> Self {
        self.destination_address = Some(address);
        self
    }

    /// Only flows whose remote port is `port`.
    pub fn destination_port(mut self, port: u16) -> Self {
        self.destination_port = Some(port);
        self
    }

    /// Whether a flow with these attributes passes.
    pub fn matches(&self, a: &Attributes) -> bool {
        fn same<T: PartialEq>(wanted: Option<T>, actual: Option<T>) -> bool {
            wanted.is_none() || wanted == actual
        }
        fn same_address(wanted: Option<IpAddr>, actual: Option<&String>) -> bool {
            wanted.is_none() || wanted == actual.and_then(|s| s.parse().ok())
        }
        same(self.transport, a.transport.as_deref())
            && same(self.network_type, a.network_type.as_deref())
            && same(self.direction, a.direction.as_deref())
            && same(self.pid, a.pid)
            && same(self.namespace, a.namespace)
            && same_address(self.source_address, a.source_address.as_ref())
            && same(self.source_port, a.source_port)
            && same_address(self.destination_address, a.destination_address.as_ref())
            && same(self.destination_port, a.destination_port)
    }
}

/// Counters summed over poll records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sum of `bytes_sent`.
    pub bytes_sent: u64,
    /// Sum of `bytes_received`.
    pub bytes_received: u64,
    /// Sum of `packets_sent`.
    pub packets_sent: u64,
    /// Sum of `packets_received`.
    pub packets_received: u64,
    /// Sum of `retransmits`.
    pub retransmits: u64,
    /// Sum of `connections_opened`.
    pub connections_opened: u64,
    /// Sum of `connections_closed`.
    pub connections_closed: u64,
    /// Sums of `connections_failed`, by reason.
    pub connections_failed: BTreeMap<String, u64>,
    /// How many poll records were added.
    pub records: usize,
}

impl Totals {
    /// Adds one flow record's counters.
    pub fn add(&mut self, flow: &Flow) {
        self.bytes_sent += flow.bytes_sent;
        self.bytes_received += flow.bytes_received;
        self.packets_sent += flow.packets_sent;
        self.packets_received += flow.packets_received;
        self.retransmits += flow.retransmits;
        self.connections_opened += flow.connections_opened;
        self.connections_closed += flow.connections_closed;
        for (reason, n) in &flow.connections_failed {
            *self.connections_failed.entry(reason.clone()).or_default() += n;
        }
        self.records += 1;
    }

    /// Failed connection attempts for one reason.
    pub fn failed(&self, reason: &str) -> u64 {
        self.connections_failed.get(reason).copied().unwrap_or(0)
    }
}

/// Bytes both ways of this process's TCP connection to `port`, in the
/// window records.
pub fn window_bytes(records: &[Record], port: u16) -> u64 {
    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(port);
    records
        .iter()
        .filter_map(|r| match r {
            Record::Window(flow) if client.matches(&flow.attributes) => {
                Some(flow.bytes_sent + flow.bytes_received)
            }
            _ => None,
        })
        .sum()
}

/// How many windows the records show closed (`window_summary` records).
pub fn windows_closed(records: &[Record]) -> usize {
    records
        .iter()
        .filter(|r| matches!(r, Record::Other(v) if v["record"] == "window_summary"))
        .count()
}

/// Sums the poll records that pass `filter`.
pub fn sum<'a>(records: impl IntoIterator<Item = &'a Record>, filter: &FlowFilter) -> Totals {
    let mut totals = Totals::default();
    for flow in matching_polls(records, filter) {
        totals.add(flow);
    }
    totals
}

/// Sums the poll records that pass `filter`, one sum per distinct set of
/// attributes (one per flow), keyed by the attributes as JSON.
pub fn sum_by_flow<'a>(
    records: impl IntoIterator<Item = &'a Record>,
    filter: &FlowFilter,
) -> BTreeMap<String, Totals> {
    let mut flows: BTreeMap<String, Totals> = BTreeMap::new();
    for flow in matching_polls(records, filter) {
        // Field order is fixed and `other` is sorted, so equal attributes
        // give equal keys.
        let key = serde_json::to_string(&flow.attributes).expect("attributes serialize");
        flows.entry(key).or_default().add(flow);
    }
    flows
}

fn matching_polls<'a, 'f>(
    records: impl IntoIterator<Item = &'a Record> + 'f,
    filter: &'f FlowFilter,
) -> impl Iterator<Item = &'a Flow> + 'f {
    records
        .into_iter()
        .filter_map(Record::as_poll)
        .filter(move |flow| filter.matches(&flow.attributes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTGOING: &str = r#"{"record":"poll","start":"2026-01-01T00:00:00Z","end":"2026-01-01T00:00:01Z","attributes":{"network.transport":"tcp","network.type":"ipv4","network.namespace":4026531840,"flow.direction":"outgoing","source.address":"127.0.0.1","source.process.pid":123,"source.process.name":"x","source.container.id":"abc","destination.address":"127.0.0.1","destination.port":80,"host.name":"h"},"bytes_sent":10,"bytes_received":20,"packets_sent":1,"packets_received":2,"retransmits":0,"connections_opened":1,"connections_closed":0,"connections_failed":{"refused":1},"rtt_us":null,"rtt_variance_us":null,"bandwidth_bps":0.0}"#;

    fn incoming(port: u16, sent: u64) -> String {
        format!(
            r#"{{"record":"poll","start":"s","end":"e","attributes":{{"network.transport":"tcp","network.type":"ipv6","network.namespace":1,"flow.direction":"incoming","source.address":"::1","source.port":{port},"source.process.pid":123,"destination.address":"::1"}},"bytes_sent":{sent},"bytes_received":0,"packets_sent":0,"packets_received":0,"retransmits":0,"connections_opened":0,"connections_closed":0,"connections_failed":{{}},"rtt_us":12.5,"rtt_variance_us":3.0,"bandwidth_bps":1.5}}"#
        )
    }

    #[test]
    fn parses_a_poll_record() {
        let Record::Poll(flow) = Record::parse(OUTGOING).unwrap() else {
            panic!("not a poll record");
        };
        assert_eq!(flow.attributes.transport.as_deref(), Some("tcp"));
        assert_eq!(flow.attributes.namespace, Some(4026531840));
        assert_eq!(flow.attributes.source_port, None);
        assert_eq!(flow.attributes.destination_port, Some(80));
        assert_eq!(flow.attributes.pid, Some(123));
        assert_eq!(flow.attributes.other["host.name"], "h");
        assert_eq!(flow.connections_failed["refused"], 1);
        assert_eq!(flow.rtt_us, None);
    }

    #[test]
    fn summarises_a_flow_on_one_line() {
        let summary = Record::parse(OUTGOING).unwrap().summary();
        assert!(summary.starts_with("poll 2026-01-01T00:00:00Z..2026-01-01T00:00:01Z {"));
        assert!(summary.ends_with(
            "bytes_sent=10 bytes_received=20 packets_sent=1 packets_received=2 opened=1 failed.refused=1"
        ));
    }

    #[test]
    fn keeps_health_and_unknown_records_and_rejects_broken_flows() {
        assert!(matches!(
            Record::parse(r#"{"record":"health","dropped":0}"#),
            Ok(Record::Health(_))
        ));
        assert!(matches!(
            Record::parse(r#"{"record":"summary"}"#),
            Ok(Record::Other(_))
        ));
        assert!(Record::parse(r#"{"record":"poll","bytes_sent":"ten"}"#).is_err());
        assert!(Record::parse("flowtel: watching").is_err());
    }

    #[test]
    fn sums_matching_poll_records_only() {
        let records: Vec<Record> = [
            OUTGOING.to_owned(),
            incoming(8080, 5),
            incoming(8080, 7),
            incoming(9090, 100),
        ]
        .iter()
        .map(|l| Record::parse(l).unwrap())
        .collect();

        let server = FlowFilter::any()
            .pid(123)
            .tcp()
            .incoming()
            .source_port(8080);
        let totals = sum(&records, &server);
        assert_eq!(totals.bytes_sent, 12);
        assert_eq!(totals.records, 2);

        let client = FlowFilter::any()
            .outgoing()
            .ipv4()
            .destination_address("127.0.0.1".parse().unwrap())
            .destination_port(80)
            .namespace(4026531840);
        let totals = sum(&records, &client);
        assert_eq!((totals.bytes_sent, totals.bytes_received), (10, 20));
        assert_eq!(totals.failed("refused"), 1);
        assert_eq!(totals.failed("reset"), 0);

        assert_eq!(sum(&records, &FlowFilter::any().pid(9)).records, 0);
        assert_eq!(sum(&records, &FlowFilter::any().udp()).records, 0);

        let by_flow = sum_by_flow(&records, &FlowFilter::any().incoming());
        let sent: Vec<u64> = by_flow.values().map(|t| t.bytes_sent).collect();
        assert_eq!(sent, [12, 100]);
    }
}
