//! DNS lookups of this host's clients, against a real unbound: each
//! lookup counted once by question name and response code (answers,
//! NXDOMAIN, SERVFAIL from a dead forwarder, REFUSED, a timeout from an
//! nftables drop), over UDP and TCP, from the host and from a network
//! namespace, with a latency no longer than the client measured; and a
//! connection to an answered address carrying `destination.domain`.
//!
//! Ground truth is the test's own client: it chose every query's id and
//! timed every answer. Each test has a server address of its own and reads
//! only the lookups to it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration::agent::Agent;
use integration::dns::{
    counted, dig, query_tcp, query_udp, query_udp_for, query_udp_unconnected, Counted, Lookup,
    RecordType, Unbound,
};
use integration::netns::NetNs;
use integration::otlp_metrics;
use integration::otlp_receiver::{accepted_requests, Behaviour, OtlpReceiver, Protocol};
use integration::privilege;
use integration::record::{FlowFilter, Record};

const POLL: Duration = Duration::from_millis(500);

/// An agent with 2-second windows, a 1-second DNS timeout and a domain
/// mapping (`ok.flowtel`'s flows are `destination.service=web`).
fn agent(tag: &str) -> Agent {
    agent_with(tag, "", None)
}

/// Like [`agent`], with a `receiver:` section of `receiver` and
/// `FLOWTEL_TEST_REFUSE_PROGRAMS=refuse`.
fn agent_with(tag: &str, receiver: &str, refuse: Option<&str>) -> Agent {
    let path = std::env::temp_dir().join(format!("flowtel-dns-{tag}-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        format!("{receiver}processor:\n  interval: 2s\n  dns:\n    timeout: 1s\n  mappings:\n    domains:\n      - {{match: '^ok\\.flowtel$', service: web}}\n"),
    )
    .expect("the agent's config");
    let mut command = Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command
        .args(["run", "--format", "json", "--poll-interval"])
        .arg(format!("{}ms", POLL.as_millis()))
        .arg("--config")
        .arg(&path);
    if let Some(programs) = refuse {
        command.env(receiver::REFUSE_FOR_TEST, programs);
    }
    let agent = Agent::launch(command, POLL);
    let _ = std::fs::remove_file(PathBuf::from(&path));
    agent
}

type Key = (String, String, String);

fn key(name: &str, code: &str, transport: &str) -> Key {
    (name.to_owned(), code.to_owned(), transport.to_owned())
}

/// Waits until the agent's windows hold `expected` requests for each key
/// (and nothing else to `server`), then one more window, and checks that
/// the counts stayed exact. Returns what was counted.
fn assert_counted(
    agent: &mut Agent,
    server: IpAddr,
    expected: &BTreeMap<Key, u64>,
) -> BTreeMap<Key, Counted> {
    let requests = |records: &[Record]| -> BTreeMap<Key, u64> {
        counted(records, server)
            .into_iter()
            .filter(|((name, _, _), _)| name != "ready.flowtel")
            .map(|(k, c)| (k, c.requests))
            .collect()
    };
    agent.wait_until(
        &format!("dns.requests {expected:?} to {server}"),
        |records| requests(records) == *expected,
    );
    agent.wait_for_another_window();
    let records = agent.records();
    assert_eq!(requests(&records), *expected, "counted once, not again");
    counted(&records, server)
}

/// The answered lookups of a key took no longer in the kernel's view than
/// the client measured.
fn assert_latency_within(counted: &Counted, lookups: &[&Lookup]) {
    let longest = lookups.iter().map(|l| l.took).max().expect("lookups");
    assert_eq!(counted.answered, lookups.len() as u64);
    assert!(counted.max_us > 0, "{counted:?}");
    assert!(
        Duration::from_micros(counted.max_us) <= longest + Duration::from_micros(1),
        "the agent's {}µs is longer than the client's {longest:?}",
        counted.max_us
    );
}

#[test]
fn udp_lookups_are_counted_by_name_and_response_code_within_the_clients_latency() {
    privilege::require_root();
    let unbound = Unbound::start(
        Ipv4Addr::new(127, 0, 53, 1),
        Ipv4Addr::new(192, 0, 2, 7),
        None,
    );
    let mut agent = agent("udp");
    let wait = Duration::from_secs(5);
    let mut lookups: BTreeMap<Key, Vec<Lookup>> = BTreeMap::new();
    for (name, times, code) in [
        ("ok.flowtel", 3, "NOERROR"),
        ("alias.flowtel", 1, "NOERROR"),
        ("nx.flowtel", 2, "NXDOMAIN"),
        ("rf.flowtel", 2, "REFUSED"),
        ("sf.flowtel", 1, "SERVFAIL"),
    ] {
        for _ in 0..times {
            let lookup = query_udp(unbound.server, name, wait).expect("an answer");
            assert_eq!(lookup.code, code, "{name}");
            lookups
                .entry(key(name, code, "udp"))
                .or_default()
                .push(lookup);
        }
    }
    let expected = lookups
        .iter()
        .map(|(k, l)| (k.clone(), l.len() as u64))
        .collect();
    let counted = assert_counted(&mut agent, unbound.server.ip(), &expected);
    for (k, l) in &lookups {
        assert_latency_within(&counted[k], &l.iter().collect::<Vec<_>>());
    }
    println!("counted: {counted:#?}");
}

#[test]
fn tcp_lookups_are_counted_as_tcp() {
    privilege::require_root();
    let unbound = Unbound::start(
        Ipv4Addr::new(127, 0, 53, 2),
        Ipv4Addr::new(192, 0, 2, 8),
        None,
    );
    let mut agent = agent("tcp");
    let ok: Vec<Lookup> = (0..2)
        .map(|_| query_tcp(unbound.server, "ok.flowtel"))
        .collect();
    let nx = query_tcp(unbound.server, "nx.flowtel");
    assert!(ok.iter().all(|l| l.code == "NOERROR") && nx.code == "NXDOMAIN");
    let expected = BTreeMap::from([
        (key("ok.flowtel", "NOERROR", "tcp"), 2),
        (key("nx.flowtel", "NXDOMAIN", "tcp"), 1),
    ]);
    let counted = assert_counted(&mut agent, unbound.server.ip(), &expected);
    assert_latency_within(
        &counted[&key("ok.flowtel", "NOERROR", "tcp")],
        &ok.iter().collect::<Vec<_>>(),
    );
    assert_latency_within(&counted[&key("nx.flowtel", "NXDOMAIN", "tcp")], &[&nx]);
}

#[test]
fn lookups_of_dig_and_of_an_unconnected_socket_are_counted() {
    privilege::require_root();
    let unbound = Unbound::start(
        Ipv4Addr::new(127, 0, 53, 9),
        Ipv4Addr::new(192, 0, 2, 9),
        None,
    );
    let mut agent = agent("readers");
    // The three ways a reader takes its answer here: recvmsg (dig, UDP),
    // read (dig, TCP) and recvfrom with the sender's address.
    assert_eq!(dig(unbound.server, "ok.flowtel", false), "NOERROR");
    assert_eq!(dig(unbound.server, "nx.flowtel", false), "NXDOMAIN");
    assert_eq!(dig(unbound.server, "ok.flowtel", true), "NOERROR");
    let unconnected: Vec<Lookup> = (0..2)
        .map(|_| query_udp_unconnected(unbound.server, "rf.flowtel"))
        .collect();
    assert!(unconnected.iter().all(|l| l.code == "REFUSED"));
    let expected = BTreeMap::from([
        (key("ok.flowtel", "NOERROR", "udp"), 1),
        (key("nx.flowtel", "NXDOMAIN", "udp"), 1),
        (key("ok.flowtel", "NOERROR", "tcp"), 1),
        (key("rf.flowtel", "REFUSED", "udp"), 2),
    ]);
    let counted = assert_counted(&mut agent, unbound.server.ip(), &expected);
    assert_latency_within(
        &counted[&key("rf.flowtel", "REFUSED", "udp")],
        &unconnected.iter().collect::<Vec<_>>(),
    );
}

/// One lookup by each kind of reader (a connected UDP socket, TCP, an
/// unconnected UDP socket), each counted once within its client's latency.
fn assert_each_reader_counted(agent: &mut Agent, unbound: &Unbound) {
    let ok = query_udp(unbound.server, "ok.flowtel", Duration::from_secs(5)).expect("an answer");
    let nx = query_tcp(unbound.server, "nx.flowtel");
    let rf = query_udp_unconnected(unbound.server, "rf.flowtel");
    let expected = BTreeMap::from([
        (key("ok.flowtel", "NOERROR", "udp"), 1),
        (key("nx.flowtel", "NXDOMAIN", "tcp"), 1),
        (key("rf.flowtel", "REFUSED", "udp"), 1),
    ]);
    let counted = assert_counted(agent, unbound.server.ip(), &expected);
    assert_latency_within(&counted[&key("ok.flowtel", "NOERROR", "udp")], &[&ok]);
    assert_latency_within(&counted[&key("nx.flowtel", "NXDOMAIN", "tcp")], &[&nx]);
    assert_latency_within(&counted[&key("rf.flowtel", "REFUSED", "udp")], &[&rf]);
}

#[test]
fn without_udp_counting_dns_takes_programs_of_its_own_and_counts_exactly() {
    privilege::require_root();
    let unbound = Unbound::start(
        Ipv4Addr::new(127, 0, 53, 11),
        Ipv4Addr::new(192, 0, 2, 11),
        None,
    );
    let mut agent = agent_with("own", "receiver:\n  udp: false\n", None);
    assert_eq!(dns_level(&mut agent), "on");
    let via = agent.stderr().join("\n");
    assert_each_reader_counted(&mut agent, &unbound);
    assert!(!via.contains("feature dns"), "no warning: {via}");
}

#[test]
fn a_refused_receive_program_takes_answers_from_the_packets_and_counts_exactly() {
    privilege::require_root();
    let unbound = Unbound::start(
        Ipv4Addr::new(127, 0, 53, 10),
        Ipv4Addr::new(192, 0, 2, 10),
        None,
    );
    // Both ways that read answers need the recvmsg hook.
    let mut agent = agent_with("ingress", "", Some("flowtel_dns_recvmsg4"));
    assert_eq!(dns_level(&mut agent), "fallback");
    assert_each_reader_counted(&mut agent, &unbound);
}

/// Drops the queries reaching `server` on the input side (the query has
/// left its client through the egress hook); removed on drop.
struct DropQueries(String);

impl DropQueries {
    fn to(server: Ipv4Addr) -> DropQueries {
        let table = format!("flowtel_dns_{}", std::process::id());
        let nft = |args: &str| {
            let status = Command::new("nft")
                .args(args.split(' '))
                .status()
                .expect("nft runs");
            assert!(status.success(), "nft {args}");
        };
        nft(&format!("add table ip {table}"));
        nft(&format!(
            "add chain ip {table} input {{ type filter hook input priority -10 ; }}"
        ));
        nft(&format!(
            "add rule ip {table} input ip daddr {server} udp dport 53 drop"
        ));
        DropQueries(table)
    }
}

impl Drop for DropQueries {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.0])
            .status();
    }
}

