//! What must hold before any program is loaded: privileges and kernel BTF.

use std::path::{Path, PathBuf};

use crate::Error;

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Checks the effective capabilities this process needs: CAP_BPF (load
/// programs and maps), CAP_PERFMON (tracing programs that read kernel
/// memory), CAP_NET_ADMIN (cgroup socket hooks). CAP_SYS_ADMIN stands in for
/// the first two, as the kernel allows.
pub fn check_capabilities() -> Result<(), Error> {
    let missing = missing_effective_capabilities();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingCapabilities {
            missing: missing.join(", "),
        })
    }
}

/// The capabilities this process lacks, by name.
pub fn missing_effective_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    missing_capabilities(effective_capabilities(&status).unwrap_or(0))
}

fn effective_capabilities(proc_status: &str) -> Option<u64> {
    let hex = proc_status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

fn missing_capabilities(effective: u64) -> Vec<&'static str> {
    let has = |cap: u32| effective & (1 << cap) != 0;
    let admin = has(CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !admin {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !admin {
        missing.push("CAP_PERFMON");
    }
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    missing
}

pub const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn check_btf() -> Result<(), Error> {
    if Path::new(KERNEL_BTF).exists() {
        Ok(())
    } else {
        Err(Error::BtfMissing)
    }
}

/// The cgroup v2 directory to attach the cgroup hooks to: the configured one,
/// or the first cgroup2 mount.
pub fn cgroup_v2_root(configured: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(path) = configured {
        return Ok(path.to_owned());
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    first_cgroup2_mount(&mounts).ok_or(Error::NoCgroupV2)
}

fn first_cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(target))
    })
}

/// Lets older kernels (before memcg accounting, 5.11) lock enough memory for
/// the maps. Harmless where it is not needed.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct; failure is fine.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_capabilities() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
    }

    #[test]
    fn names_each_missing_capability() {
        assert_eq!(
            missing_capabilities(0),
            vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"]
        );
        assert!(
            missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_NET_ADMIN))
                .is_empty()
        );
        assert!(missing_capabilities((1 << CAP_SYS_ADMIN) | (1 << CAP_NET_ADMIN)).is_empty());
    }

    #[test]
    fn finds_the_cgroup2_mount_in_a_hybrid_layout() {
        let mounts = "cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            first_cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(first_cgroup2_mount("proc /proc proc rw 0 0\n"), None);
    }
}
