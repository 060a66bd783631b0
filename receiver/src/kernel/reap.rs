//! Removes a finished connection from the map and returns its last value in
//! one step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, Linux 5.14+ for hash maps), so
//! that bytes the kernel adds between a read and a delete cannot be lost.
//! aya 0.14 offers this command only for queues and stacks. Older kernels
//! answer ENOTSUPP: there the entry is read, then deleted (what moves in
//! between is lost; it is rare, since only entries that are done, closed
//! or released or idle, are taken), said once in the log.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};

use super::abi::{ConnInfo, ConnKey};
use super::sys::{self, BPF_MAP_LOOKUP_AND_DELETE_ELEM};

/// The `bpf_attr` layout of the map element commands.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The kernel's `ENOTSUPP` (not in libc: it is kernel-internal).
const ENOTSUPP: i32 = 524;

/// Set once the kernel has said it cannot look up and delete in one step.
static IN_TWO_STEPS: AtomicBool = AtomicBool::new(false);

/// Deletes `key`, returning the value it held; None when it is already gone.
pub fn take_entry(
    map: &mut BpfHashMap<MapData, ConnKey, ConnInfo>,
    key: &ConnKey,
) -> io::Result<Option<ConnInfo>> {
    if !IN_TWO_STEPS.load(Ordering::Relaxed) {
        match take_at_once(map, key) {
            Err(error) if error.raw_os_error() == Some(ENOTSUPP) => {
                IN_TWO_STEPS.store(true, Ordering::Relaxed);
                tracing::info!(
                    "this kernel cannot look up and delete a hash map entry in one step (Linux 5.14+): finished connections are read, then removed"
                );
            }
            result => return result,
        }
    }
    let value = match map.get(key, 0) {
        Ok(value) => value,
        Err(aya::maps::MapError::KeyNotFound) => return Ok(None),
        Err(error) => return Err(io::Error::other(error)),
    };
    match map.remove(key) {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(Some(value)),
        Err(aya::maps::MapError::SyscallError(error))
            if error.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(Some(value))
        }
        Err(error) => Err(io::Error::other(error)),
    }
}

fn take_at_once(
    map: &BpfHashMap<MapData, ConnKey, ConnInfo>,
    key: &ConnKey,
) -> io::Result<Option<ConnInfo>> {
    let mut value = MaybeUninit::<ConnInfo>::uninit();
    let mut attr = MapElemAttr {
        map_fd: map_fd(map),
        _pad: 0,
        key: key as *const ConnKey as u64,
        value: value.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: attr is the element commands' layout and points to valid key
    // and value buffers of the sizes the map was created with, which outlive
    // the call.
    match unsafe { sys::bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) } {
        // SAFETY: the kernel filled the value on success; ConnInfo is valid
        // for any bit pattern.
        Ok(_) => Ok(Some(unsafe { value.assume_init() })),
        Err(error) if error.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(error) => Err(error),
    }
}

pub fn map_fd(map: &BpfHashMap<MapData, ConnKey, ConnInfo>) -> u32 {
    IterableMap::map(map).fd().as_fd().as_raw_fd() as u32
}
