//! Least privilege: loading and attaching the eBPF programs needs CAP_BPF,
//! CAP_PERFMON and CAP_NET_ADMIN; reading their maps through the file
//! descriptors the agent already holds needs none. So once the programs are
//! attached, every capability goes.

use anyhow::Context as _;
use caps::CapSet;

/// Clears the effective, permitted, inheritable and ambient sets: nothing
/// this process (or a child) does from here on runs with a capability.
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
