//! NAT through conntrack, in namespaces the test makes: a client whose
//! connection a DNAT rewrote (in its own output chain, or on a router's
//! prerouting) has its flow's bytes exact and `destination.translated.*`
//! equal to the reply source that `conntrack -L` lists for it, and the
//! server's flow has the virtual address the client dialled as
//! `source.translated.*`; behind a masquerading router the server's flow
//! names the real client and the client's the address it was given.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{mpsc, Arc, Barrier};
use std::time::Duration;

use integration::agent::Agent;
use integration::nat::{dnat, nat_rule, pair, routed};
use integration::netns::NetNs;
use integration::privilege;
use integration::record::{Flow, FlowFilter, Record};
use integration::traffic::tcp::{self, Transfer};

const VIRTUAL: &str = "10.253.9.9:80";
const SERVER: &str = "10.253.7.2:8080";

/// The reply direction (source, destination) of the `protocol` entry
/// whose original source port is `client_port`, as `conntrack -L` in `ns`
/// lists it.
fn conntrack_reply(ns: &NetNs, protocol: &str, client_port: u16) -> (SocketAddr, SocketAddr) {
    let output = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            ns.name(),
            "conntrack",
            "-L",
            "-p",
            protocol,
        ])
        .args(["--orig-port-src", &client_port.to_string()])
        .output()
        .expect("run conntrack (Debian's conntrack package)");
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "conntrack -L: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = listing
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no conntrack entry for port {client_port}"));
    // The second of each field is the reply direction's.
    let reply = |name: &str| {
        line.split_whitespace()
            .filter_map(|word| word.strip_prefix(name))
            .nth(1)
            .unwrap_or_else(|| panic!("no second {name} in {line}"))
            .to_owned()
    };
    let end = |address: &str, port: &str| {
        let address: IpAddr = reply(address).parse().unwrap();
        SocketAddr::new(address, reply(port).parse().unwrap())
    };
    (end("src=", "sport="), end("dst=", "dport="))
}

fn text(flow: &Flow, name: &str) -> Option<String> {
    let value = flow.attributes.other.get(name)?;
    Some(value.to_string().trim_matches('"').to_owned())
}

/// Asserts every flow's `<end>.translated.address` and `.port` (`None`:
/// absent), and that the other end has no translation.
fn assert_translated(flows: &[Flow], end: &str, address: Option<IpAddr>, port: Option<u16>) {
    assert!(!flows.is_empty());
    let other = if end == "source" {
        "destination"
    } else {
        "source"
    };
    for flow in flows {
        let got = (
            text(flow, &format!("{end}.translated.address")),
            text(flow, &format!("{end}.translated.port")),
            text(flow, &format!("{other}.translated.address")),
        );
        let want = (
            address.map(|a| a.to_string()),
            port.map(|p| p.to_string()),
            None,
        );
        assert_eq!(got, want, "{end} translation of {flow:?}");
    }
}

/// Waits for the client's flow (to port `dialled`) and the server's of
/// one transfer, asserts their bytes, and returns their poll records.
fn tcp_ends_counted(
    agent: &mut Agent,
    [client, server]: [&NetNs; 2],
    truth: &Transfer,
    dialled: u16,
) -> [Vec<Flow>; 2] {
    let this = || FlowFilter::this_process().tcp();
    let client_flow = this()
        .outgoing()
        .namespace(client.inode())
        .destination_port(dialled);
    let server_flow = this()
        .incoming()
        .namespace(server.inode())
        .source_port(truth.server_port);
    agent.assert_ends_counted(&[
        (&client_flow, truth.client_sent, truth.client_received),
        (&server_flow, truth.server_sent, truth.server_received),
    ]);
    [
        agent.poll_flows(&client_flow),
        agent.poll_flows(&server_flow),
    ]
}

/// Every flow's `destination.address` is `remote`: the address its
/// socket used, whatever NAT did.
fn assert_remote(flows: &[Flow], remote: &str) {
    for flow in flows {
        let address = flow.attributes.destination_address.as_deref();
        assert_eq!(address, Some(remote), "{flow:?}");
    }
}

