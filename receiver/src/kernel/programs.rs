//! Loads `flowtel.bpf.o` and attaches each program to its hook.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::{Array, MapData};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSkbAttachType, Iter, Program, ProgramError};
use aya::{Btf, Ebpf, EbpfLoader};
use aya_obj::btf::BtfKind;

use crate::features::{refused_for_test, Feature, Features, State, REFUSE_FOR_TEST};
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
    /// A cgroup-v2 packet hook (`cgroup_skb/egress`), attached to the
    /// cgroup root.
    CgroupEgress,
    /// A cgroup-v2 packet hook (`cgroup_skb/ingress`), attached to the
    /// cgroup root.
    CgroupIngress,
    /// A kprobe or kretprobe (the program's section says which) on a kernel
    /// function.
    Kprobe(&'static str),
    /// A BPF iterator of this kind (`tcp`, `task_file`), run by user space.
    Iter(&'static str),
}

/// One way a feature works: the programs it needs, all or none.
struct Mechanism {
    /// How `flowtel check` and the log name it.
    via: &'static str,
    programs: &'static [(&'static str, Hook)],
}

impl Mechanism {
    /// Whether this is `other` (a `const` has no one address to compare):
    /// no two ways share their first program.
    fn is(&self, other: &Mechanism) -> bool {
        self.programs[0].0 == other.programs[0].0
    }
}

/// How TCP connections are keyed: by socket cookie where tracing programs
/// may ask for one (Linux 5.12+), else by the socket's address. One keying
/// for all TCP programs: the state program's decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keying {
    Cookie,
    Address,
}

/// Each tracing program that counts has a twin on its hook, which takes the
/// events the kernel skips the first for (bpf-programs/common.h, "twins").
const TCP_STATE: Mechanism = Mechanism {
    via: "tracepoint inet_sock_set_state",
    programs: &[
        ("flowtel_state", Hook::Tracepoint("inet_sock_set_state")),
        (
            "flowtel_state_twin",
            Hook::Tracepoint("inet_sock_set_state"),
        ),
    ],
};
const TCP_STATE_BY_ADDR: Mechanism = Mechanism {
    via: "tracepoint inet_sock_set_state, keyed by socket address",
    programs: &[
        (
            "flowtel_state_by_addr",
            Hook::Tracepoint("inet_sock_set_state"),
        ),
        (
            "flowtel_state_twin_by_addr",
            Hook::Tracepoint("inet_sock_set_state"),
        ),
    ],
};

const TCP_RETRANSMIT: [Mechanism; 2] = [
    Mechanism {
        via: "tracepoint tcp_retransmit_skb",
        programs: &[("flowtel_retransmit", Hook::Tracepoint("tcp_retransmit_skb"))],
    },
    Mechanism {
        via: "tracepoint tcp_retransmit_skb",
        programs: &[(
            "flowtel_retransmit_by_addr",
            Hook::Tracepoint("tcp_retransmit_skb"),
        )],
    },
];

/// Before each poll, in each network namespace with tracked connections:
/// copies every TCP connection's counters into the connection map.
const TCP_ITERATOR: [Mechanism; 2] = [
    Mechanism {
        via: "iter/tcp in each network namespace",
        programs: &[("flowtel_tcp_refresh", Hook::Iter("tcp"))],
    },
    Mechanism {
        via: "iter/tcp in each network namespace",
        programs: &[("flowtel_tcp_refresh_by_addr", Hook::Iter("tcp"))],
    },
];

/// At start, in each network namespace: the TCP connections older than
/// the agent.
const TCP_DISCOVERY: [Mechanism; 2] = [
    Mechanism {
        via: "iter/tcp at start, in each network namespace",
        programs: &[("flowtel_tcp_discover", Hook::Iter("tcp"))],
    },
    Mechanism {
        via: "iter/tcp at start, in each network namespace",
        programs: &[("flowtel_tcp_discover_by_addr", Hook::Iter("tcp"))],
    },
];

/// Before a poll (budgeted): gives accepted connections the process
/// holding them.
const OWNERS_WALK: [Mechanism; 2] = [
    Mechanism {
        via: "iter/task_file",
        programs: &[("flowtel_owners", Hook::Iter("task_file"))],
    },
    Mechanism {
        via: "iter/task_file",
        programs: &[("flowtel_owners_by_addr", Hook::Iter("task_file"))],
    },
];

