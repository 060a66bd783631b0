//! flowtel's receiver: loads the eBPF programs in `bpf-programs/`, attaches
//! them, and turns the kernel's per-connection counters into
//! [`ConnectionSample`]s.
//!
//! ```no_run
//! # async fn run() -> Result<(), receiver::Error> {
//! let mut receiver = receiver::Receiver::start(&receiver::Config::default())?;
//! let poll = receiver.poll()?;
//! for sample in &poll.samples {
//!     println!("{} -> {}: {} bytes sent", sample.local, sample.remote, sample.counters.bytes_sent);
//! }
//! # Ok(()) }
//! ```

mod config;
mod sample;

pub use config::{Config, ProbeSet};
pub use sample::{
    CloseError, ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, Poll,
    ProcessInfo, ReceiverHealth, Rtt, Transport,
};

/// Why the receiver could not start or poll.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("placeholder")]
    Placeholder,
}

/// The running kernel side. Dropping it detaches every program.
pub struct Receiver {}

impl Receiver {
    /// Checks privileges and kernel support, loads and attaches the programs.
    /// Must be called inside a tokio runtime: closed connections are read from
    /// the ring buffer by a background task.
    pub fn start(_config: &Config) -> Result<Receiver, Error> {
        todo!()
    }

    /// Reads every tracked connection: open ones with their counters so far,
    /// and each connection closed since the last poll, once, with its final
    /// counters.
    pub fn poll(&mut self) -> Result<Poll, Error> {
        todo!()
    }
}

/// This host's name, as `host.name` reports it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
