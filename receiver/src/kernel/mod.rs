//! The eBPF side: checks that the kernel and privileges allow it, loads and
//! attaches the programs, and reads what they record.

pub mod abi;
pub mod batch;
pub mod events;
pub mod iter;
pub mod pins;
pub mod preflight;
pub mod programs;
pub mod reap;
pub mod sys;
