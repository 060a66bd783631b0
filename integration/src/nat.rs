//! Network namespaces joined into small networks for the NAT tests: a
//! client and a peer, or a client, a router and a server, and nftables NAT
//! rules in them.

use crate::netns::NetNs;

/// Joins `a` and `b` with a veth pair, `a_addr` and `b_addr` (/24) on it.
pub fn link(a: &NetNs, a_addr: &str, b: &NetNs, b_addr: &str, name: &str) {
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

/// `rule` in a nat chain of `ns` on `hook` (`output`, `prerouting`,
/// `postrouting`).
pub fn nat_rule(ns: &NetNs, hook: &str, rule: &[&str]) {
    // Destination NAT before the filters, source NAT after them.
    let priority = if hook == "postrouting" { 100 } else { -100 };
    let chain = format!("{{ type nat hook {hook} priority {priority}; }}");
    ns.exec("nft", &["add", "table", "ip", "flowtel_nat"]);
    ns.exec("nft", &["add", "chain", "ip", "flowtel_nat", hook, &chain]);
    let mut add = vec!["add", "rule", "ip", "flowtel_nat", hook];
    add.extend_from_slice(rule);
    ns.exec("nft", &add);
}

/// A DNAT of `protocol` from `to_virtual` (ADDRESS:PORT) to `to_server`.
pub fn dnat(ns: &NetNs, hook: &str, protocol: &str, to_virtual: &str, to_server: &str) {
    let (address, port) = to_virtual.split_once(':').unwrap();
    let rule = [
        "ip", "daddr", address, protocol, "dport", port, "dnat", "to", to_server,
    ];
    nat_rule(ns, hook, &rule);
}

/// A client and a peer: `<net>.1` — `<net>.2`, the client's default
/// route through the peer (the route is looked up before an output chain
/// rewrites the destination: a virtual address needs one).
pub fn pair(role: &str, net: &str) -> [NetNs; 2] {
    let client = NetNs::create(&format!("{role}-c"));
    let peer = NetNs::create(&format!("{role}-p"));
    link(
        &client,
        &format!("{net}.1"),
        &peer,
        &format!("{net}.2"),
        "veth0",
    );
    client.ip(&["route", "add", "default", "via", &format!("{net}.2")]);
    [client, peer]
}

/// A client, a router and a server: `<client_net>.1` — `<client_net>.2`
/// | `<server_net>.1` — `<server_net>.2`, routed through the router.
pub fn routed(role: &str, client_net: &str, server_net: &str) -> [NetNs; 3] {
    let [client, router] = pair(role, client_net);
    let server = NetNs::create(&format!("{role}-s"));
    let (inner, outer) = (format!("{server_net}.1"), format!("{server_net}.2"));
    link(&router, &inner, &server, &outer, "veth1");
    server.ip(&["route", "add", "default", "via", &inner]);
    router.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    [client, router, server]
}