/// The way of a keyed feature for `keying`.
fn keyed(ways: &'static [Mechanism; 2], keying: Keying) -> &'static Mechanism {
    match keying {
        Keying::Cookie => &ways[0],
        Keying::Address => &ways[1],
    }
}

/// UDP sends from their packets (the cgroup egress hook, which a preempted
/// run never makes the kernel skip, unlike a tracepoint program from Linux
/// 7.2), receives from the receive tracepoint of Linux 6.3+.
const PACKET_UDP: Mechanism = Mechanism {
    via: "cgroup_skb egress (sends), tracepoint sock_recv_length (receives)",
    programs: &[
        ("flowtel_udp_egress", Hook::CgroupEgress),
        ("flowtel_recv", Hook::Tracepoint("sock_recv_length")),
        ("flowtel_recv_twin", Hook::Tracepoint("sock_recv_length")),
    ],
};

/// UDP datagrams from the tracepoints of Linux 6.3+ (which fire for every
/// protocol: the one per-send and per-receive cost TCP pays).
const TRACEPOINT_UDP: Mechanism = Mechanism {
    via: "tracepoints sock_send_length, sock_recv_length",
    programs: &[
        ("flowtel_send", Hook::Tracepoint("sock_send_length")),
        ("flowtel_send_twin", Hook::Tracepoint("sock_send_length")),
        ("flowtel_recv", Hook::Tracepoint("sock_recv_length")),
        ("flowtel_recv_twin", Hook::Tracepoint("sock_recv_length")),
    ],
};

/// UDP datagrams from kprobes on the UDP functions, for older kernels.
const KPROBE_UDP: Mechanism = Mechanism {
    via: "kprobes on udp_sendmsg, udpv6_sendmsg, skb_consume_udp",
    programs: &[
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
    ],
};

const UDP_PEERS: Mechanism = Mechanism {
    via: "cgroup sendmsg4/6, recvmsg4/6 and connect4/6",
    programs: &[
        ("flowtel_udp_sendmsg4", Hook::Cgroup("sendmsg4")),
        ("flowtel_udp_sendmsg6", Hook::Cgroup("sendmsg6")),
        ("flowtel_udp_recvmsg4", Hook::Cgroup("recvmsg4")),
        ("flowtel_udp_recvmsg6", Hook::Cgroup("recvmsg6")),
        ("flowtel_udp_connect4", Hook::Cgroup("connect4")),
        ("flowtel_udp_connect6", Hook::Cgroup("connect6")),
    ],
};

const UDP_RELEASE: Mechanism = Mechanism {
    via: "cgroup sock_release",
    programs: &[("flowtel_sock_release", Hook::Cgroup("sock_release"))],
};

/// cgroup-v2 directories as they are made and removed, with their paths:
/// a connection's cgroup id names its container even once it is gone.
const CGROUP_PATHS: Mechanism = Mechanism {
    via: "tracepoints cgroup_mkdir, cgroup_rmdir",
    programs: &[
        ("flowtel_cgroup_mkdir", Hook::Tracepoint("cgroup_mkdir")),
        ("flowtel_cgroup_rmdir", Hook::Tracepoint("cgroup_rmdir")),
    ],
};

/// DNS in the UDP programs (`FT_SETTING_DNS_IN_UDP`): where UDP is
/// counted from its packets and reads (`PACKET_UDP`) and nothing is pinned,
/// `flowtel_udp_egress` takes the queries and `flowtel_recv` the answers as
/// their clients read them: no program runs for DNS that does not run
/// anyway. Of its own, only the recvmsg hooks that name an unconnected
/// reader's server. Never pinned (pinned UDP programs would write into a
/// ring no later agent reads): with persistence DNS takes `DNS_RECEIVE`.
const DNS_IN_UDP: Mechanism = Mechanism {
    via: "the udp programs (queries on cgroup_skb egress, answers on tracepoint sock_recv_length)",
    programs: &[
        ("flowtel_dns_recvmsg4", Hook::Cgroup("recvmsg4")),
        ("flowtel_dns_recvmsg6", Hook::Cgroup("recvmsg6")),
    ],
};

/// The host's DNS messages: queries leaving client sockets, answers as
/// their clients read them (Linux 6.3+, x86-64 system calls). Programs of
/// their own, never pinned: they need the agent's ring buffer reader, and
/// no lookup is counted while no agent runs. Nothing here runs for a
/// received packet: the receive tracepoint fires once per read.
const DNS_RECEIVE: Mechanism = Mechanism {
    via: "cgroup_skb egress (queries), tracepoint sock_recv_length (answers)",
    // The egress program last: a refused receive program leaves nothing
    // loaded for the next way, which has it too.
    programs: &[
        ("flowtel_dns_recv", Hook::Tracepoint("sock_recv_length")),
        (
            "flowtel_dns_recv_twin",
            Hook::Tracepoint("sock_recv_length"),
        ),
        ("flowtel_dns_recvmsg4", Hook::Cgroup("recvmsg4")),
        ("flowtel_dns_recvmsg6", Hook::Cgroup("recvmsg6")),
        ("flowtel_dns_egress", Hook::CgroupEgress),
    ],
};

/// DNS from the packets: answers on the ingress hook, which every received
/// packet then pays (about 40 ns here), for kernels before 6.3.
const DNS_CAPTURE: Mechanism = Mechanism {
    via: "cgroup_skb egress and ingress",
    programs: &[
        ("flowtel_dns_egress", Hook::CgroupEgress),
        ("flowtel_dns_ingress", Hook::CgroupIngress),
    ],
};

/// Every program of the object: for `flowtel check --all-programs`, and
/// the contract test.
const ALL_MECHANISMS: [&Mechanism; 19] = [
    &TCP_STATE,
    &TCP_STATE_BY_ADDR,
    &TCP_RETRANSMIT[0],
    &TCP_RETRANSMIT[1],
    &TCP_ITERATOR[0],
    &TCP_ITERATOR[1],
    &TCP_DISCOVERY[0],
    &TCP_DISCOVERY[1],
    &OWNERS_WALK[0],
    &OWNERS_WALK[1],
    &PACKET_UDP,
    &TRACEPOINT_UDP,
    &KPROBE_UDP,
    &UDP_PEERS,
    &UDP_RELEASE,
    &CGROUP_PATHS,
    &DNS_IN_UDP,
    &DNS_RECEIVE,
    &DNS_CAPTURE,
];

/// The ways each feature can work, best first, on this kernel and config;
/// and what remains of it, if anything, when none of them loads.
fn mechanisms(
    feature: Feature,
    probe_set: ProbeSet,
    kprobes: bool,
    keying: Keying,
) -> Vec<&'static Mechanism> {
    match feature {
        Feature::TcpConnections => vec![&TCP_STATE, &TCP_STATE_BY_ADDR],
        Feature::Retransmits => vec![keyed(&TCP_RETRANSMIT, keying)],
        Feature::TcpLiveBytes => vec![keyed(&TCP_ITERATOR, keying)],
        Feature::ExistingConnections => vec![keyed(&TCP_DISCOVERY, keying)],
        Feature::SocketOwners => vec![keyed(&OWNERS_WALK, keying)],
        Feature::Udp => match probe_set {
            ProbeSet::Kprobe => vec![&KPROBE_UDP],
            ProbeSet::Tracepoint if kprobes => vec![&PACKET_UDP, &TRACEPOINT_UDP, &KPROBE_UDP],
            ProbeSet::Tracepoint | ProbeSet::Auto => vec![&PACKET_UDP, &TRACEPOINT_UDP],
        },
        Feature::UdpPeers => vec![&UDP_PEERS],
        Feature::UdpRelease => vec![&UDP_RELEASE],
        Feature::Containers => vec![&CGROUP_PATHS],
        Feature::Nat => vec![],
        // Narrowed to this kernel and config by load_and_attach (dns_ways).
        Feature::Dns => vec![&DNS_IN_UDP, &DNS_RECEIVE, &DNS_CAPTURE],
    }
}

