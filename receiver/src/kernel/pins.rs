//! Counting through restarts: the maps user space reads and the links that
//! keep the programs attached are pinned in a bpf filesystem, so the
//! programs go on counting while no agent runs, and the next agent picks up
//! the same maps.
//!
//! Pins live in `<pin_dir>/<fingerprint>/`; the fingerprint covers the
//! object and the map sizes, so an agent with other programs or sizes never
//! adopts them: it removes them (which detaches the old programs) and starts
//! afresh.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use aya::maps::MapInfo;

use crate::{Error, ProbeSet};

/// The maps user space reads, directly or through its iterators: these
/// must be the pinned ones on resume, since the programs still attached
/// write to them.
pub const PINNED_MAPS: [&str; 6] = [
    "conns",
    "events",
    "stats",
    "tcp_netns",
    "listeners",
    "cgroup_events",
];

/// What to do with the pins at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPlan {
    /// This object's pin directory.
    pub dir: PathBuf,
    /// Adopt the pinned maps and links: the old programs go on counting and
    /// nothing is loaded or attached.
    pub resume: bool,
}

/// The directory name for this object, probe set and map sizes.
pub fn fingerprint(object: &[u8], probe_set: ProbeSet, max_connections: u32, ring: u32) -> String {
    // Stable across builds of the same bytes; no need for a cryptographic hash.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.hash(&mut hasher);
    format!(
        "{:016x}-{}-{max_connections}-{ring}",
        hasher.finish(),
        format!("{probe_set:?}").to_lowercase()
    )
}

/// Decides whether to resume: the pins of this fingerprint exist, one of
/// `programs` (the required ones' alternatives) has its link pinned, and
/// the pinned connection map is the one the
/// last checkpoint was taken from (`expected_map_id`). Anything else is
/// removed, detaching whatever it kept attached, and a fresh directory made.
pub fn plan(
    pin_dir: &Path,
    fingerprint: &str,
    required_any: &[&str],
    expected_map_id: Option<u32>,
) -> Result<PinPlan, Error> {
    let dir = pin_dir.join(fingerprint);
    let pinned_map_id = MapInfo::from_pin(dir.join("conns"))
        .ok()
        .map(|info| info.id());
    let links_pinned = required_any.iter().any(|name| dir.join(name).exists());
    let resume = links_pinned && pinned_map_id.is_some() && pinned_map_id == expected_map_id;
    if !resume {
        remove_all_under(pin_dir)?;
    } else {
        // Other fingerprints are older agents' leftovers.
        for entry in read_dir(pin_dir)? {
            if entry.file_name() != fingerprint {
                remove(&entry.path())?;
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|source| Error::Pins {
        path: dir.clone(),
        cause: source,
    })?;
    Ok(PinPlan { dir, resume })
}

/// Removes every pin under `pin_dir`, which detaches programs whose links
/// were pinned there. For `flowtel run` without persistence after a run
/// with it, and for tests.
pub fn remove_all_under(pin_dir: &Path) -> Result<(), Error> {
    if !pin_dir.exists() {
        return Ok(());
    }
    for entry in read_dir(pin_dir)? {
        remove(&entry.path())?;
    }
    Ok(())
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>, Error> {
    let pins_error = |source| Error::Pins {
        path: dir.to_owned(),
        cause: source,
    };
    std::fs::read_dir(dir)
        .map_err(pins_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pins_error)
}

fn remove(path: &Path) -> Result<(), Error> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    result.map_err(|source| Error::Pins {
        path: path.to_owned(),
        cause: source,
    })
}

/// Whether `path` lies on a bpf filesystem (pins can live nowhere else).
pub fn is_bpffs(path: &Path) -> bool {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own; the path is a
    // valid NUL-terminated string.
    unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        libc::statfs(c_path.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_changes_with_the_object_and_the_sizes() {
        let a = fingerprint(b"object", ProbeSet::Tracepoint, 65536, 4096);
        assert_eq!(a, fingerprint(b"object", ProbeSet::Tracepoint, 65536, 4096));
        assert_ne!(
            a,
            fingerprint(b"object2", ProbeSet::Tracepoint, 65536, 4096)
        );
        assert_ne!(a, fingerprint(b"object", ProbeSet::Tracepoint, 1024, 4096));
        assert_ne!(a, fingerprint(b"object", ProbeSet::Kprobe, 65536, 4096));
        assert!(a.ends_with("-tracepoint-65536-4096"), "{a}");
    }

    #[test]
    fn a_plain_directory_is_not_bpffs() {
        assert!(!is_bpffs(&std::env::temp_dir()));
    }
}
