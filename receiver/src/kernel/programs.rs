//! Loads `flowtel.bpf.o` and attaches each program to its hook.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::Map;
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, Iter, Program, ProgramError};
use aya::{Btf, Ebpf, EbpfLoader};
use aya_obj::btf::BtfKind;

use crate::kernel::iter::MapIterator;
use crate::kernel::pins::{self, PinPlan};
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
    /// A kprobe or kretprobe (the program's section says which) on a kernel
    /// function.
    Kprobe(&'static str),
}

/// Programs both probe sets use: these hooks exist since Linux 5.9.
const COMMON_PROGRAMS: &[(&str, Hook)] = &[
    ("flowtel_state", Hook::Tracepoint("inet_sock_set_state")),
    ("flowtel_retransmit", Hook::Tracepoint("tcp_retransmit_skb")),
    ("flowtel_udp_sendmsg4", Hook::Cgroup("sendmsg4")),
    ("flowtel_udp_sendmsg6", Hook::Cgroup("sendmsg6")),
    ("flowtel_udp_recvmsg4", Hook::Cgroup("recvmsg4")),
    ("flowtel_udp_recvmsg6", Hook::Cgroup("recvmsg6")),
    ("flowtel_sock_release", Hook::Cgroup("sock_release")),
];

/// Sends and receives from the tracepoints of Linux 6.3+.
const TRACEPOINT_IO: &[(&str, Hook)] = &[
    ("flowtel_send", Hook::Tracepoint("sock_send_length")),
    ("flowtel_recv", Hook::Tracepoint("sock_recv_length")),
];

/// Sends and receives from kprobes, for older kernels.
const KPROBE_IO: &[(&str, Hook)] = &[
    ("flowtel_kp_tcp_sendmsg", Hook::Kprobe("tcp_sendmsg")),
    ("flowtel_kp_tcp_sendmsg_ret", Hook::Kprobe("tcp_sendmsg")),
    ("flowtel_kp_udp_sendmsg", Hook::Kprobe("udp_sendmsg")),
    ("flowtel_kp_udp_sendmsg_ret", Hook::Kprobe("udp_sendmsg")),
    ("flowtel_kp_udpv6_sendmsg", Hook::Kprobe("udpv6_sendmsg")),
    (
        "flowtel_kp_udpv6_sendmsg_ret",
        Hook::Kprobe("udpv6_sendmsg"),
    ),
    (
        "flowtel_kp_tcp_cleanup_rbuf",
        Hook::Kprobe("tcp_cleanup_rbuf"),
    ),
    (
        "flowtel_kp_skb_consume_udp",
        Hook::Kprobe("skb_consume_udp"),
    ),
    // kprobes read socket cookies; this makes one for every new socket.
    ("flowtel_sock_create", Hook::Cgroup("sock_create")),
];

/// Tracepoint set: before each poll, copies TCP connections' bytes from
/// their sockets' storage into the connection map.
const TCP_REFRESH: &str = "flowtel_tcp_refresh";
const TCP_COUNTS_MAP: &str = "tcp_counts";

/// The tracepoint whose presence makes `auto` choose the tracepoint set.
pub const SEND_TRACEPOINT: &str = "sock_send_length";

/// The kernel functions the kprobe set attaches to.
pub fn kprobe_functions() -> impl Iterator<Item = &'static str> {
    let mut names: Vec<&'static str> = KPROBE_IO
        .iter()
        .filter_map(|(_, hook)| match hook {
            Hook::Kprobe(function) => Some(*function),
            _ => None,
        })
        .collect();
    names.dedup();
    names.into_iter()
}

/// The tracepoints a probe set attaches to.
pub fn tracepoints(set: ProbeSet) -> impl Iterator<Item = &'static str> {
    programs_of(set).filter_map(|(_, hook)| match hook {
        Hook::Tracepoint(tracepoint) => Some(*tracepoint),
        _ => None,
    })
}

fn programs_of(set: ProbeSet) -> impl Iterator<Item = &'static (&'static str, Hook)> {
    let io = match set {
        ProbeSet::Kprobe => KPROBE_IO,
        ProbeSet::Tracepoint | ProbeSet::Auto => TRACEPOINT_IO,
    };
    io.iter().chain(COMMON_PROGRAMS)
}

/// Whether this kernel has a BTF tracepoint, from its `btf_trace_NAME` type.
pub fn has_tracepoint(btf: &Btf, tracepoint: &str) -> bool {
    btf.id_by_type_name_kind(&format!("btf_trace_{tracepoint}"), BtfKind::Typedef)
        .is_ok()
}

/// Whether this kernel can attach kprobes at all (CONFIG_KPROBES): the
/// kprobe perf event source, or the legacy tracefs interface.
pub fn kprobes_supported() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || Path::new("/sys/kernel/tracing/kprobe_events").exists()
        || Path::new("/sys/kernel/debug/tracing/kprobe_events").exists()
}