/// DNS's ways: answers read from the reader's buffer where the system call
/// ABI is known (x86-64), by the UDP programs when `in_udp` (they run
/// anyway), else from the packets. Where the kernel lacks the receive tracepoint (before 6.3), only the
/// packets: the others are not tried, so not reported refused.
fn dns_ways(btf: &Btf, in_udp: bool) -> Vec<&'static Mechanism> {
    let reads = cfg!(target_arch = "x86_64") && has_tracepoint(btf, RECEIVE_TRACEPOINT);
    match (reads, in_udp) {
        (true, true) => vec![&DNS_IN_UDP, &DNS_RECEIVE, &DNS_CAPTURE],
        (true, false) => vec![&DNS_RECEIVE, &DNS_CAPTURE],
        (false, _) => vec![&DNS_CAPTURE],
    }
}

/// The tracepoint on which answers are read as their clients read them.
const RECEIVE_TRACEPOINT: &str = "sock_recv_length";

/// What is left of a feature when every way of it is refused, if anything.
fn remains_without(feature: Feature) -> Option<&'static str> {
    match feature {
        Feature::Retransmits => Some("the counters read at each poll and at close"),
        Feature::UdpRelease => Some("idle UDP flows swept"),
        Feature::Containers => Some("/proc/PID/cgroup at the next poll"),
        _ => None,
    }
}