#[test]
fn a_query_without_an_answer_is_a_timeout() {
    privilege::require_root();
    let server = Ipv4Addr::new(127, 0, 53, 3);
    let unbound = Unbound::start(server, Ipv4Addr::new(192, 0, 2, 9), None);
    let mut agent = agent("timeout");
    let answered =
        query_udp(unbound.server, "ok.flowtel", Duration::from_secs(5)).expect("an answer");
    let dropped = DropQueries::to(server);
    assert!(
        query_udp(unbound.server, "nx.flowtel", Duration::from_secs(2)).is_none(),
        "the drop rule holds"
    );
    drop(dropped);
    let expected = BTreeMap::from([
        (key("ok.flowtel", "NOERROR", "udp"), 1),
        (key("nx.flowtel", "timeout", "udp"), 1),
    ]);
    let counted = assert_counted(&mut agent, unbound.server.ip(), &expected);
    assert_eq!(counted[&key("nx.flowtel", "timeout", "udp")].answered, 0);
    assert_latency_within(&counted[&key("ok.flowtel", "NOERROR", "udp")], &[&answered]);
}

#[test]
fn a_client_in_a_namespace_is_counted_in_its_namespace() {
    privilege::require_root();
    let ns = NetNs::create("dns");
    let unbound = Unbound::start(Ipv4Addr::LOCALHOST, Ipv4Addr::new(192, 0, 2, 10), Some(&ns));
    let mut agent = agent("netns");
    let server = unbound.server;
    let lookups: Vec<Lookup> = ns
        .spawn(move || {
            (0..2)
                .map(|_| {
                    query_udp(server, "nx.flowtel", Duration::from_secs(5)).expect("an answer")
                })
                .collect()
        })
        .join()
        .expect("the client in the namespace");
    let expected = BTreeMap::from([(key("nx.flowtel", "NXDOMAIN", "udp"), 2)]);
    let counted = assert_counted(&mut agent, server.ip(), &expected);
    let nx = &counted[&key("nx.flowtel", "NXDOMAIN", "udp")];
    assert_eq!(nx.namespaces, [ns.inode()], "the client's namespace");
    assert_latency_within(nx, &lookups.iter().collect::<Vec<_>>());
}