/// The probe set `probes` means on this kernel: `auto` is the tracepoint
/// set where the send tracepoint exists, kprobes otherwise.
pub fn resolve(probes: ProbeSet, btf: &Btf) -> ProbeSet {
    match probes {
        ProbeSet::Auto if has_tracepoint(btf, SEND_TRACEPOINT) => ProbeSet::Tracepoint,
        ProbeSet::Auto => ProbeSet::Kprobe,
        chosen => chosen,
    }
}

/// The loaded programs; dropping it detaches them all.
pub struct LoadedPrograms {
    pub ebpf: Ebpf,
    /// Which probe set is attached, for logs and `flowtel check`.
    pub probe_set: ProbeSet,
    /// The pins, when counting goes on through restarts.
    pub pins: Option<PinPlan>,
    /// Tracepoint set, attached: run before each read of the connection map.
    pub tcp_refresh: Option<MapIterator>,
}

/// Whether programs are attached after loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Load (pass the verifier) only: what `flowtel check` proves.
    Load,
    /// Load and attach: the running agent.
    Attach,
}

/// Loads the object with the configured map sizes and loads, then attaches,
/// every program of the probe set the config resolves to.
///
/// With persistence configured (and `Stage::Attach`), the maps user space
/// reads and the links are pinned; when the pins of the same object are
/// there and their connection map is `checkpoint_map_id`, they are adopted
/// instead: the programs already attached go on, nothing new is attached.
pub fn load_and_attach(
    config: &Config,
    stage: Stage,
    checkpoint_map_id: Option<u32>,
) -> Result<LoadedPrograms, Error> {
    let btf = Btf::from_sys_fs().map_err(|_| Error::BtfMissing)?;
    let probe_set = resolve(config.probes, &btf);
    if probe_set == ProbeSet::Kprobe && stage == Stage::Attach && !kprobes_supported() {
        return Err(Error::KprobesUnavailable);
    }
    let cgroup_path = preflight::cgroup_v2_root(config.cgroup_path.as_deref())?;
    let cgroup = File::open(&cgroup_path).map_err(|source| Error::Cgroup {
        path: cgroup_path.clone(),
        source,
    })?;
    let names: Vec<&str> = programs_of(probe_set).map(|(n, _)| *n).collect();
    let pins = match (&config.persistence, stage) {
        (Some(persistence), Stage::Attach) => Some(plan_pins(
            &persistence.pin_dir,
            config,
            probe_set,
            &names,
            checkpoint_map_id,
        )?),
        _ => None,
    };

    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(&btf))
        .map_max_entries("conns", config.max_connections)
        .map_max_entries("events", config.ring_buffer_bytes);
    let pin_paths: Vec<(&str, std::path::PathBuf)> = match &pins {
        Some(plan) => pins::PINNED_MAPS
            .iter()
            .map(|&map| (map, plan.dir.join(map)))
            .collect(),
        None => Vec::new(),
    };
    for (map, path) in &pin_paths {
        loader.map_pin_path(map, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT).map_err(Error::Load)?;

    let resume = pins.as_ref().is_some_and(|plan| plan.resume);
    if !resume {
        for &(name, hook) in programs_of(probe_set) {
            let program = ebpf
                .program_mut(name)
                .unwrap_or_else(|| panic!("program {name} is missing from flowtel.bpf.o"));
            load(program, name, hook, &btf)?;
            if stage == Stage::Attach {
                let attached = attach(program, hook, &cgroup, &cgroup_path)?;
                // Without pins the program holds its link: it is detached
                // when the agent stops.
                if let Some(plan) = &pins {
                    pin_link(program, attached, &plan.dir.join(name)).map_err(|reason| {
                        Error::Pin {
                            what: format!("the link of {name}"),
                            reason,
                        }
                    })?;
                }
                tracing::debug!(program = name, ?hook, "attached");
            }
        }
    }
    // Also on resume: the iterator is this agent's own, over the pinned map.
    let tcp_refresh = match probe_set {
        ProbeSet::Tracepoint => load_tcp_refresh(&mut ebpf, &btf, stage)?,
        ProbeSet::Kprobe | ProbeSet::Auto => None,
    };
    Ok(LoadedPrograms {
        ebpf,
        probe_set,
        pins,
        tcp_refresh,
    })
}

/// Loads the TCP refresh iterator and, for `Stage::Attach`, attaches it to
/// the `tcp_counts` map.
fn load_tcp_refresh(
    ebpf: &mut Ebpf,
    btf: &Btf,
    stage: Stage,
) -> Result<Option<MapIterator>, Error> {
    let program: &mut Iter = ebpf
        .program_mut(TCP_REFRESH)
        .unwrap_or_else(|| panic!("program {TCP_REFRESH} is missing from flowtel.bpf.o"))
        .try_into()
        .map_err(|e| load_error(TCP_REFRESH, e))?;
    program
        .load("bpf_sk_storage_map", btf)
        .map_err(|e| load_error(TCP_REFRESH, e))?;
    if stage == Stage::Load {
        return Ok(None);
    }
    let attach_failed = |reason: String| Error::Attach {
        hook: format!("an iterator over the {TCP_COUNTS_MAP} map"),
        reason,
    };
    let program_fd = program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|e| attach_failed(one_line(&e)))?;
    let Some(Map::SkStorage(map)) = ebpf.map(TCP_COUNTS_MAP) else {
        panic!("map {TCP_COUNTS_MAP} is missing from flowtel.bpf.o or not socket storage");
    };
    MapIterator::attach(program_fd.as_fd(), map.fd().as_fd())
        .map(Some)
        .map_err(|e| attach_failed(e.to_string()))
}

