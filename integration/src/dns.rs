//! DNS for the `dns` tests: a real server (Debian's unbound) on an address
//! of the test's choosing, and a client the test controls, so that every
//! query's id, transport and time are known.
//!
//! The server answers, under `flowtel.`, `ok.` with an A record of the
//! test's choosing (and `alias.` with a CNAME to it), `nx.` with NXDOMAIN,
//! `rf.` with REFUSED and `sf.` with SERVFAIL (its forwarder is a dead port).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
pub use hickory_proto::rr::RecordType;
use hickory_proto::rr::{Name, RData};

use crate::netns::NetNs;
use crate::record::Record;

/// A running unbound, stopped (by its pid) and its directory removed on drop.
pub struct Unbound {
    child: Child,
    dir: PathBuf,
    /// Where it listens (port 53, UDP and TCP).
    pub server: SocketAddr,
}

impl Unbound {
    /// Starts unbound on `address`:53 (IPv4 or IPv6), in `netns` if given,
    /// answering `ok.flowtel` with `answer` (an A or an AAAA record);
    /// returns once it answers.
    pub fn start(
        address: impl Into<IpAddr>,
        answer: impl Into<IpAddr>,
        netns: Option<&NetNs>,
    ) -> Unbound {
        let (address, answer) = (address.into(), answer.into());
        let answer_type = if answer.is_ipv6() { "AAAA" } else { "A" };
        let ip6 = if address.is_ipv6() { "yes" } else { "no" };
        let tag = format!("{address}-{}", std::process::id()).replace(':', "_");
        let dir = std::env::temp_dir().join(format!("flowtel-unbound-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("unbound's directory");
        let config = format!(
            r#"server:
    interface: {address}
    port: 53
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    access-control: 0.0.0.0/0 allow
    access-control: ::/0 allow
    do-ip6: {ip6}
    module-config: "iterator"
    outbound-msg-retry: 1
    local-zone: "ok.flowtel." static
    local-data: "ok.flowtel. 60 IN {answer_type} {answer}"
    local-zone: "alias.flowtel." static
    local-data: "alias.flowtel. 30 IN CNAME ok.flowtel."
    local-zone: "ready.flowtel." static
    local-data: "ready.flowtel. 60 IN A 192.0.2.1"
    local-zone: "nx.flowtel." always_nxdomain
    local-zone: "rf.flowtel." always_refuse
forward-zone:
    name: "sf.flowtel."
    forward-addr: 127.0.0.1@1
"#,
            dir = dir.display()
        );
        let path = dir.join("unbound.conf");
        std::fs::write(&path, config).expect("unbound.conf");
        let mut command = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name(), "unbound"]);
                c
            }
            None => Command::new("unbound"),
        };
        let child = command
            .arg("-d")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start unbound ({e}): apt-get install -y unbound"));
        let unbound = Unbound {
            child,
            dir,
            server: SocketAddr::new(address, 53),
        };
        unbound.wait_ready(netns);
        unbound
    }

    fn wait_ready(&self, netns: Option<&NetNs>) {
        let server = self.server;
        let ready = move || {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if query_udp(server, "ready.flowtel", Duration::from_millis(200)).is_some() {
                    return true;
                }
            }
            false
        };
        let ok = match netns {
            Some(ns) => ns.spawn(ready).join().expect("readiness thread"),
            None => ready(),
        };
        assert!(ok, "unbound did not answer at {server} within 10s");
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the child this value started.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One lookup as the test's client saw it.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The transaction id the client chose.
    pub id: u16,
    /// The client's end.
    pub client: SocketAddr,
    /// `NOERROR`, `NXDOMAIN` ...
    pub code: String,
    /// From just before the send to just after the answer arrived.
    pub took: Duration,
    /// The A and AAAA records of the answer.
    pub addresses: Vec<IpAddr>,
}

fn next_id() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = (std::process::id() as u16).wrapping_mul(40503);
    seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A query for `name`'s record of `record_type`, with transaction id `id`,
/// as sent on the wire over UDP.
pub fn query(name: &str, id: u16, record_type: RecordType) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_str(&format!("{name}.")).expect("a DNS name"),
            record_type,
        ));
    message.to_vec().expect("a query encodes")
}

fn lookup(id: u16, client: SocketAddr, took: Duration, answer: &[u8]) -> Lookup {
    let message = Message::from_vec(answer).expect("the server's answer parses");
    assert_eq!(message.id(), id, "the answer's id");
    Lookup {
        id,
        client,
        code: code_name(message.response_code().into()),
        took,
        addresses: message
            .answers()
            .iter()
            .filter_map(|r| match r.data() {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                _ => None,
            })
            .collect(),
    }
}