fn is_udp(feature: Feature) -> bool {
    matches!(
        feature,
        Feature::Udp | Feature::UdpPeers | Feature::UdpRelease
    )
}

/// The tracepoint whose presence makes `auto` choose the tracepoint set.
pub const SEND_TRACEPOINT: &str = "sock_send_length";

/// The kernel functions the kprobe set attaches to.
pub fn kprobe_functions() -> impl Iterator<Item = &'static str> {
    let mut names: Vec<&'static str> = KPROBE_UDP
        .programs
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
    let udp: &Mechanism = match set {
        ProbeSet::Kprobe => &KPROBE_UDP,
        ProbeSet::Tracepoint | ProbeSet::Auto => &TRACEPOINT_UDP,
    };
    [&TCP_STATE, &TCP_RETRANSMIT[0], udp]
        .into_iter()
        .flat_map(|m| m.programs.iter())
        .filter_map(|(_, hook)| match hook {
            Hook::Tracepoint(tracepoint) => Some(*tracepoint),
            _ => None,
        })
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
    /// Which probe set the pins and the log are named after.
    pub probe_set: ProbeSet,
    /// How each feature works here.
    pub features: Features,
    /// The pins, when counting goes on through restarts.
    pub pins: Option<PinPlan>,
    /// Each program tried, and whether the kernel's verifier took it.
    pub verdicts: Vec<(&'static str, Result<(), String>)>,
    /// Attached iterators (`Stage::Attach`), by program name.
    pub tcp_refresh: Option<BpfIterator>,
    pub tcp_discover: Option<BpfIterator>,
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

/// Loads the object with the configured map sizes, then each feature's
/// programs: a feature whose programs the kernel refuses takes its next
/// way, or is off. Fails only when TCP connections cannot be counted.
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
    let kprobes = kprobes_supported();
    let cgroup_path = preflight::cgroup_v2_root(config.cgroup_path.as_deref())?;
    let cgroup = File::open(&cgroup_path).map_err(|source| Error::Cgroup {
        path: cgroup_path.clone(),
        cause: source,
    })?;
    let pins = match (&config.persistence, stage) {
        (Some(persistence), Stage::Attach) => Some(plan_pins(
            &persistence.pin_dir,
            config,
            probe_set,
            checkpoint_map_id,
        )?),
        _ => None,
    };

    let mut loader = sized_loader(&btf, config);
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
    let mut features = Features::default();
    let mut context = Context {
        btf: &btf,
        stage,
        cgroup: &cgroup,
        cgroup_path: &cgroup_path,
        pins: pins.as_ref(),
        resume,
        kprobes,
        verdicts: Vec::new(),
    };
    let mut keying = Keying::Cookie;
    let mut dns_in_udp = false;
    let mut used: Vec<(Feature, &'static Mechanism)> = Vec::new();
    for feature in Feature::ALL {
        let udp_off = matches!(features.get(Feature::Udp), State::Off { .. });
        let state = if feature == Feature::Nat {
            // Read over netlink, not by a program.
            crate::nat::availability()
        } else if feature == Feature::Dns && !config.dns {
            State::Off {
                why: "receiver.dns is false".to_owned(),
            }
        } else if feature == Feature::Dns {
            // Never pinned, never adopted: attached afresh by each agent.
            let kept = (context.pins.take(), context.resume);
            context.resume = false;
            // config, not the pins: `flowtel check` plans none.
            let in_udp = uses(&used, Feature::Udp, &PACKET_UDP) && config.persistence.is_none();
            let (state, way) = enable(&mut ebpf, &mut context, feature, &dns_ways(&btf, in_udp));
            (context.pins, context.resume) = kept;
            dns_in_udp = way.is_some_and(|way| way.is(&DNS_IN_UDP));
            state
        } else if is_udp(feature) && !config.udp {
            State::Off {
                why: "receiver.udp is false".to_owned(),
            }
        } else if is_udp(feature) && feature != Feature::Udp && udp_off {
            State::Off {
                why: "udp is off".to_owned(),
            }
        } else {
            let ways = mechanisms(feature, probe_set, kprobes, keying);
            let (state, way) = enable(&mut ebpf, &mut context, feature, &ways);
            if let Some(way) = way {
                used.push((feature, way));
                if way.is(&TCP_STATE_BY_ADDR) {
                    keying = Keying::Address;
                }
            }
            state
        };
        features.set(feature, state);
    }
    let send_peers =
        uses(&used, Feature::Udp, &PACKET_UDP) && uses(&used, Feature::UdpPeers, &UDP_PEERS);
    if send_peers && stage == Stage::Attach {
        set_setting(&mut ebpf, crate::kernel::abi::SETTING_SEND_PEERS)?;
    }
    if dns_in_udp && stage == Stage::Attach {
        set_setting(&mut ebpf, crate::kernel::abi::SETTING_DNS_IN_UDP)?;
    }
    if stage == Stage::Attach && std::env::var_os(MISS_TCP_CLOSES_FOR_TEST).is_some() {
        tracing::warn!("{MISS_TCP_CLOSES_FOR_TEST} is set: TCP closes go unreported, as if the kernel skipped them (for tests only)");
        set_setting(&mut ebpf, crate::kernel::abi::SETTING_TEST_MISS_TCP_CLOSES)?;
    }
    crate::netns::scope_features(&mut features);
    let verdicts = std::mem::take(&mut context.verdicts);
    if let State::Off { why } = features.get(Feature::TcpConnections) {
        return Err(Error::NothingCounts { why: why.clone() });
    }
    let probe_set = match features.get(Feature::Udp) {
        State::On { via } | State::Fallback { via, .. } if via == KPROBE_UDP.via => {
            ProbeSet::Kprobe
        }
        _ => match probe_set {
            ProbeSet::Auto => ProbeSet::Tracepoint,
            set => set,
        },
    };

    let iterator =
        |ebpf: &mut Ebpf, feature: Feature| match used.iter().find(|(f, _)| *f == feature) {
            Some((_, way)) => attach_iterator(ebpf, way.programs[0].0, stage),
            None => Ok(None),
        };
    let tcp_refresh = iterator(&mut ebpf, Feature::TcpLiveBytes)?;
    let tcp_discover = iterator(&mut ebpf, Feature::ExistingConnections)?;
    let owners = iterator(&mut ebpf, Feature::SocketOwners)?;
    Ok(LoadedPrograms {
        ebpf,
        probe_set,
        features,
        pins,
        verdicts,
        tcp_refresh,
        tcp_discover,
        owners,
    })
}

/// Whether `feature` works by `way`, of the ways `used` so far.
fn uses(used: &[(Feature, &'static Mechanism)], feature: Feature, way: &Mechanism) -> bool {
    used.iter()
        .any(|(f, used_way)| *f == feature && used_way.is(way))
}

/// Makes the state program ignore every TCP close, as a kernel that
/// skipped its runs would (for tests of the walks that find such
/// connections gone).
pub const MISS_TCP_CLOSES_FOR_TEST: &str = "FLOWTEL_TEST_MISS_TCP_CLOSES";

/// Turns on the setting at `index` of the settings map: the egress hook
/// keying unconnected sends by their peer (`FT_SETTING_SEND_PEERS`, when
/// the receive side knows its peers too), the UDP programs capturing DNS
/// (`FT_SETTING_DNS_IN_UDP`), or a test's switch.
fn set_setting(ebpf: &mut Ebpf, index: u32) -> Result<(), Error> {
    debug_assert!(index < crate::kernel::abi::SETTING_COUNT);
    let failed = |reason: String| Error::Attach {
        hook: "the settings map".to_owned(),
        reason,
    };
    let map = ebpf
        .map_mut("settings")
        .expect("flowtel.bpf.o has the settings map");
    let mut settings: Array<&mut MapData, u32> =
        Array::try_from(map).map_err(|e| failed(one_line(&e)))?;
    settings.set(index, 1, 0).map_err(|e| failed(one_line(&e)))
}

/// A loader for the object with this kernel's BTF and the configured map
/// sizes.
fn sized_loader<'a>(btf: &'a Btf, config: &'a Config) -> EbpfLoader<'a> {
    let mut loader = EbpfLoader::new();
    loader
        .btf(Some(btf))
        .override_global("dns_port", &config.dns_port, true)
        .map_max_entries("conns", config.max_connections)
        .map_max_entries("events", config.ring_buffer_bytes);
    loader
}

/// One program's verdict where its feature would never try it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// The kernel lacks its hook (a tracepoint of a later kernel).
    NoHook(String),
    Refused(String),
}

/// Loads (never attaches) every program of the object through this
/// kernel's verifier, each on its own, whether or not a feature would use
/// it here: the fallbacks a kernel never needs are checked too.
pub fn verify_every_program(config: &Config) -> Result<Vec<(&'static str, Verdict)>, Error> {
    let btf = Btf::from_sys_fs().map_err(|_| Error::BtfMissing)?;
    let mut ebpf = sized_loader(&btf, config)
        .load(OBJECT)
        .map_err(Error::Load)?;
    let mut verdicts: Vec<(&'static str, Verdict)> = Vec::new();
    for &(name, hook) in ALL_MECHANISMS.iter().flat_map(|way| way.programs.iter()) {
        if verdicts.iter().any(|(seen, _)| *seen == name) {
            continue;
        }
        let program = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} is missing from flowtel.bpf.o"));
        let verdict = match load(program, name, hook, &btf) {
            Ok(()) => Verdict::Passed,
            Err(error @ Error::TracepointMissing { .. }) => Verdict::NoHook(error.to_string()),
            Err(error) => Verdict::Refused(error.to_string()),
        };
        verdicts.push((name, verdict));
    }
    Ok(verdicts)
}

/// What loading and attaching one feature needs.
struct Context<'a> {
    btf: &'a Btf,
    stage: Stage,
    cgroup: &'a File,
    cgroup_path: &'a Path,
    pins: Option<&'a PinPlan>,
    resume: bool,
    /// Whether kprobes can attach here at all.
    kprobes: bool,
    verdicts: Vec<(&'static str, Result<(), String>)>,
}

/// Tries the feature's ways in order; the first whose programs all load
/// (and attach) is its state.
fn enable(
    ebpf: &mut Ebpf,
    context: &mut Context<'_>,
    feature: Feature,
    ways: &[&'static Mechanism],
) -> (State, Option<&'static Mechanism>) {
    let mut refused: Vec<String> = Vec::new();
    for (rank, way) in ways.iter().copied().enumerate() {
        match enable_mechanism(ebpf, context, way) {
            Ok(()) if rank == 0 => {
                let via = way.via.to_owned();
                return (State::On { via }, Some(way));
            }
            Ok(()) => {
                let state = State::Fallback {
                    via: way.via.to_owned(),
                    why: refused.join("; "),
                };
                return (state, Some(way));
            }
            Err(error) => {
                tracing::debug!(%feature, via = way.via, "refused: {error}");
                refused.push(error.to_string());
            }
        }
    }
    let why = refused.join("; ");
    let state = match remains_without(feature) {
        Some(via) => State::Fallback {
            via: via.to_owned(),
            why,
        },
        None => State::Off { why },
    };
    (state, None)
}

/// Loads every program of `way` and, for `Stage::Attach`, attaches the
/// hooked ones (iterators are attached by the caller). On resume the
/// programs are the previous agent's, still attached: a way counts as
/// enabled when all its links are pinned. Any failure unloads what this
/// way loaded.
fn enable_mechanism(
    ebpf: &mut Ebpf,
    context: &mut Context<'_>,
    way: &Mechanism,
) -> Result<(), Error> {
    let hooked = |hook: &Hook| !matches!(hook, Hook::Iter(_));
    if context.resume && way.programs.iter().any(|(_, hook)| hooked(hook)) {
        let plan = context.pins.expect("resume implies pins");
        return match way
            .programs
            .iter()
            .find(|(name, hook)| hooked(hook) && !plan.dir.join(name).exists())
        {
            None => Ok(()),
            Some((name, _)) => Err(Error::NotPinned { program: name }),
        };
    }
    let mut done: Vec<&'static str> = Vec::new();
    let result = way.programs.iter().try_for_each(|&(name, hook)| {
        let program = ebpf
            .program_mut(name)
            .unwrap_or_else(|| panic!("program {name} is missing from flowtel.bpf.o"));
        done.push(name);
        let loaded = if refused_for_test(name) {
            Err(Error::Verifier {
                program: name,
                reason: format!("refused for this test ({REFUSE_FOR_TEST})"),
            })
        } else {
            load(program, name, hook, context.btf)
        };
        context
            .verdicts
            .push((name, loaded.as_ref().map(drop).map_err(|e| e.to_string())));
        loaded?;
        if matches!(hook, Hook::Kprobe(_)) && !context.kprobes {
            return Err(Error::KprobesUnavailable);
        }
        if context.stage == Stage::Attach && hooked(&hook) {
            let attached = attach(program, hook, context.cgroup, context.cgroup_path)?;
            // Without pins the program holds its link: it is detached
            // when the agent stops.
            if let Some(plan) = context.pins {
                pin_link(program, attached, &plan.dir.join(name)).map_err(|reason| Error::Pin {
                    what: format!("the link of {name}"),
                    reason,
                })?;
            }
            tracing::debug!(program = name, ?hook, "attached");
        }
        Ok(())
    });
    if result.is_err() {
        for name in done {
            if let Some(program) = ebpf.program_mut(name) {
                unload(program, context.pins, name);
            }
        }
    }
    result
}

/// Detaches and unloads a program of a way that failed as a whole.
fn unload(program: &mut Program, pins: Option<&PinPlan>, name: &str) {
    if let Some(plan) = pins {
        let _ = std::fs::remove_file(plan.dir.join(name));
    }
    let _ = match program {
        Program::BtfTracePoint(p) => p.unload(),
        Program::CgroupSockAddr(p) => p.unload(),
        Program::CgroupSock(p) => p.unload(),
        Program::CgroupSkb(p) => p.unload(),
        Program::KProbe(p) => p.unload(),
        Program::Iter(p) => p.unload(),
        _ => Ok(()),
    };
}

/// For `Stage::Attach`, makes the link of a loaded iterator.
fn attach_iterator(
    ebpf: &mut Ebpf,
    name: &'static str,
    stage: Stage,
) -> Result<Option<BpfIterator>, Error> {
    if stage == Stage::Load {
        return Ok(None);
    }
    let program: &mut Iter = ebpf
        .program_mut(name)
        .unwrap_or_else(|| panic!("program {name} is missing from flowtel.bpf.o"))
        .try_into()
        .map_err(|e| load_error(name, e))?;
    let attach_failed = |reason: String| Error::Attach {
        hook: format!("the iterator {name}"),
        reason,
    };
    let program_fd = program
        .fd()
        .and_then(|fd| fd.try_clone().map_err(ProgramError::from))
        .map_err(|e| attach_failed(one_line(&e)))?;
    BpfIterator::attach(program_fd.as_fd())
        .map(Some)
        .map_err(|e| attach_failed(e.to_string()))
}

fn plan_pins(
    pin_dir: &Path,
    config: &Config,
    probe_set: ProbeSet,
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
            cause: std::io::Error::other("not on a bpf filesystem"),
        });
    }
    let fingerprint = pins::fingerprint(
        OBJECT,
        probe_set,
        config.max_connections,
        config.ring_buffer_bytes,
    );
    pins::plan(pin_dir, &fingerprint, REQUIRED_PINS, checkpoint_map_id)
}

