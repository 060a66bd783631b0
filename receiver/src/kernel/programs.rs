//! Loads `flowtel.bpf.o` and attaches each program to its hook.

use std::fs::File;
use std::path::Path;

use aya::programs::{
    BtfTracePoint, CgroupAttachMode, CgroupSock, CgroupSockAddr, Program, ProgramError,
};
use aya::{Btf, Ebpf, EbpfLoader};

use crate::kernel::preflight;
use crate::{Config, Error, ProbeSet};

/// aya attaches with a BPF link (Linux 5.7+), which always coexists with
/// other programs on the same cgroup and takes no attach flags: `Single` is
/// the mode that passes none.
const CGROUP_ATTACH_MODE: CgroupAttachMode = CgroupAttachMode::Single;

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowtel.bpf.o"));

/// Where a program attaches.
#[derive(Debug, Clone, Copy)]
enum Hook {
    /// A BTF tracepoint (`tp_btf/NAME`).
    Tracepoint(&'static str),
    /// A cgroup-v2 socket hook, attached to the cgroup root.
    Cgroup(&'static str),
}

/// The tracepoint probe set (Linux 6.3+), program name and hook.
const TRACEPOINT_PROBES: &[(&str, Hook)] = &[
    ("flowtel_send", Hook::Tracepoint("sock_send_length")),
    ("flowtel_recv", Hook::Tracepoint("sock_recv_length")),
    ("flowtel_state", Hook::Tracepoint("inet_sock_set_state")),
    ("flowtel_retransmit", Hook::Tracepoint("tcp_retransmit_skb")),
    ("flowtel_udp_sendmsg4", Hook::Cgroup("sendmsg4")),
    ("flowtel_udp_sendmsg6", Hook::Cgroup("sendmsg6")),
    ("flowtel_udp_recvmsg4", Hook::Cgroup("recvmsg4")),
    ("flowtel_udp_recvmsg6", Hook::Cgroup("recvmsg6")),
    ("flowtel_sock_release", Hook::Cgroup("sock_release")),
];

/// The loaded programs; dropping it detaches them all.
pub struct LoadedPrograms {
    pub ebpf: Ebpf,
    /// Which probe set is attached, for logs and `flowtel check`.
    pub probe_set: ProbeSet,
}

/// Loads the object with the configured map sizes and attaches every program.
pub fn load_and_attach(config: &Config) -> Result<LoadedPrograms, Error> {
    if config.probes == ProbeSet::Kprobe {
        return Err(Error::KprobesUnavailable);
    }
    let btf = Btf::from_sys_fs().map_err(|_| Error::BtfMissing)?;
    let cgroup_path = preflight::cgroup_v2_root(config.cgroup_path.as_deref())?;
    let cgroup = File::open(&cgroup_path).map_err(|source| Error::Cgroup {
        path: cgroup_path.clone(),
        source,
    })?;

    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .map_max_entries("conns", config.max_connections)
        .map_max_entries("events", config.ring_buffer_bytes)
        .load(OBJECT)
        .map_err(Error::Load)?;

    for &(name, hook) in TRACEPOINT_PROBES {
        let program = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} is missing from flowtel.bpf.o"));
        attach(program, name, hook, &btf, &cgroup, &cgroup_path)?;
        tracing::debug!(program = name, ?hook, "attached");
    }
    Ok(LoadedPrograms {
        ebpf,
        probe_set: ProbeSet::Tracepoint,
    })
}

fn attach(
    program: &mut Program,
    name: &'static str,
    hook: Hook,
    btf: &Btf,
    cgroup: &File,
    cgroup_path: &Path,
) -> Result<(), Error> {
    match hook {
        Hook::Tracepoint(tracepoint) => {
            let program: &mut BtfTracePoint = program.try_into().map_err(wrong_type(name))?;
            program.load(tracepoint, btf).map_err(|e| match e {
                ProgramError::Btf(_) => Error::TracepointMissing { tracepoint },
                other => load_error(name, other),
            })?;
            program
                .attach()
                .map_err(attach_error(format!("tracepoint {tracepoint}")))?;
        }
        Hook::Cgroup(kind) => {
            let target = format!("cgroup/{kind} at {}", cgroup_path.display());
            if let Ok(program) = <&mut CgroupSockAddr>::try_from(&mut *program) {
                program.load().map_err(|e| load_error(name, e))?;
                program
                    .attach(cgroup, CGROUP_ATTACH_MODE)
                    .map_err(attach_error(target))?;
            } else {
                let program: &mut CgroupSock = program.try_into().map_err(wrong_type(name))?;
                program.load().map_err(|e| load_error(name, e))?;
                program
                    .attach(cgroup, CGROUP_ATTACH_MODE)
                    .map_err(attach_error(target))?;
            }
        }
    }
    Ok(())
}

fn load_error(program: &'static str, error: ProgramError) -> Error {
    match error {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            tracing::debug!(program, "verifier log:\n{verifier_log}");
            Error::Verifier {
                program,
                reason: io_error.to_string(),
            }
        }
        other => Error::Verifier {
            program,
            reason: one_line(&other),
        },
    }
}

fn attach_error(hook: String) -> impl FnOnce(ProgramError) -> Error {
    move |error| Error::Attach {
        hook,
        reason: one_line(&error),
    }
}

fn wrong_type(name: &'static str) -> impl FnOnce(ProgramError) -> Error {
    move |error| Error::Verifier {
        program: name,
        reason: one_line(&error),
    }
}

/// The error and its causes on one line.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text.replace('\n', " ")
}
