//! Least privilege: loading and attaching the eBPF programs needs CAP_BPF,
//! CAP_PERFMON and CAP_NET_ADMIN; reading their maps through the file
//! descriptors the agent already holds needs none. So once the programs are
//! attached, every capability goes. Linux keeps capabilities per thread:
//! the runtime's threads drop theirs as they start, the main thread after
//! attaching; only the receiver's namespace thread keeps CAP_SYS_ADMIN and
//! CAP_SYS_PTRACE (when the agent has them) to enter containers' network
//! namespaces, and its conntrack thread CAP_NET_ADMIN (conntrack dumps ask
//! for it) with those two.

use anyhow::Context as _;
use caps::{CapSet, Capability};

/// Clears the calling thread's effective, permitted, inheritable and
/// ambient sets: nothing it (or a child it starts) does from here on runs
/// with a capability.
pub fn drop_all() -> anyhow::Result<()> {
    keep_only(&caps::CapsHashSet::new())
}

/// Narrows the calling thread's effective and permitted sets to `keep` and
/// clears the inheritable and ambient ones, so a child inherits nothing.
fn keep_only(keep: &caps::CapsHashSet) -> anyhow::Result<()> {
    for set in [CapSet::Ambient, CapSet::Inheritable] {
        caps::clear(None, set)
            .with_context(|| format!("could not clear the {set:?} capability set"))?;
    }
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, keep)
            .with_context(|| format!("could not narrow the {set:?} capability set"))?;
    }
    Ok(())
}

/// What the main thread keeps once the programs are attached: nothing,
/// or, where the kernel checks privilege on every bpf(2) command (kernels
/// before 5.x with `kernel.unprivileged_bpf_disabled` set), what reading
/// the maps needs: CAP_BPF, or CAP_SYS_ADMIN where CAP_BPF is not held.
pub fn drop_after_attach(reads_need_privilege: bool) -> anyhow::Result<()> {
    if !reads_need_privilege {
        return drop_all();
    }
    let have = caps::read(None, CapSet::Permitted).context("could not read the capabilities")?;
    let keep: caps::CapsHashSet = [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN]
        .into_iter()
        .filter(|cap| have.contains(cap))
        .take(1)
        .collect();
    keep_only(&keep)?;
    tracing::info!(
        "flowtel: this kernel checks privilege on every bpf(2) call: keeping {:?} to read the maps, dropping every other capability",
        keep
    );
    Ok(())
}
