//! Runs of flowtel's programs the kernel skipped. A tracing program
//! (tracepoint, kprobe) does not run on a CPU where a run of the same
//! program is already under way; from Linux 7.2 tracepoint programs are
//! preemptible, so a task preempted inside one makes every other task on
//! that CPU skip it until it resumes. The kernel counts those skips per
//! program (`bpf_prog_info.recursion_misses`, Linux 5.12+): their events
//! were not counted, and saying so is all that is left to do.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::programs::Program;
use aya::Ebpf;
use aya_obj::generated::bpf_prog_info;

use crate::kernel::sys;

/// `union bpf_attr`'s `info` member.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The kernel's count of the program's skipped runs; 0 on kernels before
/// 5.12, whose shorter `bpf_prog_info` has no such field.
fn recursion_misses(program: BorrowedFd<'_>) -> io::Result<u64> {
    // SAFETY: bpf_prog_info is plain data; all zeroes is a valid value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr = InfoAttr {
        bpf_fd: program.as_raw_fd() as u32,
        info_len: std::mem::size_of::<bpf_prog_info>() as u32,
        info: &mut info as *mut bpf_prog_info as u64,
    };
    // SAFETY: attr is the `info` member of bpf_attr, and its pointer is to
    // `info_len` writable bytes that outlive the call.
    unsafe { sys::bpf(sys::BPF_OBJ_GET_INFO_BY_FD, &mut attr) }?;
    Ok(info.recursion_misses)
}

/// Whether a program has a recursion guard: the tracing kinds do, cgroup
/// hooks and iterators do not.
fn is_guarded(program: &Program) -> bool {
    matches!(program, Program::BtfTracePoint(_) | Program::KProbe(_))
}

/// The skipped runs seen so far, per program.
#[derive(Debug, Default)]
pub struct MissedRuns {
    seen: BTreeMap<String, u64>,
}

impl MissedRuns {
    /// Reads each loaded tracing program's count; returns the runs lost
    /// (at most), and the counting programs whose count grew since the last
    /// call, with the growth: the runs newly lost.
    pub fn update(&mut self, ebpf: &Ebpf) -> (u64, Vec<(String, u64)>) {
        let mut grew = Vec::new();
        for (name, program) in ebpf.programs().filter(|(_, p)| is_guarded(p)) {
            // A program the kernel refused, or one adopted from a previous
            // agent's pins, is not loaded here: nothing to read.
            let Ok(fd) = program.fd() else { continue };
            let misses = match recursion_misses(fd.as_fd()) {
                Ok(misses) => misses,
                Err(error) => {
                    tracing::debug!(program = name, "cannot read the program's info: {error}");
                    continue;
                }
            };
            let before = self.seen.insert(name.to_owned(), misses).unwrap_or(0);
            if misses > before && !is_twin(name) {
                grew.push((name.to_owned(), misses - before));
            }
        }
        (lost(&self.seen), grew)
    }
}

/// The runs lost, at most: an event is lost only where the kernel skipped
/// the program that counts it, so a twin's skips (events its program took)
/// add nothing; the twin takes some of its program's skips, which the
/// kernel cannot tell apart.
fn lost(skipped: &BTreeMap<String, u64>) -> u64 {
    skipped
        .iter()
        .filter(|(name, _)| !is_twin(name))
        .map(|(_, runs)| runs)
        .sum()
}

/// A twin (bpf-programs/common.h) takes the events its program is skipped
/// for; its own skips lose nothing.
fn is_twin(program: &str) -> bool {
    program.contains("_twin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_twins_skips_lose_nothing() {
        let skipped: BTreeMap<String, u64> = [
            ("flowtel_state", 10),
            ("flowtel_state_twin", 1),
            ("flowtel_recv", 3),
            ("flowtel_recv_twin", 0),
            ("flowtel_retransmit", 2),
        ]
        .into_iter()
        .map(|(name, runs)| (name.to_owned(), runs))
        .collect();
        assert_eq!(lost(&skipped), 10 + 3 + 2);
    }

    #[test]
    fn the_info_attr_is_the_kernels_layout() {
        // linux/bpf.h: struct { __u32 bpf_fd; __u32 info_len; __aligned_u64 info; } info;
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
        assert_eq!(std::mem::offset_of!(InfoAttr, info), 8);
    }
}