#[test]
fn a_connection_to_an_answered_address_carries_its_domain() {
    privilege::require_root();
    let web = Ipv4Addr::new(127, 0, 54, 4);
    let listener = TcpListener::bind((web, 0)).expect("a TCP server");
    let port = listener.local_addr().unwrap().port();
    let unbound = Unbound::start(Ipv4Addr::new(127, 0, 53, 4), web, None);
    let mut agent = agent("domain");
    let lookup =
        query_udp(unbound.server, "ok.flowtel", Duration::from_secs(5)).expect("an answer");
    assert_eq!(lookup.addresses, [IpAddr::V4(web)]);

    const SENT: usize = 123_457;
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        socket.read_to_end(&mut got).unwrap();
        got.len()
    });
    let mut client = TcpStream::connect((lookup.addresses[0], port)).expect("connect");
    client.write_all(&vec![7u8; SENT]).unwrap();
    drop(client);
    assert_eq!(server.join().unwrap(), SENT);

    let to_web = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_address(IpAddr::V4(web))
        .destination_port(port);
    agent.wait_until("the connection to ok.flowtel, closed", |records| {
        integration::record::sum(records, &to_web).connections_closed == 1
    });
    let flows = agent.poll_flows(&to_web);
    let sent: u64 = flows.iter().map(|f| f.bytes_sent).sum();
    assert_eq!(sent, SENT as u64, "exact bytes: {flows:#?}");
    for flow in &flows {
        assert_eq!(
            flow.attributes
                .other
                .get("destination.domain")
                .and_then(|v| v.as_str()),
            Some("ok.flowtel"),
            "{flow:#?}"
        );
    }
    println!(
        "flow: {} sent {}",
        serde_json::to_string(&flows[0].attributes).unwrap_or_default(),
        sent
    );
}

