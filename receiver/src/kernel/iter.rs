//! BPF iterators: the TCP walks (over one network namespace's TCP sockets:
//! the refresh before each poll, the discovery at start) and the owners walk
//! (over every task's open files).
//!
//! The link and each run are made here with two `bpf(2)` calls (`sys`):
//! a run must be possible from another thread (one that entered another
//! network namespace), with a link that is `Send` and `Sync`.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::sys::{self, BPF_ITER_CREATE, BPF_LINK_CREATE};

/// `enum bpf_attach_type` value from `linux/bpf.h`.
const BPF_TRACE_ITER: u32 = 28;

/// The `link_create` member of `union bpf_attr`, as far as iterators use it.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: u32,
}

/// The `iter_create` member of `union bpf_attr`.
#[repr(C)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
}

/// An attached iterator; detached when dropped.
#[derive(Debug)]
pub struct BpfIterator {
    link: OwnedFd,
}

impl BpfIterator {
    /// Attaches the loaded iterator `program` (of a kind that takes no
    /// target: TCP sockets, task files).
    pub fn attach(program: BorrowedFd<'_>) -> io::Result<BpfIterator> {
        let mut attr = LinkCreateAttr {
            prog_fd: program.as_raw_fd() as u32,
            target_fd: 0,
            attach_type: BPF_TRACE_ITER,
            flags: 0,
            iter_info: 0,
            iter_info_len: 0,
            _pad: 0,
        };
        // SAFETY: attr is link_create's layout and holds no pointers.
        let link = new_fd(unsafe { sys::bpf(BPF_LINK_CREATE, &mut attr) }?);
        Ok(BpfIterator { link })
    }

    /// Runs the program over everything it iterates, once (a TCP iterator:
    /// in the calling thread's network namespace).
    pub fn run(&self) -> io::Result<()> {
        let mut attr = IterCreateAttr {
            link_fd: self.link.as_fd().as_raw_fd() as u32,
            flags: 0,
        };
        // SAFETY: attr is iter_create's layout and holds no pointers.
        let mut iterator = File::from(new_fd(unsafe { sys::bpf(BPF_ITER_CREATE, &mut attr) }?));
        // The program writes nothing; reading to the end runs it.
        let mut sink = [0u8; 64];
        while iterator.read(&mut sink)? > 0 {}
        Ok(())
    }
}

/// The descriptor a successful `BPF_LINK_CREATE` or `BPF_ITER_CREATE`
/// returned, now owned.
fn new_fd(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel made this descriptor for us and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layouts_match_the_kernel() {
        // linux/bpf.h: iter_info is an __aligned_u64 at offset 16 of
        // link_create.
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, iter_info), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateAttr, iter_info_len), 24);
        assert_eq!(std::mem::size_of::<IterCreateAttr>(), 8);
    }
}
