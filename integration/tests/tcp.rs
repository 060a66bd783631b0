//! Loopback TCP, 10 MiB one way and 1 MiB back: flowtel's counts for the
//! client's and the server's flow equal what the sockets moved, byte for byte.

use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::traffic::tcp;

#[test]
fn loopback_tcp_bytes_are_exact_in_both_directions() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 10 << 20, 1 << 20);
    assert_eq!(
        (truth.client_sent, truth.server_received),
        (10 << 20, 10 << 20)
    );
    assert_eq!(
        (truth.server_sent, truth.client_received),
        (1 << 20, 1 << 20)
    );

    // The client's ephemeral port is collapsed: its flow has no source.port.
    let [client, server] = agent.assert_transfer_counted(&truth);

    for filter in [&client, &server] {
        let flows = agent.poll_flows(filter);
        assert!(!flows.is_empty());
        for flow in flows {
            assert_eq!(flow.attributes.network_type.as_deref(), Some("ipv4"));
            assert_eq!(flow.attributes.source_address.as_deref(), Some("127.0.0.1"));
            assert_eq!(
                flow.attributes.destination_address.as_deref(),
                Some("127.0.0.1")
            );
        }
    }
}
