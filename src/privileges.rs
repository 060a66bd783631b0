//! Least privilege: loading and attaching the eBPF programs needs CAP_BPF,
//! CAP_PERFMON and CAP_NET_ADMIN; reading their maps through the file
//! descriptors the agent already holds needs none. So once the programs are
//! attached, every capability goes. Linux keeps capabilities per thread:
//! the runtime's threads drop theirs as they start, the main thread after
//! attaching; only the receiver's namespace thread keeps CAP_SYS_ADMIN and
//! CAP_SYS_PTRACE (when the agent has them) to enter containers' network
//! namespaces.

use anyhow::Context as _;
use caps::CapSet;

/// Clears the calling thread's effective, permitted, inheritable and
/// ambient sets: nothing it (or a child it starts) does from here on runs
/// with a capability.
pub fn drop_all() -> anyhow::Result<()> {
    for set in [
        CapSet::Ambient,
        CapSet::Inheritable,
        CapSet::Effective,
        CapSet::Permitted,
    ] {
        caps::clear(None, set)
            .with_context(|| format!("could not clear the {set:?} capability set"))?;
    }
    Ok(())
}