/// 1 MiB up and 64 KiB back from `client` to `dial`, served by `server`
/// on `listen`; what the sockets moved checked.
fn transfer(client: &NetNs, server: &NetNs, listen: &str, dial: &str) -> Transfer {
    let dial: SocketAddr = dial.parse().unwrap();
    let listen = listen.parse().unwrap();
    let truth = tcp::transfer_through(
        Some(client),
        Some(server),
        listen,
        move |_| dial,
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
    truth
}

/// Moves the test's bytes from `client` (at `client_address`) to VIRTUAL,
/// served by `server`, and checks both ends' flows against the sockets and
/// `conntrack -L` of `tracked_in`.
fn assert_dnat_counted(
    agent: &mut Agent,
    client: &NetNs,
    server: &NetNs,
    tracked_in: &NetNs,
    client_address: &str,
) {
    let truth = transfer(client, server, SERVER, VIRTUAL);
    let (reply_source, _) = conntrack_reply(tracked_in, "tcp", truth.client_port);
    assert_eq!(
        reply_source,
        SERVER.parse().unwrap(),
        "conntrack says where the DNAT sent it"
    );

    let [client_flows, server_flows] = tcp_ends_counted(agent, [client, server], &truth, 80);
    assert_remote(&client_flows, "10.253.9.9");
    assert_remote(&server_flows, client_address);
    assert_dnat_translations(&client_flows, &server_flows, reply_source);
}

#[test]
fn dnat_in_the_client_output_chain_names_the_server_that_took_the_bytes() {
    privilege::require_root();
    let [client, server] = pair("natout", "10.253.7");
    dnat(&client, "output", "tcp", VIRTUAL, SERVER);
    // After the rules: nf_conntrack is loaded by then.
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    assert_dnat_counted(&mut agent, &client, &server, &client, "10.253.7.1");
}

/// The client's flows name `real` (the reply source conntrack lists), the
/// server's the VIRTUAL address the client dialled.
fn assert_dnat_translations(client_flows: &[Flow], server_flows: &[Flow], real: SocketAddr) {
    assert_translated(
        client_flows,
        "destination",
        Some(real.ip()),
        Some(real.port()),
    );
    let dialled: SocketAddr = VIRTUAL.parse().unwrap();
    assert_translated(server_flows, "source", Some(dialled.ip()), Some(80));
}

#[test]
fn dnat_on_a_router_prerouting_names_the_server_that_took_the_bytes() {
    privilege::require_root();
    let [client, router, server] = routed("natpre", "10.253.6", "10.253.7");
    dnat(&router, "prerouting", "tcp", VIRTUAL, SERVER);
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    assert_dnat_counted(&mut agent, &client, &server, &router, "10.253.6.1");
}

#[test]
fn behind_a_masquerading_router_the_server_names_the_real_client() {
    privilege::require_root();
    let [client, router, server] = routed("natmasq", "10.253.5", "10.253.4");
    nat_rule(&router, "postrouting", &["oifname", "veth1", "masquerade"]);
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    let truth = transfer(&client, &server, "10.253.4.2:8080", "10.253.4.2:8080");
    let (_, masqueraded) = conntrack_reply(&router, "tcp", truth.client_port);
    assert_eq!(
        masqueraded.ip().to_string(),
        "10.253.4.1",
        "conntrack: the router's address"
    );
    // The server saw the router's address; both ends' client ports are
    // collapsed, and so are their translated ports.
    let [client_flows, server_flows] =
        tcp_ends_counted(&mut agent, [&client, &server], &truth, 8080);
    assert_remote(&client_flows, "10.253.4.2");
    assert_remote(&server_flows, "10.253.4.1");
    let real_client: IpAddr = "10.253.5.1".parse().unwrap();
    assert_translated(&server_flows, "destination", Some(real_client), None);
    assert_translated(&client_flows, "source", Some(masqueraded.ip()), None);
}

/// Through a router, not the client's output chain: there the client's
/// sends, counted from their packets after the rewrite, would be another
/// flow (to the real server) than its reads (README: What is measured).
#[test]
fn udp_through_dnat_on_a_router_names_the_real_server() {
    // Bound to its address: the sample's local end is the reply tuple's
    // source.
    udp_through_router_dnat("natudp", ["10.253.2", "10.253.3"], "10.253.3.2:5353");
}

/// A server bound to 0.0.0.0 knows its port, not which of its addresses a
/// datagram came to: its entry is found by port and peer.
#[test]
fn udp_through_dnat_to_a_server_on_every_address_names_the_dialled_one() {
    udp_through_router_dnat("natudp0", ["10.253.12", "10.253.13"], "0.0.0.0:5353");
}

fn udp_through_router_dnat(role: &str, [client_net, server_net]: [&str; 2], bind: &'static str) {
    privilege::require_root();
    let [client, router, server] = routed(role, client_net, server_net);
    let real_server = format!("{server_net}.2:5353");
    dnat(&router, "prerouting", "udp", "10.253.9.9:53", &real_server);
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    const DATAGRAMS: usize = 10;
    let (bound, ready) = mpsc::channel();
    let serving = server.spawn(move || {
        let socket = UdpSocket::bind(bind).expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        bound.send(()).unwrap();
        let mut buffer = [0u8; 2048];
        for _ in 0..DATAGRAMS {
            let (_, peer) = socket.recv_from(&mut buffer).expect("a request");
            socket.send_to(&[b'r'; 500], peer).expect("a reply");
        }
    });
    ready.recv_timeout(Duration::from_secs(10)).unwrap();
    let client_port = client
        .spawn(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            socket.connect("10.253.9.9:53").expect("connect");
            let mut buffer = [0u8; 2048];
            for _ in 0..DATAGRAMS {
                socket.send(&[b'q'; 1000]).expect("a request");
                assert_eq!(socket.recv(&mut buffer).expect("a reply"), 500);
            }
            socket.local_addr().unwrap().port()
        })
        .join()
        .unwrap();
    serving.join().unwrap();
    let (reply_source, _) = conntrack_reply(&router, "udp", client_port);
    assert_eq!(reply_source.to_string(), real_server, "conntrack");

    let this = || FlowFilter::this_process().udp();
    let client_flow = this().namespace(client.inode()).destination_port(53);
    let server_flow = this().namespace(server.inode()).source_port(5353);
    let (requests, replies) = ((DATAGRAMS * 1000) as u64, (DATAGRAMS * 500) as u64);
    agent.assert_ends_counted(&[
        (&client_flow, requests, replies),
        (&server_flow, replies, requests),
    ]);
    let client_flows = agent.poll_flows(&client_flow);
    let real = (Some(reply_source.ip()), Some(reply_source.port()));
    assert_translated(&client_flows, "destination", real.0, real.1);
    let server_flows = agent.poll_flows(&server_flow);
    let dialled: IpAddr = "10.253.9.9".parse().unwrap();
    assert_translated(&server_flows, "source", Some(dialled), Some(53));
}

