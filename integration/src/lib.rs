//! Helpers for flowtel's end-to-end tests: run the real agent, make traffic
//! whose true size is known, and compare the two exactly.
//!
//! The tests themselves live in `integration/tests/` and are test targets of
//! the root `flowtel` package, so that cargo builds the binary and tells them
//! where it is (`CARGO_BIN_EXE_flowtel`). Each one:
//!
//! 1. checks it has the privileges an eBPF agent needs, and fails (never
//!    skips) without them ([`privilege::require_root`]);
//! 2. starts its own agent printing JSON lines ([`agent::Agent`]);
//! 3. makes traffic and keeps the ground truth ([`traffic`], [`netns`]);
//! 4. waits until the agent's poll records for its own flows add up, then
//!    asserts exact equality ([`record::FlowFilter`], [`record::Totals`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use integration::{agent::Agent, privilege, record::FlowFilter, traffic};
//!
//! privilege::require_root();
//! let mut agent = Agent::start("target/debug/flowtel", Duration::from_secs(1));
//! let truth = traffic::tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 1 << 10);
//! let client = FlowFilter::this_process().tcp().outgoing().destination_port(truth.server_port);
//! let totals = agent.wait_for_totals(&client, |t| t.bytes_sent >= truth.client_sent);
//! assert_eq!(totals.bytes_sent, truth.client_sent);
//! ```

#![deny(missing_docs)]

pub mod agent;
pub mod bundle;
pub mod collector;
pub mod dns;
pub mod docker;
pub mod image;
pub mod kmock;
pub mod nat;
pub mod netns;
pub mod otlp_metrics;
pub mod otlp_receiver;
pub mod privilege;
pub mod prometheus;
pub mod record;
pub mod sandbox;
pub mod tmux;
pub mod traffic;
pub mod vm;
