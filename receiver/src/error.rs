//! Why the receiver could not start or poll. Each message is one line that
//! says what failed, why, and what to do: the cause is part of the text
//! (the advice follows it), so no variant also names it as its `source`,
//! which would print it twice in an error chain.

use std::path::PathBuf;

/// An error of the kernel side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing capabilities {missing}: flowtel loads eBPF programs and attaches them to the kernel; run it as root or grant {missing} (see README, Privileges)")]
    MissingCapabilities { missing: String },

    #[error("kernel BTF not found at /sys/kernel/btf/vmlinux: flowtel needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (Linux 5.8+; every major distribution kernel has it)")]
    BtfMissing,

    #[error("this kernel has no `{tracepoint}` tracepoint (added in Linux 6.3): set receiver.probes to `auto` to use kprobes instead")]
    TracepointMissing { tracepoint: &'static str },

    #[error("this kernel cannot attach kprobes (built without CONFIG_KPROBES)")]
    KprobesUnavailable,

    #[error("no cgroup v2 mount found in /proc/self/mounts: the UDP peer and socket-release hooks attach to cgroup v2; mount it (mount -t cgroup2 none /sys/fs/cgroup/unified) or set receiver.cgroup_path")]
    NoCgroupV2,

    #[error("opening cgroup {path}: {cause}: set receiver.cgroup_path to a cgroup v2 directory")]
    Cgroup {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("loading the eBPF object: {0}")]
    Load(aya::EbpfError),

    #[error("the kernel verifier rejected program {program}: {reason} (run with RUST_LOG=receiver=debug to see the verifier log)")]
    Verifier {
        program: &'static str,
        reason: String,
    },

    #[error("program {program}'s section does not fit its hook {hook}: flowtel.bpf.o and the loader disagree (a build error)")]
    SectionMismatch { program: &'static str, hook: String },

    #[error("{program} is not attached by the previous agent (its link is not pinned)")]
    NotPinned { program: &'static str },

    #[error("nothing can count TCP connections on this kernel: {why}")]
    NothingCounts { why: String },

    #[error("attaching {hook}: {reason}")]
    Attach { hook: String, reason: String },

    #[error("reading the {map} map: {cause}")]
    Map {
        map: &'static str,
        cause: aya::maps::MapError,
    },

    #[error("reading the ring buffer of closed connections: {0}")]
    RingBuffer(std::io::Error),

    #[error("removing a closed connection from the map: {0}")]
    Reap(std::io::Error),

    #[error("bringing the TCP connections up to date (the TCP iterator): {0}")]
    Refresh(std::io::Error),

    #[error("finding the TCP connections older than the agent (the TCP iterator): {0}")]
    Discover(std::io::Error),

    #[error("finding which process holds each TCP connection (the task_file iterator): {0}")]
    Owners(std::io::Error),

    #[error("preparing to walk network namespaces: {0}")]
    Namespaces(std::io::Error),

    #[error("invalid receiver setting: {0}")]
    InvalidConfig(String),

    #[error("pinning for restarts under {}: {cause}; check that the directory is on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf) and writable", path.display())]
    Pins {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },

    #[error("pinning {what} for restarts: {reason}")]
    Pin { what: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_is_printed_once() {
        let error = Error::Refresh(std::io::Error::other("no such device"));
        assert!(std::error::Error::source(&error).is_none());
        assert_eq!(
            error.to_string(),
            "bringing the TCP connections up to date (the TCP iterator): no such device"
        );
        let error = Error::Cgroup {
            path: "/sys/fs/cgroup".into(),
            cause: std::io::Error::other("denied"),
        };
        assert!(std::error::Error::source(&error).is_none());
    }
}
