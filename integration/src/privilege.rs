//! The privileges the end-to-end tests need, checked up front so that a test
//! run without them fails with one clear sentence instead of an obscure error
//! from the agent or from `ip netns` (and never passes by skipping).

/// Capabilities the tests need: the agent's own (load programs, read kernel
/// memory through tracepoints, attach to the cgroup root) and those to make
/// network namespaces, veth pairs and nftables rules.
const NEEDED: [(u32, &str); 4] = [
    (39, "CAP_BPF"),
    (38, "CAP_PERFMON"),
    (12, "CAP_NET_ADMIN"),
    (21, "CAP_SYS_ADMIN"),
];

/// Panics unless this process runs as root (effective uid 0) with CAP_BPF,
/// CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN in its effective set.
///
/// Tests that load eBPF programs call this first: without privilege they fail
/// loudly, so a CI run without root cannot look green.
pub fn require_root() {
    if let Err(problem) = check() {
        panic!(
            "flowtel's end-to-end tests need root: {problem}. They load eBPF programs \
             and create network namespaces, so they fail rather than skip without \
             privilege. Run them as root, e.g. `sudo -E env \"PATH=$PATH\" cargo test --workspace`."
        );
    }
}

/// A copy of a binary in a fresh world-readable directory, so that another
/// user can run it (the checkout may sit under a private home). Removed on
/// drop.
pub struct SharedCopy {
    dir: std::path::PathBuf,
    /// The copy.
    pub binary: std::path::PathBuf,
}

impl SharedCopy {
    /// Copies `binary` into a new 0755 directory under the temp dir.
    pub fn of(binary: impl AsRef<std::path::Path>) -> SharedCopy {
        use std::os::unix::fs::PermissionsExt as _;
        let binary = binary.as_ref();
        let name = binary.file_name().expect("a binary has a file name");
        // Unique per copy: tests of one binary run in parallel.
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "flowtel-shared-{}-{n}-{}",
            std::process::id(),
            name.to_string_lossy()
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let copy = dir.join(name);
        std::fs::copy(binary, &copy).expect("copy the binary");
        SharedCopy { dir, binary: copy }
    }
}

impl Drop for SharedCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The capability sets of a process, from `/proc/PID/status`, as hex masks:
/// `[("CapInh", ..), ("CapPrm", ..), ("CapEff", ..), ("CapBnd", ..), ("CapAmb", ..)]`.
pub fn capability_sets(pid: u32) -> Vec<(String, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .filter_map(|line| {
            let (name, hex) = line.split_once(":\t")?;
            name.starts_with("Cap")
                .then(|| (name.to_owned(), u64::from_str_radix(hex.trim(), 16).ok()))
                .and_then(|(name, mask)| Some((name, mask?)))
        })
        .collect()
}

/// Says what is missing, if anything.
fn check() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("the effective uid is {euid}, not 0"));
    }
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status ({e})"))?;
    let effective = effective_capabilities(&status)
        .ok_or_else(|| "no CapEff line in /proc/self/status".to_owned())?;
    let missing = missing(effective);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the effective capability set lacks {}",
            missing.join(", ")
        ))
    }
}

/// The names of the needed capabilities absent from `effective`.
fn missing(effective: u64) -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(bit, _)| effective & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The effective capability mask from the text of `/proc/<pid>/status`.
fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_mask() {
        let status = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1fffeffffff));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
    }

    #[test]
    fn names_every_missing_capability() {
        // Only CAP_NET_ADMIN set.
        assert_eq!(
            missing(1u64 << 12),
            ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]
        );
        assert!(missing(0x1fffeffffff).is_empty());
    }
}
