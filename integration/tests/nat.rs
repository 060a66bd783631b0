//! NAT through conntrack: a client whose connection a DNAT rewrote, in its
//! own output chain or on a router's prerouting, has its flow's bytes
//! exact and `destination.translated.*` equal to the reply source that
//! `conntrack -L` lists for that connection; the server's flow has the
//! virtual address the client dialled as `source.translated.*`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use integration::agent::Agent;
use integration::netns::NetNs;
use integration::privilege;
use integration::record::{Flow, FlowFilter};
use integration::traffic::tcp::{self, Transfer};

const VIRTUAL: &str = "10.253.9.9:80";
const SERVER: &str = "10.253.7.2:8080";

/// Joins `a` and `b` with a veth pair, `a_addr` and `b_addr` (/24) on it.
fn link(a: &NetNs, a_addr: &str, b: &NetNs, b_addr: &str, name: &str) {
    a.ip(&[
        "link",
        "add",
        name,
        "type",
        "veth",
        "peer",
        "name",
        name,
        "netns",
        b.name(),
    ]);
    for (ns, addr) in [(a, a_addr), (b, b_addr)] {
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", name]);
        ns.ip(&["link", "set", name, "up"]);
    }
}

/// A DNAT of VIRTUAL to SERVER in `ns`'s `hook` chain (`output` or
/// `prerouting`).
fn dnat(ns: &NetNs, hook: &str) {
    let chain = format!("{{ type nat hook {hook} priority -100; }}");
    ns.exec("nft", &["add", "table", "ip", "flowtel_nat"]);
    ns.exec("nft", &["add", "chain", "ip", "flowtel_nat", hook, &chain]);
    ns.exec(
        "nft",
        &[
            "add",
            "rule",
            "ip",
            "flowtel_nat",
            hook,
            "ip",
            "daddr",
            "10.253.9.9",
            "tcp",
            "dport",
            "80",
            "dnat",
            "to",
            SERVER,
        ],
    );
}

/// The reply source of the TCP entry whose original source port is
/// `client_port`, as `conntrack -L` in `ns` lists it.
fn conntrack_reply_source(ns: &NetNs, client_port: u16) -> SocketAddr {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "conntrack", "-L", "-p", "tcp"])
        .args(["--orig-port-src", &client_port.to_string()])
        .output()
        .expect("run conntrack (Debian's conntrack package)");
    assert!(
        output.status.success(),
        "conntrack -L: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    let line = listing
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no conntrack entry for port {client_port}"));
    // The second src= and sport= are the reply direction's.
    let field = |name: &str| {
        line.split_whitespace()
            .filter_map(|word| word.strip_prefix(name))
            .nth(1)
            .unwrap_or_else(|| panic!("no second {name} in {line}"))
            .to_owned()
    };
    let address: IpAddr = field("src=").parse().unwrap();
    SocketAddr::new(address, field("sport=").parse().unwrap())
}

fn text(flow: &Flow, name: &str) -> Option<String> {
    flow.attributes
        .other
        .get(name)
        .map(|v| v.to_string().trim_matches('"').to_owned())
}

/// Moves the test's bytes from `client` to VIRTUAL, served by `server`,
/// and checks both ends' flows against the sockets and `conntrack -L` of
/// `tracked_in`.
fn assert_translated(agent: &mut Agent, client: &NetNs, server: &NetNs, tracked_in: &NetNs) {
    let listen: SocketAddr = SERVER.parse().unwrap();
    let truth: Transfer = tcp::transfer_through(
        Some(client),
        Some(server),
        listen,
        |_| VIRTUAL.parse().unwrap(),
        1 << 20,
        64 << 10,
    );
    let moved = [
        truth.client_sent,
        truth.server_received,
        truth.server_sent,
        truth.client_received,
    ];
    assert_eq!(
        moved,
        [1 << 20, 1 << 20, 64 << 10, 64 << 10],
        "what the sockets moved"
    );
    let reply_source = conntrack_reply_source(tracked_in, truth.client_port);
    assert_eq!(
        reply_source, listen,
        "conntrack says where the DNAT sent it"
    );

    let client_flow = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .namespace(client.inode())
        .destination_port(80);
    let server_flow = FlowFilter::this_process()
        .tcp()
        .incoming()
        .namespace(server.inode())
        .source_port(8080);
    agent.assert_ends_counted(&[
        (&client_flow, truth.client_sent, truth.client_received),
        (&server_flow, truth.server_sent, truth.server_received),
    ]);
    let flows = agent.poll_flows(&client_flow);
    assert!(!flows.is_empty());
    for flow in &flows {
        eprintln!(
            "client poll record: {}",
            serde_json::to_string(&flow.attributes).unwrap()
        );
        assert_eq!(
            flow.attributes.destination_address.as_deref(),
            Some("10.253.9.9")
        );
        assert_eq!(
            text(flow, "destination.translated.address"),
            Some(reply_source.ip().to_string()),
            "{flow:?}"
        );
        assert_eq!(
            text(flow, "destination.translated.port"),
            Some(reply_source.port().to_string()),
            "{flow:?}"
        );
        assert_eq!(text(flow, "source.translated.address"), None, "{flow:?}");
    }
    for flow in agent.poll_flows(&server_flow) {
        assert_eq!(
            text(&flow, "source.translated.address").as_deref(),
            Some("10.253.9.9"),
            "{flow:?}"
        );
        assert_eq!(
            text(&flow, "source.translated.port").as_deref(),
            Some("80"),
            "{flow:?}"
        );
        assert_eq!(
            text(&flow, "destination.translated.address"),
            None,
            "{flow:?}"
        );
    }
}

#[test]
fn dnat_in_the_client_output_chain_names_the_server_that_took_the_bytes() {
    privilege::require_root();
    let client = NetNs::create("natout-c");
    let server = NetNs::create("natout-s");
    link(&client, "10.253.7.1", &server, "10.253.7.2", "veth0");
    // The route is looked up before the output chain rewrites the
    // destination: the virtual address needs one.
    client.ip(&["route", "add", "default", "via", "10.253.7.2"]);
    dnat(&client, "output");
    // After the rules: nf_conntrack is loaded by then.
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    assert_translated(&mut agent, &client, &server, &client);
}

#[test]
fn dnat_on_a_router_prerouting_names_the_server_that_took_the_bytes() {
    privilege::require_root();
    let client = NetNs::create("natpre-c");
    let router = NetNs::create("natpre-r");
    let server = NetNs::create("natpre-s");
    link(&client, "10.253.6.1", &router, "10.253.6.2", "veth0");
    link(&router, "10.253.7.1", &server, "10.253.7.2", "veth1");
    client.ip(&["route", "add", "default", "via", "10.253.6.2"]);
    server.ip(&["route", "add", "default", "via", "10.253.7.1"]);
    router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    dnat(&router, "prerouting");
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    assert_translated(&mut agent, &client, &server, &router);
}