/// A connection DNAT'd before the agent started, so known from the dump
/// at start, not from an event, and open across several polls: every poll
/// record of its client end names the real server.
#[test]
fn a_connection_older_than_the_agent_keeps_its_translation_across_polls() {
    privilege::require_root();
    let [client, server] = pair("natold", "10.253.11");
    dnat(&client, "output", "tcp", VIRTUAL, "10.253.11.2:8080");
    let listener = server
        .spawn(|| TcpListener::bind("10.253.11.2:8080").expect("listen"))
        .join()
        .unwrap();
    let mut near = client
        .spawn(|| TcpStream::connect(VIRTUAL).expect("connect"))
        .join()
        .unwrap();
    let (mut far, _) = listener.accept().expect("accept");
    tcp::exchange(&mut near, &mut far, 70_000);
    let client_port = near.local_addr().unwrap().port();
    let (reply_source, _) = conntrack_reply(&client, "tcp", client_port);
    assert_eq!(reply_source.to_string(), "10.253.11.2:8080", "conntrack");

    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));
    let client_flow = FlowFilter::this_process()
        .tcp()
        .namespace(client.inode())
        .destination_port(80);
    const UP: u64 = 300_000;
    for round in 1..=2 {
        tcp::exchange(&mut near, &mut far, UP as usize);
        // The round's bytes in a poll of their own before the next round.
        agent.wait_for_totals(&client_flow, |t| t.bytes_sent >= round * UP);
    }
    drop((near, far));
    let got = agent.wait_for_totals(&client_flow, |t| t.connections_closed >= 1);
    assert_eq!(got.bytes_sent, 2 * UP, "only what moved since the start");
    let flows = agent.poll_flows(&client_flow);
    assert!(flows.len() >= 2, "a poll record per round: {flows:?}");
    let real = (Some(reply_source.ip()), Some(reply_source.port()));
    assert_translated(&flows, "destination", real.0, real.1);
}

