//! Two network namespaces joined by a veth pair, with an nftables rule in the
//! receiver's dropping about 5 % of the TCP packets that arrive: the
//! retransmits flowtel reports for the sender equal the kernel's own count for
//! that socket (`tcpi_total_retrans`), and the bytes are still exact.

use std::time::Duration;

use integration::agent::Agent;
use integration::netns::VethPair;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::tcp;

const BYTES: usize = 16 << 20;

#[test]
fn retransmits_equal_the_kernels_count_and_bytes_stay_exact() {
    privilege::require_root();
    let pair = VethPair::create();
    pair.receiver.drop_incoming_tcp(5);
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    let truth = tcp::transfer_between(
        Some(&pair.sender),
        Some(&pair.receiver),
        pair.receiver_addr.into(),
        BYTES,
        0,
    );
    assert_eq!(
        (truth.client_sent, truth.server_received),
        (BYTES as u64, BYTES as u64)
    );
    assert!(
        truth.client_total_retrans > 0,
        "the kernel retransmitted nothing despite the drop rule: {truth:?}"
    );

    let sender = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .namespace(pair.sender.inode())
        .destination_port(truth.server_port);
    let retransmitted = u64::from(truth.client_total_retrans);
    let got = agent.wait_for_totals(&sender, |t| {
        t.bytes_sent >= truth.client_sent && t.retransmits >= retransmitted
    });
    assert_eq!(
        got.retransmits, retransmitted,
        "sender retransmits, {truth:?}"
    );
    assert_eq!(got.bytes_sent, truth.client_sent, "sender bytes sent");
    assert_eq!(
        got.bytes_received, truth.client_received,
        "sender bytes received"
    );

    let receiver = FlowFilter::this_process()
        .tcp()
        .incoming()
        .namespace(pair.receiver.inode())
        .source_port(truth.server_port);
    let got = agent.wait_for_totals(&receiver, |t| t.bytes_received >= truth.server_received);
    assert_eq!(
        got.bytes_received, truth.server_received,
        "receiver bytes received"
    );
    assert_eq!(got.bytes_sent, truth.server_sent, "receiver bytes sent");
}
