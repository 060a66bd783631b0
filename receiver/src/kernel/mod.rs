//! The eBPF side: checks that the kernel and privileges allow it, loads and
//! attaches the programs, and reads what they record.

pub mod abi;
pub mod batch;
pub mod events;
pub mod iter;
pub mod misses;
pub mod pins;
pub mod preflight;
pub mod programs;
pub mod reap;
pub mod sys;

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}