/// A previous agent must have pinned one of these links for this one to
/// resume: the required feature's, either keying (the other features are
/// taken as pinned or not).
const REQUIRED_PINS: &[&str] = &["flowtel_state", "flowtel_state_by_addr"];

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
        (Hook::CgroupEgress | Hook::CgroupIngress, Program::CgroupSkb(program)) => program.load(),
        (Hook::Kprobe(_), Program::KProbe(program)) => program.load(),
        (Hook::Iter(target), Program::Iter(program)) => program.load(target, btf),
        (hook, _) => {
            return Err(Error::SectionMismatch {
                program: name,
                hook: format!("{hook:?}"),
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
    Skb(aya::programs::cgroup_skb::CgroupSkbLinkId),
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
        (Hook::CgroupEgress, Program::CgroupSkb(program)) => program
            .attach(cgroup, CgroupSkbAttachType::Egress, CGROUP_ATTACH_MODE)
            .map(Attached::Skb)
            .map_err(attach_error(cgroup_target("skb egress"))),
        (Hook::CgroupIngress, Program::CgroupSkb(program)) => program
            .attach(cgroup, CgroupSkbAttachType::Ingress, CGROUP_ATTACH_MODE)
            .map(Attached::Skb)
            .map_err(attach_error(cgroup_target("skb ingress"))),
        (Hook::Kprobe(function), Program::KProbe(program)) => program
            .attach(function, 0)
            .map(|_| Attached::Kprobe)
            .map_err(attach_error(format!("kprobe on {function}"))),
        (hook, _) => unreachable!("load() checked that {hook:?} fits its program and is hooked"),
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
        (Attached::Skb(id), Program::CgroupSkb(p)) => {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use aya_obj::ProgramSection;

    use super::*;

    /// The object's programs and the loader's tables are one contract: a
    /// program renamed, added or moved to another kind of hook on one side
    /// fails here, without root.
    #[test]
    fn every_program_of_the_object_has_its_hook_and_no_other() {
        let object = aya_obj::Object::parse(OBJECT).expect("flowtel.bpf.o parses");
        let in_object: BTreeSet<&str> = object.programs.keys().map(String::as_str).collect();
        let in_tables: BTreeSet<&str> = ALL_MECHANISMS
            .iter()
            .flat_map(|way| way.programs.iter().map(|(name, _)| *name))
            .collect();
        assert_eq!(in_object, in_tables);
        for (name, hook) in ALL_MECHANISMS.iter().flat_map(|way| way.programs.iter()) {
            let section = &object.programs[*name].section;
            let fits = matches!(
                (hook, section),
                (Hook::Tracepoint(_), ProgramSection::BtfTracePoint)
                    | (Hook::Cgroup(_), ProgramSection::CgroupSockAddr { .. })
                    | (Hook::Cgroup(_), ProgramSection::CgroupSock { .. })
                    | (
                        Hook::CgroupEgress,
                        ProgramSection::CgroupSkb {
                            attach_type: Some(CgroupSkbAttachType::Egress)
                        }
                    )
                    | (
                        Hook::CgroupIngress,
                        ProgramSection::CgroupSkb {
                            attach_type: Some(CgroupSkbAttachType::Ingress)
                        }
                    )
                    | (
                        Hook::Kprobe(_),
                        ProgramSection::KProbe | ProgramSection::KRetProbe
                    )
                    | (Hook::Iter(_), ProgramSection::Iter { .. })
            );
            assert!(fits, "{name}: {hook:?} but its section is {section:?}");
        }
    }

    #[test]
    fn no_two_ways_share_their_first_program() {
        let firsts: BTreeSet<&str> = ALL_MECHANISMS.iter().map(|way| way.programs[0].0).collect();
        assert_eq!(firsts.len(), ALL_MECHANISMS.len(), "Mechanism::is needs it");
    }

    #[test]
    fn every_feature_but_tcp_connections_can_be_lost() {
        for feature in Feature::ALL.into_iter().filter(|f| *f != Feature::Nat) {
            let ways = mechanisms(feature, ProbeSet::Tracepoint, true, Keying::Cookie);
            assert!(!ways.is_empty(), "{feature} has no way to work");
            assert!(!feature.loss().is_empty());
        }
        assert_eq!(
            mechanisms(Feature::Udp, ProbeSet::Tracepoint, true, Keying::Cookie)
                .iter()
                .map(|way| way.via)
                .collect::<Vec<_>>(),
            [PACKET_UDP.via, TRACEPOINT_UDP.via, KPROBE_UDP.via],
            "UDP falls back to tracepoints, then to kprobes where the kernel has them"
        );
    }
}