/// A REDIRECT in the output chain to a local port: the client's flow
/// names the loopback listener that took the bytes.
#[test]
fn a_redirect_to_a_local_port_names_the_local_listener() {
    privilege::require_root();
    // The peer only routes to the virtual address: nothing there answers.
    let [ns, _peer] = pair("natredir", "10.253.12");
    let rule = [
        "ip",
        "daddr",
        "10.253.9.9",
        "tcp",
        "dport",
        "80",
        "redirect",
        "to",
        ":8080",
    ];
    nat_rule(&ns, "output", &rule);
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    let truth = transfer(&ns, &ns, "127.0.0.1:8080", VIRTUAL);
    let (reply_source, _) = conntrack_reply(&ns, "tcp", truth.client_port);
    assert_eq!(reply_source.to_string(), "127.0.0.1:8080", "conntrack");
    let [client_flows, server_flows] = tcp_ends_counted(&mut agent, [&ns, &ns], &truth, 80);
    assert_remote(&client_flows, "10.253.9.9");
    assert_remote(&server_flows, "10.253.12.1");
    assert_dnat_translations(&client_flows, &server_flows, reply_source);
}

/// Conntrack events overflowing the reader's socket (made tiny for the
/// test, and its reader stopped while the events arrive): the loss is
/// counted and a dump reads the entries again, so each of many short
/// connections still names the real server.
#[test]
fn lost_conntrack_events_are_counted_and_read_again_by_a_dump() {
    privilege::require_root();
    let [client, server] = pair("natlost", "10.253.13");
    dnat(&client, "output", "tcp", VIRTUAL, "10.253.13.2:8080");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flowtel"));
    command.env("FLOWTEL_TEST_CONNTRACK_BUFFER", "4096");
    let mut agent = Agent::start_command(command, Duration::from_secs(3));
    // Right after a poll, so that the burst and the dump that follows it
    // are over before the next one.
    agent.wait_polls(1);
    // The agent stopped (SIGSTOP) while the connections come and go: their
    // events overflow its socket whatever the machine's speed. Their
    // entries stay in conntrack (TIME_WAIT) for the dump to find.
    let paused = Paused::stop(&agent);

    // Connections opened all at once from threads of their own, faster
    // than the reader is scheduled to read their events.
    const CONNECTIONS: u64 = 100;
    const SIZE: usize = 100;
    let listener = server
        .spawn(|| TcpListener::bind("10.253.13.2:8080").expect("listen"))
        .join()
        .unwrap();
    let serving = std::thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; SIZE];
            stream.read_exact(&mut request).expect("a request");
            stream.write_all(&[b'r'; SIZE]).expect("a reply");
        }
    });
    let start = Arc::new(Barrier::new(CONNECTIONS as usize));
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let start = Arc::clone(&start);
            client.spawn(move || {
                start.wait();
                let mut stream = TcpStream::connect(VIRTUAL).expect("connect");
                stream.write_all(&[b'q'; SIZE]).expect("a request");
                let mut reply = Vec::new();
                stream.read_to_end(&mut reply).expect("a reply");
                reply.len() as u64
            })
        })
        .collect();
    let received: u64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    serving.join().unwrap();
    drop(paused);
    let moved = CONNECTIONS * SIZE as u64;
    assert_eq!(received, moved);

    let client_flow = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .namespace(client.inode())
        .destination_port(80);
    let got = agent.wait_for_totals(&client_flow, |t| t.connections_closed >= CONNECTIONS);
    assert_eq!((got.bytes_sent, got.bytes_received), (moved, moved));
    let resyncs = agent.records().iter().rev().find_map(|r| match r {
        Record::Health(health) => health.get("nat_resyncs")?.as_u64(),
        _ => None,
    });
    assert!(resyncs >= Some(1), "the overflow is counted: {resyncs:?}");
    let flows = agent.poll_flows(&client_flow);
    assert_translated(
        &flows,
        "destination",
        "10.253.13.2".parse().ok(),
        Some(8080),
    );
}

/// The agent stopped by SIGSTOP until dropped (also on a panic).
struct Paused(u32);

impl Paused {
    fn stop(agent: &Agent) -> Paused {
        let pid = agent.pid();
        // SAFETY: kill(2) on the test's own child.
        assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGSTOP) }, 0);
        // Stopped once its state says so (the signal is asynchronous).
        while !agent.is_stopped() {
            std::thread::sleep(Duration::from_millis(1));
        }
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0 as i32, libc::SIGCONT) };
    }
}