fn code_name(code: u16) -> String {
    match code {
        0 => "NOERROR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        5 => "REFUSED",
        _ => "OTHER",
    }
    .to_owned()
}

/// Asks `server` for `name`'s A record over UDP, once; None when no answer
/// came within `wait`.
pub fn query_udp(server: SocketAddr, name: &str, wait: Duration) -> Option<Lookup> {
    query_udp_for(server, name, RecordType::A, wait)
}

/// [`query_udp`] for a record of `record_type` (AAAA).
pub fn query_udp_for(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    wait: Duration,
) -> Option<Lookup> {
    let any = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    let socket = UdpSocket::bind(any).expect("a UDP socket");
    socket.connect(server).expect("connect to the server");
    socket.set_read_timeout(Some(wait)).expect("a read timeout");
    let id = next_id();
    let bytes = query(name, id, record_type);
    let started = Instant::now();
    socket.send(&bytes).expect("send the query");
    let mut buffer = [0u8; 4096];
    let n = socket.recv(&mut buffer).ok()?;
    let took = started.elapsed();
    Some(lookup(id, socket.local_addr().unwrap(), took, &buffer[..n]))
}

/// Asks `server` for `name`'s A record over UDP from an unconnected socket
/// (sendto, then recvfrom with the sender's address: the reader names its
/// server itself, no socket does).
pub fn query_udp_unconnected(server: SocketAddr, name: &str) -> Lookup {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("a UDP socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    let id = next_id();
    let bytes = query(name, id, RecordType::A);
    let started = Instant::now();
    socket.send_to(&bytes, server).expect("send the query");
    let mut buffer = [0u8; 4096];
    let (n, from) = socket.recv_from(&mut buffer).expect("an answer");
    let took = started.elapsed();
    assert_eq!(from, server, "the answer's sender");
    lookup(id, socket.local_addr().unwrap(), took, &buffer[..n])
}

/// Debian's `dig` asking `server` for `name`'s A record, once, over TCP
/// when `tcp`; its answer's response code (`status:`). dig reads UDP
/// answers with recvmsg on a connected socket, TCP ones with read.
pub fn dig(server: SocketAddr, name: &str, tcp: bool) -> String {
    let mut command = Command::new("dig");
    command
        .arg(format!("@{}", server.ip()))
        .args(["+tries=1", "+time=5", name, "A"]);
    if tcp {
        command.arg("+tcp");
    }
    let output = command
        .output()
        .expect("dig (apt-get install bind9-dnsutils)");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("dig printed no status: {text}"))
        .to_owned()
}

/// Asks `server` for `name`'s A record over TCP (length, then message, in
/// one write).
pub fn query_tcp(server: SocketAddr, name: &str) -> Lookup {
    let mut stream = TcpStream::connect(server).expect("connect to the server over TCP");
    stream.set_nodelay(true).unwrap();
    let id = next_id();
    let bytes = query(name, id, RecordType::A);
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    let started = Instant::now();
    stream.write_all(&framed).expect("send the query");
    let mut length = [0u8; 2];
    stream.read_exact(&mut length).expect("the answer's length");
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut answer).expect("the answer");
    let took = started.elapsed();
    lookup(id, stream.local_addr().unwrap(), took, &answer)
}

/// What the agent's `dns` window records say of one series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    /// `requests`, summed over the windows.
    pub requests: u64,
    /// `answered`, summed over the windows.
    pub answered: u64,
    /// The greatest `duration_max_us` of the windows.
    pub max_us: u64,
    /// The namespaces (`network.namespace`) the series were in.
    pub namespaces: Vec<u64>,
}

/// The agent's `dns` records of lookups to `server`, summed by question
/// name, response code and transport.
pub fn counted(
    records: &[Record],
    server: IpAddr,
) -> std::collections::BTreeMap<(String, String, String), Counted> {
    let mut out: std::collections::BTreeMap<(String, String, String), Counted> = Default::default();
    for record in records {
        let Record::Other(value) = record else {
            continue;
        };
        if value["record"] != "dns" {
            continue;
        }
        let a = &value["attributes"];
        let text = |key: &str| a[key].as_str().unwrap_or("-").to_owned();
        if text("destination.address") != server.to_string() {
            continue;
        }
        let key = (
            text("dns.question.name"),
            text("dns.response.code"),
            text("network.transport"),
        );
        let entry = out.entry(key).or_default();
        entry.requests += value["requests"].as_u64().expect("requests is a number");
        entry.answered += value["answered"].as_u64().expect("answered is a number");
        entry.max_us = entry
            .max_us
            .max(value["duration_max_us"].as_u64().unwrap_or(0));
        if let Some(ns) = a["network.namespace"].as_u64() {
            if !entry.namespaces.contains(&ns) {
                entry.namespaces.push(ns);
            }
        }
    }
    out
}
