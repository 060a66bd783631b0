//! Connecting to a closed port: one flow, one failed connection, reason
//! refused.

use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::tcp;

#[test]
fn a_refused_connection_is_one_failure_with_reason_refused() {
    privilege::require_root();
    let mut agent = Agent::start(env!("CARGO_BIN_EXE_flowtel"), Duration::from_secs(1));

    let port = tcp::connect_refused("127.0.0.1".parse().unwrap());

    let attempt = FlowFilter::this_process().tcp().destination_port(port);
    let got = agent.wait_for_totals(&attempt, |t| t.failed("refused") >= 1);
    assert_eq!(got.failed("refused"), 1, "{got:#?}");
    assert_eq!(got.failed("reset"), 0, "{got:#?}");
    assert_eq!(got.failed("timeout"), 0, "{got:#?}");
    assert_eq!((got.bytes_sent, got.bytes_received), (0, 0));
    let flows = agent.sum_by_flow(&attempt);
    assert_eq!(flows.len(), 1, "{:#?}", flows.keys().collect::<Vec<_>>());
}