fn plan_pins(
    pin_dir: &Path,
    config: &Config,
    probe_set: ProbeSet,
    programs: &[&str],
    checkpoint_map_id: Option<u32>,
) -> Result<PinPlan, Error> {
    if probe_set == ProbeSet::Kprobe {
        return Err(Error::Pin {
            what: "the kprobe programs".to_owned(),
            reason: "aya cannot pin kprobe links; run without receiver.persistence on this kernel"
                .to_owned(),
        });
    }
    if !pins::is_bpffs(pin_dir.parent().unwrap_or(pin_dir)) && !pins::is_bpffs(pin_dir) {
        return Err(Error::Pins {
            path: pin_dir.to_owned(),
            source: std::io::Error::other("not on a bpf filesystem"),
        });
    }
    let fingerprint = pins::fingerprint(
        OBJECT,
        probe_set,
        config.max_connections,
        config.ring_buffer_bytes,
    );
    pins::plan(pin_dir, &fingerprint, programs, checkpoint_map_id)
}

fn load(program: &mut Program, name: &'static str, hook: Hook, btf: &Btf) -> Result<(), Error> {
    let loaded = match (hook, program) {
        (Hook::Tracepoint(tracepoint), Program::BtfTracePoint(program)) => {
            program.load(tracepoint, btf).map_err(|e| match e {
                ProgramError::Btf(_) => Error::TracepointMissing { tracepoint },
                other => load_error(name, other),
            })?;
            return Ok(());
        }
        (Hook::Cgroup(_), Program::CgroupSockAddr(program)) => program.load(),
        (Hook::Cgroup(_), Program::CgroupSock(program)) => program.load(),
        (Hook::Kprobe(_), Program::KProbe(program)) => program.load(),
        (hook, _) => {
            return Err(Error::Verifier {
                program: name,
                reason: format!("its section does not fit the hook {hook:?}"),
            })
        }
    };
    loaded.map_err(|e| load_error(name, e))
}

/// The link of an attached program, still held by the program.
enum Attached {
    Tracepoint(aya::programs::tp_btf::BtfTracePointLinkId),
    SockAddr(aya::programs::cgroup_sock_addr::CgroupSockAddrLinkId),
    Sock(aya::programs::cgroup_sock::CgroupSockLinkId),
    Kprobe,
}

fn attach(
    program: &mut Program,
    hook: Hook,
    cgroup: &File,
    cgroup_path: &Path,
) -> Result<Attached, Error> {
    let cgroup_target = |kind| format!("cgroup/{kind} at {}", cgroup_path.display());
    match (hook, program) {
        (Hook::Tracepoint(tracepoint), Program::BtfTracePoint(program)) => program
            .attach()
            .map(Attached::Tracepoint)
            .map_err(attach_error(format!("tracepoint {tracepoint}"))),
        (Hook::Cgroup(kind), Program::CgroupSockAddr(program)) => program
            .attach(cgroup, CGROUP_ATTACH_MODE)
            .map(Attached::SockAddr)
            .map_err(attach_error(cgroup_target(kind))),
        (Hook::Cgroup(kind), Program::CgroupSock(program)) => program
            .attach(cgroup, CGROUP_ATTACH_MODE)
            .map(Attached::Sock)
            .map_err(attach_error(cgroup_target(kind))),
        (Hook::Kprobe(function), Program::KProbe(program)) => program
            .attach(function, 0)
            .map(|_| Attached::Kprobe)
            .map_err(attach_error(format!("kprobe on {function}"))),
        (hook, _) => unreachable!("load() checked that {hook:?} fits its program"),
    }
}

/// Takes the link from its program and pins it at `path`: it then outlives
/// the agent, and the program stays attached.
fn pin_link(program: &mut Program, attached: Attached, path: &Path) -> Result<(), String> {
    let link: FdLink = match (attached, program) {
        (Attached::Tracepoint(id), Program::BtfTracePoint(p)) => {
            p.take_link(id).map_err(|e| one_line(&e))?.into()
        }
        (Attached::SockAddr(id), Program::CgroupSockAddr(p)) => {
            let link = p.take_link(id).map_err(|e| one_line(&e))?;
            FdLink::try_from(link).map_err(|e| one_line(&e))?
        }
        (Attached::Sock(id), Program::CgroupSock(p)) => {
            let link = p.take_link(id).map_err(|e| one_line(&e))?;
            FdLink::try_from(link).map_err(|e| one_line(&e))?
        }
        _ => return Err("only BPF links can be pinned".to_owned()),
    };
    link.pin(path).map(drop).map_err(|e| one_line(&e))
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