/// Over IPv6: an AAAA lookup to a server on ::1 is counted with its type,
/// and a connection to the answered address carries its domain.
#[test]
fn an_ipv6_lookup_is_counted_and_names_the_ipv6_connection() {
    privilege::require_root();
    let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("a TCP server on ::1");
    let port = listener.local_addr().unwrap().port();
    let unbound = Unbound::start(Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST, None);
    let mut agent = agent("ipv6");
    let lookup = query_udp_for(
        unbound.server,
        "ok.flowtel",
        RecordType::AAAA,
        Duration::from_secs(5),
    )
    .expect("an answer");
    assert_eq!(lookup.addresses, [IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    let expected = BTreeMap::from([(key("ok.flowtel", "NOERROR", "udp"), 1)]);
    let counted = assert_counted(&mut agent, unbound.server.ip(), &expected);
    assert_latency_within(&counted[&key("ok.flowtel", "NOERROR", "udp")], &[&lookup]);
    let types: Vec<String> = agent
        .records()
        .iter()
        .filter_map(|r| match r {
            Record::Other(v) if v["record"] == "dns" => v["attributes"]["dns.question.type"]
                .as_str()
                .map(str::to_owned),
            _ => None,
        })
        .collect();
    assert!(types.iter().any(|t| t == "AAAA"), "{types:?}");

    const SENT: usize = 54_321;
    let server = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        socket.read_to_end(&mut got).unwrap();
        got.len()
    });
    let mut client = TcpStream::connect((lookup.addresses[0], port)).expect("connect");
    client.write_all(&vec![6u8; SENT]).unwrap();
    drop(client);
    assert_eq!(server.join().unwrap(), SENT);
    let to_web = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_address(IpAddr::V6(Ipv6Addr::LOCALHOST))
        .destination_port(port);
    agent.wait_until("the IPv6 connection, closed", |records| {
        integration::record::sum(records, &to_web).connections_closed == 1
    });
    let flows = agent.poll_flows(&to_web);
    assert_eq!(flows.iter().map(|f| f.bytes_sent).sum::<u64>(), SENT as u64);
    for flow in &flows {
        let domain = flow.attributes.other.get("destination.domain");
        assert_eq!(
            domain.and_then(|v| v.as_str()),
            Some("ok.flowtel"),
            "{flow:#?}"
        );
    }
}

/// The feature's level in the agent's last health record.
fn dns_level(agent: &mut Agent) -> String {
    agent.wait_polls(1);
    let health = agent.health();
    health.last().expect("a health record").features["dns"].clone()
}

