//! Loads `flowtel.bpf.o` and attaches each program to its hook.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::Map;
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, Iter, Program, ProgramError};
use aya::{Btf, Ebpf, EbpfLoader};
use aya_obj::btf::BtfKind;

use crate::kernel::iter::BpfIterator;
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

/// TCP, in both probe sets: state changes and retransmits (the bytes come
/// from the sockets' own counters, read by the iterators below).
const TCP_PROGRAMS: &[(&str, Hook)] = &[
    ("flowtel_state", Hook::Tracepoint("inet_sock_set_state")),
    ("flowtel_retransmit", Hook::Tracepoint("tcp_retransmit_skb")),
];

/// UDP, in both probe sets: the peers of unconnected sockets, and the end
/// of a socket's conversations.
const UDP_PEER_PROGRAMS: &[(&str, Hook)] = &[
    ("flowtel_udp_sendmsg4", Hook::Cgroup("sendmsg4")),
    ("flowtel_udp_sendmsg6", Hook::Cgroup("sendmsg6")),
    ("flowtel_udp_recvmsg4", Hook::Cgroup("recvmsg4")),
    ("flowtel_udp_recvmsg6", Hook::Cgroup("recvmsg6")),
    ("flowtel_sock_release", Hook::Cgroup("sock_release")),
];

/// UDP datagrams from the tracepoints of Linux 6.3+ (which fire for every
/// protocol: the one per-send and per-receive cost TCP pays).
const TRACEPOINT_UDP: &[(&str, Hook)] = &[
    ("flowtel_send", Hook::Tracepoint("sock_send_length")),
    ("flowtel_recv", Hook::Tracepoint("sock_recv_length")),
];

/// UDP datagrams from kprobes on the UDP functions, for older kernels.
const KPROBE_UDP: &[(&str, Hook)] = &[
    ("flowtel_kp_udp_sendmsg", Hook::Kprobe("udp_sendmsg")),
    ("flowtel_kp_udp_sendmsg_ret", Hook::Kprobe("udp_sendmsg")),
    ("flowtel_kp_udpv6_sendmsg", Hook::Kprobe("udpv6_sendmsg")),
    (
        "flowtel_kp_udpv6_sendmsg_ret",
        Hook::Kprobe("udpv6_sendmsg"),
    ),
    (
        "flowtel_kp_skb_consume_udp",
        Hook::Kprobe("skb_consume_udp"),
    ),
    // kprobes read socket cookies; this makes one for every new socket.
    ("flowtel_sock_create", Hook::Cgroup("sock_create")),
];

/// Before each poll: copies every TCP connection's counters into the
/// connection map.
const TCP_REFRESH: &str = "flowtel_tcp_refresh";
const TCP_STARTS_MAP: &str = "tcp_starts";
/// At start: finds the TCP connections and listeners older than the agent.
const DISCOVER: &str = "flowtel_discover";
/// Before each poll: gives accepted connections the process holding them.
const OWNERS: &str = "flowtel_owners";

/// The tracepoint whose presence makes `auto` choose the tracepoint set.
pub const SEND_TRACEPOINT: &str = "sock_send_length";

/// The kernel functions the kprobe set attaches to.
pub fn kprobe_functions() -> impl Iterator<Item = &'static str> {
    let mut names: Vec<&'static str> = KPROBE_UDP
        .iter()
        .filter_map(|(_, hook)| match hook {
            Hook::Kprobe(function) => Some(*function),
            _ => None,
        })
        .collect();
    names.dedup();
    names.into_iter()
}

/// The tracepoints a probe set attaches to (with UDP counted).
pub fn tracepoints(set: ProbeSet) -> impl Iterator<Item = &'static str> {
    programs_of(set, true).filter_map(|(_, hook)| match hook {
        Hook::Tracepoint(tracepoint) => Some(*tracepoint),
        _ => None,
    })
}

/// The programs a probe set attaches: those of TCP always, those of UDP
/// when `udp` is counted.
fn programs_of(set: ProbeSet, udp: bool) -> impl Iterator<Item = &'static (&'static str, Hook)> {
    let (datagrams, peers): (&[_], &[_]) = match (udp, set) {
        (false, _) => (&[], &[]),
        (true, ProbeSet::Kprobe) => (KPROBE_UDP, UDP_PEER_PROGRAMS),
        (true, ProbeSet::Tracepoint | ProbeSet::Auto) => (TRACEPOINT_UDP, UDP_PEER_PROGRAMS),
    };
    TCP_PROGRAMS.iter().chain(datagrams).chain(peers)
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
    /// Attached: run before each read of the connection map.
    pub tcp_refresh: Option<BpfIterator>,
    /// Attached: run before each poll, ahead of `tcp_refresh`.
    pub owners: Option<BpfIterator>,
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
    let names: Vec<&str> = programs_of(probe_set, config.udp)
        .map(|(n, _)| *n)
        .collect();
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
        for &(name, hook) in programs_of(probe_set, config.udp) {
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
    // Also on resume: the iterators are this agent's own, over the pinned
    // maps. Discovery after attaching, so that nothing opens unseen between.
    let tcp_refresh = load_tcp_refresh(&mut ebpf, &btf, stage)?;
    if let Some(discover) = load_iterator(&mut ebpf, DISCOVER, "task_file", None, &btf, stage)? {
        discover.run().map_err(Error::Discover)?;
    }
    let owners = load_iterator(&mut ebpf, OWNERS, "task_file", None, &btf, stage)?;
    Ok(LoadedPrograms {
        ebpf,
        probe_set,
        pins,
        tcp_refresh,
        owners,
    })
}

/// Loads the TCP refresh iterator and, for `Stage::Attach`, attaches it to
/// the `tcp_starts` map.
fn load_tcp_refresh(
    ebpf: &mut Ebpf,
    btf: &Btf,
    stage: Stage,
) -> Result<Option<BpfIterator>, Error> {
    let map = match ebpf.map(TCP_STARTS_MAP) {
        Some(Map::SkStorage(map)) => {
            map.fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::Attach {
                    hook: format!("an iterator over the {TCP_STARTS_MAP} map"),
                    reason: e.to_string(),
                })?
        }
        _ => panic!("map {TCP_STARTS_MAP} is missing from flowtel.bpf.o or not socket storage"),
    };
    load_iterator(
        ebpf,
        TCP_REFRESH,
        "bpf_sk_storage_map",
        Some(map.as_fd()),
        btf,
        stage,
    )
}

/// Loads the iterator program `name` of kind `target` and, for
/// `Stage::Attach`, attaches it (to `map`, for a map iterator).
fn load_iterator(
    ebpf: &mut Ebpf,
    name: &'static str,
    target: &str,
    map: Option<std::os::fd::BorrowedFd<'_>>,
    btf: &Btf,
    stage: Stage,
) -> Result<Option<BpfIterator>, Error> {
    let program: &mut Iter = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("program {name} is missing from flowtel.bpf.o"))
        .try_into()
        .map_err(|e| load_error(name, e))?;
    program.load(target, btf).map_err(|e| load_error(name, e))?;
    if stage == Stage::Load {
        return Ok(None);
    }
    let attach_failed = |reason: String| Error::Attach {
        hook: format!("the {target} iterator {name}"),
        reason,
    };
    let program_fd = program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|e| attach_failed(one_line(&e)))?;
    BpfIterator::attach(program_fd.as_fd(), map)
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
