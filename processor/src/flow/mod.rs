//! What a flow is ([`FlowKey`], with the UDP client-end rules that shape
//! it) and what is counted for it ([`FlowStats`]).

mod client_end;
mod key;
mod stats;

pub use client_end::{udp_client_end, ClientEnd};
pub use key::{FlowKey, NetworkType, BUILT_IN_ATTRIBUTES};
pub use stats::{ConnectionFailures, FlowStats, RttSummary};