#[test]
fn a_refused_program_turns_dns_off_with_one_warning_and_the_rest_counts() {
    privilege::require_root();
    // The recvmsg hook (which both ways that read answers need) and the
    // query program of the packet way.
    let mut agent = agent_with(
        "refused",
        "",
        Some("flowtel_dns_recvmsg4,flowtel_dns_egress"),
    );
    assert_eq!(dns_level(&mut agent), "off");
    let warnings: Vec<String> = agent
        .stderr()
        .into_iter()
        .filter(|line| line.contains("feature dns: off"))
        .collect();
    assert_eq!(warnings.len(), 1, "{:?}", agent.stderr());
    assert!(
        warnings[0].contains("refused for this test"),
        "{}",
        warnings[0]
    );
    assert!(
        warnings[0].contains("no destination.domain"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        agent.health().last().unwrap().features["tcp connections"],
        "on"
    );
}

#[test]
fn receiver_dns_false_turns_dns_off_and_counts_no_lookup() {
    privilege::require_root();
    let unbound = Unbound::start(
        Ipv4Addr::new(127, 0, 53, 5),
        Ipv4Addr::new(192, 0, 2, 11),
        None,
    );
    let mut agent = agent_with("off", "receiver:\n  dns: false\n", None);
    assert_eq!(dns_level(&mut agent), "off");
    query_udp(unbound.server, "ok.flowtel", Duration::from_secs(5)).expect("an answer");
    agent.wait_for_another_window();
    agent.wait_for_another_window();
    assert!(counted(&agent.records(), unbound.server.ip()).is_empty());
}

#[test]
fn dns_metrics_reach_an_otlp_receiver_as_a_sum_and_a_histogram() {
    privilege::require_root();
    let unbound = Unbound::start(
        Ipv4Addr::new(127, 0, 53, 6),
        Ipv4Addr::new(192, 0, 2, 12),
        None,
    );
    let otlp = OtlpReceiver::start(Protocol::Http, Behaviour::default());
    let _agent = Agent::launch(otlp.agent_command(env!("CARGO_BIN_EXE_flowtel")), POLL);
    let ok: Vec<Lookup> = (0..2)
        .map(|_| {
            query_udp(unbound.server, "ok.flowtel", Duration::from_secs(5)).expect("an answer")
        })
        .collect();
    query_udp(unbound.server, "nx.flowtel", Duration::from_secs(5)).expect("an answer");
    let server = unbound.server.ip().to_string();
    let requests_to = |arrivals: &[integration::otlp_receiver::Arrival], name: &str| -> i64 {
        otlp_metrics::points(&accepted_requests(arrivals))
            .iter()
            .filter(|p| p.metric == "dns.requests" && p.unit == "{request}")
            .filter(|p| p.attribute("destination.address") == Some(server.as_str()))
            .filter(|p| p.attribute("dns.question.name") == Some(name))
            .map(|p| p.int())
            .sum()
    };
    let arrivals = otlp.wait_for(
        "dns.requests of ok.flowtel and nx.flowtel",
        Duration::from_secs(30),
        |a| requests_to(a, "ok.flowtel") == 2 && requests_to(a, "nx.flowtel") == 1,
    );
    let mut durations = Vec::new();
    for request in accepted_requests(&arrivals) {
        for metric in request
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .filter(|m| m.name == "dns.lookup.duration")
        {
            assert_eq!(metric.unit, "s");
            let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) =
                &metric.data
            else {
                panic!("dns.lookup.duration is no histogram: {metric:?}");
            };
            durations.extend(
                h.data_points
                    .iter()
                    .filter(|p| {
                        let has = |key: &str, value: &str| {
                            p.attributes
                                .iter()
                                .any(|a| a.key == key && format!("{:?}", a.value).contains(value))
                        };
                        // This test's server only: the other tests' lookups
                        // run beside it and this agent sees them too.
                        has("dns.question.name", "ok.flowtel")
                            && has("destination.address", &format!("\"{server}\""))
                    })
                    .cloned(),
            );
        }
    }
    let count: u64 = durations.iter().map(|p| p.count).sum();
    assert_eq!(count, 2, "{durations:?}");
    let longest = ok.iter().map(|l| l.took).max().unwrap();
    for p in &durations {
        assert!(
            p.max.unwrap() <= longest.as_secs_f64() + 1e-6,
            "{p:?} vs {longest:?}"
        );
    }
}
