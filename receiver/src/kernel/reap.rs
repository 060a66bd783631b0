//! Removes a finished connection from the map and returns its last value in
//! one step (`BPF_MAP_LOOKUP_AND_DELETE_ELEM`, Linux 5.14+ for hash maps), so
//! that bytes the kernel adds between a read and a delete cannot be lost.
//! aya 0.14 offers this command only for queues and stacks.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};

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

/// Deletes `key`, returning the value it held; None when it is already gone.
pub fn take_entry(
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
