//! What this kernel and this process allow: the facts behind `flowtel
//! check`, gathered without attaching anything.

use std::path::PathBuf;

use aya::Btf;

use crate::kernel::{preflight, programs};
use crate::{Config, Error, Features, ProbeSet};

/// Whether one hook exists on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookSupport {
    /// Tracepoint or kernel function name.
    pub name: &'static str,
    /// Whether the kernel has it.
    pub present: bool,
}

/// The kernel's and the process's support for the receiver.
#[derive(Debug)]
pub struct Support {
    /// `uname -r`.
    pub kernel_release: String,
    /// Whether /sys/kernel/btf/vmlinux exists.
    pub btf: bool,
    /// The capabilities this process lacks (empty: none).
    pub missing_capabilities: Vec<&'static str>,
    /// Where the cgroup hooks would attach.
    pub cgroup_v2: Result<PathBuf, Error>,
    /// The BTF tracepoints of both probe sets.
    pub tracepoints: Vec<HookSupport>,
    /// Whether kprobes can be attached at all (CONFIG_KPROBES).
    pub kprobes_supported: bool,
    /// The kernel functions the kprobe set probes, from /proc/kallsyms.
    pub kprobe_functions: Vec<HookSupport>,
    /// The probe set `run` would use with the given config.
    pub probe_set: Option<ProbeSet>,
}

/// Gathers the facts. Needs no privileges (without them kallsyms may hide
/// nothing but addresses, which are not used).
pub fn support(config: &Config) -> Support {
    let btf = Btf::from_sys_fs().ok();
    let mut tracepoints: Vec<&'static str> = programs::tracepoints(ProbeSet::Tracepoint).collect();
    for tracepoint in programs::tracepoints(ProbeSet::Kprobe) {
        if !tracepoints.contains(&tracepoint) {
            tracepoints.push(tracepoint);
        }
    }
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    Support {
        kernel_release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned()),
        btf: btf.is_some(),
        missing_capabilities: preflight::missing_effective_capabilities(),
        cgroup_v2: preflight::cgroup_v2_root(config.cgroup_path.as_deref()),
        tracepoints: tracepoints
            .into_iter()
            .map(|name| HookSupport {
                name,
                present: btf
                    .as_ref()
                    .is_some_and(|btf| programs::has_tracepoint(btf, name)),
            })
            .collect(),
        kprobes_supported: programs::kprobes_supported(),
        kprobe_functions: programs::kprobe_functions()
            .map(|name| HookSupport {
                name,
                present: kallsyms_has(&kallsyms, name),
            })
            .collect(),
        probe_set: btf
            .as_ref()
            .map(|btf| programs::resolve(config.probes, btf)),
    }
}

/// What loading every program, without attaching, found.
#[derive(Debug)]
pub struct Verified {
    /// The probe set `run` would use.
    pub probe_set: ProbeSet,
    /// How each feature would work.
    pub features: Features,
    /// Each program tried and whether the verifier took it (or why not).
    pub verdicts: Vec<(&'static str, Result<(), String>)>,
}

/// Loads each feature's programs for `config`, without attaching them:
/// which pass this kernel's verifier, and so how each feature would work.
/// Fails only when TCP connections could not be counted. Needs the same
/// privileges as the agent.
pub fn verify_programs(config: &Config) -> Result<Verified, Error> {
    config.validate()?;
    preflight::check_capabilities()?;
    preflight::check_btf()?;
    preflight::raise_memlock_limit();
    let loaded = programs::load_and_attach(config, programs::Stage::Load, None)?;
    Ok(Verified {
        probe_set: loaded.probe_set,
        features: loaded.features,
        verdicts: loaded.verdicts,
    })
}

/// Every program of the object through this kernel's verifier, each on
/// its own (loaded, never attached), also those no feature would try here.
pub fn verify_every_program(
    config: &Config,
) -> Result<Vec<(&'static str, programs::Verdict)>, Error> {
    preflight::check_capabilities()?;
    preflight::check_btf()?;
    preflight::raise_memlock_limit();
    programs::verify_every_program(config)
}

/// Whether /proc/kallsyms lists `function` as a text symbol.
fn kallsyms_has(kallsyms: &str, function: &str) -> bool {
    kallsyms.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_address, kind, name) = (fields.next(), fields.next(), fields.next());
        matches!(kind, Some("t" | "T")) && name == Some(function)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_text_symbols_only() {
        let kallsyms = "ffffffff81000000 T tcp_sendmsg\n\
                        ffffffff81000100 t skb_consume_udp\n\
                        ffffffff82000000 d tcp_cleanup_rbuf\n\
                        ffffffff81000200 t udp_sendmsg.cold\n";
        assert!(kallsyms_has(kallsyms, "tcp_sendmsg"));
        assert!(kallsyms_has(kallsyms, "skb_consume_udp"));
        assert!(!kallsyms_has(kallsyms, "tcp_cleanup_rbuf"), "data symbol");
        assert!(!kallsyms_has(kallsyms, "udp_sendmsg"));
    }
}
