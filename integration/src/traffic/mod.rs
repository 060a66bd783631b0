//! Traffic whose true size is known: each generator moves bytes with
//! `std::net` on threads of this process, counts what every socket call
//! actually sent and received, and returns those counts with the ports it
//! used, so a test can find its flows in the agent's output and compare.
//!
//! Every socket has a timeout, so a generator fails instead of hanging.

pub mod tcp;
pub mod udp;

use std::time::Duration;

/// How long any one socket operation may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A buffer of `len` bytes with a recognisable pattern.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}
