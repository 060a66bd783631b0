//! The `bpf(2)` commands flowtel issues itself, where aya 0.14 lacks them:
//! batch reads, lookup-and-delete on a hash map, map iterators, a
//! program's info beyond what aya reads (its skipped runs).

use std::io;

/// `enum bpf_cmd` values from `linux/bpf.h`.
pub const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
pub const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
pub const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
pub const BPF_LINK_CREATE: libc::c_long = 28;
pub const BPF_ITER_CREATE: libc::c_long = 33;

/// `bpf(cmd, attr)`: the kernel's non-negative answer (a new descriptor for
/// the commands that make one), or errno. The kernel may write into `attr`
/// (batch commands return their count there), also on failure.
///
/// # Safety
///
/// `attr` must be a `#[repr(C)]` struct laid out as `cmd`'s member of
/// `union bpf_attr`, and every pointer in it must be valid for what `cmd`
/// reads and writes through it for the duration of the call.
pub unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: the caller vouches for attr; its size is passed, and the
    // kernel treats the rest of bpf_attr as zero.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}
