//! TCP over the IPv6 loopback: bytes exact, reported as `network.type` ipv6.

use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::traffic::tcp;

#[test]
fn ipv6_loopback_tcp_bytes_are_exact() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    let truth = tcp::transfer("::1".parse().unwrap(), 2 << 20, 512 << 10);

    // The client's ephemeral port is collapsed: its flow has no source.port.
    let [client, server] = agent.assert_transfer_counted(&truth);

    for filter in [&client, &server] {
        let flows = agent.poll_flows(filter);
        assert!(!flows.is_empty());
        for flow in flows {
            assert_eq!(flow.attributes.network_type.as_deref(), Some("ipv6"));
            assert_eq!(flow.attributes.source_address.as_deref(), Some("::1"));
            assert_eq!(flow.attributes.destination_address.as_deref(), Some("::1"));
        }
    }
}
