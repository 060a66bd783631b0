//! flowtel's receiver: loads the eBPF programs in `bpf-programs/`, attaches
//! them, and turns the kernel's per-connection counters into
//! [`ConnectionSample`]s.
//!
//! ```no_run
//! # async fn run() -> Result<(), receiver::Error> {
//! let mut receiver = receiver::Receiver::start(&receiver::Config::default())?;
//! let poll = receiver.poll()?;
//! for sample in &poll.samples {
//!     println!("{} -> {}: {} bytes sent", sample.local, sample.remote, sample.counters.bytes_sent);
//! }
//! # Ok(()) }
//! ```

mod cgroups;
mod config;
mod decode;
pub mod dns;
pub mod duration_serde;
mod error;
mod features;
mod kernel;
mod nat;
mod netns;
mod owners;
mod ports;
mod process;
mod sample;
mod skipped_closes;
mod support;
mod udp_idle;

use foldhash::{HashSet, HashSetExt};
use std::sync::Arc;
use std::time::SystemTime;

use health::PollHealth;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};

pub use cgroups::ContainerPath;
pub use config::{Config, Persistence, ProbeSet};
pub use dns::{DnsAnswer, DnsContent, DnsMessage, DnsQuestion, MessageKind};
pub use error::Error;
pub use features::{Feature, Features, Level, Levels, State as FeatureState, REFUSE_FOR_TEST};
pub use kernel::preflight::cgroup_v2_root;
pub use kernel::programs::Verdict;
pub use netns::{may_enter_namespaces, OWN_NAMESPACE_ONLY};
pub use ports::PortFacts;
pub use sample::{
    CloseError, ConnectionId, ConnectionSample, ConnectionState, Counters, Direction, Poll,
    ProcessInfo, Rtt, Translation, Transport,
};
pub use support::{support, verify_every_program, verify_programs, HookSupport, Support, Verified};

use decode::{decode, Ending};
use kernel::abi::{self, CgroupEvent, ConnEvent, ConnInfo, ConnKey, NetnsSeen};
use kernel::events::RingEvents;
use kernel::{batch, preflight, programs, reap};
use process::ProcessResolver;

/// The running kernel side. Dropping it detaches every program.
pub struct Receiver {
    conns: BpfHashMap<MapData, ConnKey, ConnInfo>,
    /// Copies the TCP connections' counters from their sockets into `conns`,
    /// one network namespace at a time.
    tcp_refresh: Option<Arc<kernel::iter::BpfIterator>>,
    /// The namespaces that hold tracked TCP connections, by inode.
    tcp_netns: BpfHashMap<MapData, u32, NetnsSeen>,
    namespaces: netns::Namespaces,
    /// The namespaces with open TCP connections at the last read, and when
    /// (CLOCK_MONOTONIC): the others are no longer walked.
    last_read: (HashSet<u32>, u64),
    /// Ends TCP entries whose close the kernel did not report.
    skipped_closes: skipped_closes::SkippedCloses,
    namespaces_unreachable: u64,
    features: Features,
    /// Ends UDP flows whose socket's release was not reported.
    idle_udp: udp_idle::IdleUdp,
    /// Entries the last poll read: the next one sizes its buffers by it.
    last_tracked: u64,
    /// Of those, the quiet ones (see [`Poll::quiet`]).
    last_quiet: usize,
    /// Reads conntrack for the peers NAT rewrote, while feature nat is on.
    nat: Option<nat::Nat>,
    /// Gives accepted TCP connections the process that holds them.
    owners: Option<owners::OwnersWalk>,
    stats: PerCpuArray<MapData, u64>,
    /// Runs of the tracing programs the kernel skipped, and when the log
    /// last said so.
    missed_runs: kernel::misses::MissedRuns,
    missed_runs_told: Option<std::time::Instant>,
    closed: RingEvents<ConnEvent>,
    /// Cgroups made and removed, with the task reading them, when the
    /// containers feature is on.
    cgroup_events: Option<(RingEvents<CgroupEvent>, tokio::task::JoinHandle<()>)>,
    /// UDP sockets whose release was read after the last map walk: their
    /// entries are reaped at the next.
    releases_after_read: HashSet<u64>,
    reader: tokio::task::JoinHandle<()>,
    /// The DNS messages' ring buffer and its drain, while feature dns is on.
    dns: Option<(dns::DnsCapture, tokio::task::JoinHandle<()>)>,
    processes: ProcessResolver,
    capacity: u32,
    probe_set: ProbeSet,
    resumed: bool,
    conns_map_id: Option<u32>,
    // Last: dropping it detaches the programs after the maps are released
    // (programs whose links are pinned stay attached).
    _programs: aya::Ebpf,
}

impl Receiver {
    /// Checks privileges and kernel support, loads and attaches the programs.
    /// Must be called inside a tokio runtime: closed connections are read from
    /// the ring buffer by a background task.
    pub fn start(config: &Config) -> Result<Receiver, Error> {
        Receiver::start_resuming(config, None)
    }

    /// Like [`Receiver::start`]; with `config.persistence`, adopts the
    /// programs and maps a previous agent left pinned when their connection
    /// map is `checkpoint_map_id` (the one the caller's checkpoint was taken
    /// from), else starts afresh. [`Receiver::resumed`] says which.
    pub fn start_resuming(
        config: &Config,
        checkpoint_map_id: Option<u32>,
    ) -> Result<Receiver, Error> {
        config.validate()?;
        preflight::check_capabilities()?;
        preflight::check_btf()?;
        preflight::raise_memlock_limit();
        let mut loaded =
            programs::load_and_attach(config, programs::Stage::Attach, checkpoint_map_id)?;
        let nat = start_nat(&mut loaded.features);
        for warning in loaded.features.warnings() {
            tracing::warn!("{warning}");
        }
        let namespaces = netns::Namespaces::new().map_err(Error::Namespaces)?;
        if let Some(discover) = loaded.tcp_discover.take() {
            let walked = namespaces
                .run(&Arc::new(discover), &netns::all_namespaces(), false)
                .map_err(Error::Discover)?;
            if walked.unreachable > 0 {
                tracing::warn!(
                    "{} network namespaces could not be entered: their TCP connections older than the agent are not counted",
                    walked.unreachable
                );
            }
        }
        let resumed = loaded.pins.as_ref().is_some_and(|plan| plan.resume);
        let ebpf = &mut loaded.ebpf;
        let conns: BpfHashMap<MapData, ConnKey, ConnInfo> = take_map(ebpf, "conns")?;
        let conns_map_id = loaded.pins.as_ref().and_then(|plan| {
            aya::maps::MapInfo::from_pin(plan.dir.join("conns"))
                .ok()
                .map(|info| info.id())
        });
        let stats = take_map(ebpf, "stats")?;
        let ring: RingBuf<MapData> = take_map(ebpf, "events")?;
        let closed = RingEvents::new(ring, "closed connections");
        let reader = closed.spawn_reader().map_err(Error::RingBuffer)?;
        // On: the cgroup tracepoints; their fallback is /proc.
        let (containers, cgroup_events) = match loaded.features.get(Feature::Containers).level() {
            Level::Off | Level::Fallback => (process::Containers::ProcFiles, None),
            Level::On => {
                let ring: RingBuf<MapData> = take_map(ebpf, "cgroup_events")?;
                let events = RingEvents::new(ring, "cgroup events");
                let reader = events.spawn_reader().map_err(Error::RingBuffer)?;
                // After the programs are attached: a cgroup made during
                // the walk is told by the kernel, if the walk misses it.
                let mut table = cgroups::CgroupTable::new(MAX_CONTAINER_CGROUPS);
                table.walk(&preflight::cgroup_v2_root(None)?);
                tracing::debug!("{} container cgroups found at start", table.len());
                (process::Containers::Cgroups(table), Some((events, reader)))
            }
        };
        let tcp_netns = take_map(ebpf, "tcp_netns")?;
        let dns = if loaded.features.get(Feature::Dns).level() != Level::Off {
            let capture = dns::DnsCapture::new(take_map(ebpf, "dns_events")?);
            let drain = capture.spawn_reader().map_err(Error::RingBuffer)?;
            Some((capture, drain))
        } else {
            None
        };
        let tcp_refresh = loaded.tcp_refresh.take().map(Arc::new);
        let mut owners = loaded.owners.take().map(owners::OwnersWalk::new);
        // At once, so that the connections just discovered have their
        // owners before the first poll.
        if let Some(owners) = &mut owners {
            owners.run_if_due().map_err(Error::Owners)?;
        }
        Ok(Receiver {
            tcp_refresh,
            tcp_netns,
            namespaces,
            last_read: (HashSet::new(), 0),
            skipped_closes: skipped_closes::SkippedCloses::default(),
            namespaces_unreachable: 0,
            features: loaded.features,
            idle_udp: udp_idle::IdleUdp::new(config.udp_idle_timeout),
            last_tracked: 0,
            last_quiet: 0,
            nat,
            owners,
            conns,
            stats,
            missed_runs: kernel::misses::MissedRuns::default(),
            missed_runs_told: None,
            closed,
            releases_after_read: HashSet::new(),
            reader,
            dns,
            processes: ProcessResolver::new(containers),
            cgroup_events,
            capacity: config.max_connections,
            probe_set: loaded.probe_set,
            resumed,
            conns_map_id,
            _programs: loaded.ebpf,
        })
    }

    /// True when this receiver adopted a previous agent's pinned programs
    /// and maps: its counters continue that agent's.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The kernel's id of the connection map, for checkpoints.
    pub fn conns_map_id(&self) -> Option<u32> {
        self.conns_map_id
    }

    /// The probe set in use.
    pub fn probe_set(&self) -> ProbeSet {
        self.probe_set
    }

    /// Whether this kernel checks privilege on every bpf(2) command, so
    /// that reading the maps needs CAP_BPF (kernels before 5.x with
    /// `kernel.unprivileged_bpf_disabled` set): found by reading a map from
    /// a thread that has dropped its effective capabilities.
    pub fn reads_need_privilege(&self) -> bool {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    if caps::clear(None, caps::CapSet::Effective).is_err() {
                        return true;
                    }
                    matches!(
                        self.stats.get(&0, 0),
                        Err(aya::maps::MapError::SyscallError(ref e))
                            if e.io_error.raw_os_error() == Some(libc::EPERM)
                    )
                })
                .join()
                .unwrap_or(true)
        })
    }

    /// How each feature works on this kernel.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Reads every tracked connection: open ones with their counters so far,
    /// and each connection closed since the last poll, once, with its final
    /// counters.
    pub fn poll(&mut self) -> Result<Poll, Error> {
        let at = SystemTime::now();
        let reading = std::time::Instant::now();
        // Events first: a connection whose close event is read here has left
        // the map (or is leaving it), so the map read below cannot miss it;
        // the events written during the walk are read after it.
        let mut samples = Vec::new();
        let mut reported: HashSet<(ConnKey, u64)> = HashSet::new();
        let mut released_udp_sockets = std::mem::take(&mut self.releases_after_read);
        self.take_events(&mut samples, &mut reported, &mut released_udp_sockets);
        let mut phases = Phases::starting(reading);
        let events_took = phases.lap();
        if let Some(owners) = &mut self.owners {
            owners.run_if_due().map_err(Error::Owners)?;
        }
        let owners_took = phases.lap();
        self.refresh_tcp()?;
        let refresh_took = phases.lap();
        let read_at = kernel::monotonic_ns();
        let polled = std::time::Instant::now();
        // Entry by entry as the batches arrive, so that the map is never
        // held in memory twice (as entries and as samples). The batches are
        // whole hash buckets, each copied once under its lock: no key
        // comes twice.
        let moving = (self.last_tracked as usize).saturating_sub(self.last_quiet);
        samples.reserve(moving + moving / 8);
        let mut tracked = 0u64;
        let mut open_tcp_netns = HashSet::new();
        let mut finished = Vec::new();
        let mut quiet = Vec::with_capacity(self.last_quiet + self.last_quiet / 8);
        let last_read_ns = self.last_read.1;
        let (processes, idle_udp) = (&mut self.processes, &mut self.idle_udp);
        let skipped_closes = &mut self.skipped_closes;
        batch::for_each(&self.conns, |key, info| {
            tracked += 1;
            if decode::is_tcp(info) && !decode::is_closed(info) {
                open_tcp_netns.insert(info.netns);
            }
            if reported.contains(&(*key, info.first_seen_ns)) {
                return;
            }
            // A closed entry is still here when the ring buffer was full; a
            // UDP socket's entries stay until user space sees its release,
            // or until they have been idle too long.
            let closed = decode::is_closed(info)
                || skipped_closes.socket_gone(info)
                || (!decode::is_tcp(info)
                    && (released_udp_sockets.contains(&key.cookie)
                        || idle_udp.is_idle(key, info, polled)));
            if closed {
                finished.push(*key);
            } else if !decode::moved_since(info, last_read_ns) {
                quiet.push(decode::connection_id(key, info));
            } else {
                let process = processes.resolve(info.pid, &info.comm, info.cgroup_id);
                samples.push(decode(key, info, Ending::StillOpen, process));
            }
        })
        .map_err(|source| Error::Map {
            map: "conns",
            cause: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error: source,
            }),
        })?;
        let map_read_took = phases.lap();
        for key in finished {
            // Take the entry and its very last value in one step.
            let info = match reap::take_entry(&mut self.conns, &key) {
                Ok(Some(last)) => last,
                Ok(None) => continue, // the kernel handed it over meanwhile
                Err(error) => return Err(Error::Reap(error)),
            };
            let process = self.processes.resolve(info.pid, &info.comm, info.cgroup_id);
            samples.push(decode(&key, &info, Ending::Closed, process));
        }
        // The connections that closed after the first drain, while the map
        // was walked: read now, so that none of them is missing from this
        // poll with its close still to come (the processor would forget it
        // and count it afresh at that close). After the map's samples, so
        // that a connection seen open above closes after it.
        let mut released_after_read = HashSet::new();
        self.take_events(&mut samples, &mut reported, &mut released_after_read);
        self.releases_after_read = released_after_read;
        self.last_tracked = tracked;
        self.last_quiet = quiet.len();
        self.processes.end_poll();
        self.idle_udp.end_poll();
        self.last_read = (open_tcp_netns, read_at);
        if let Some(nat) = &self.nat {
            nat.translate(&mut samples);
            nat.end_poll();
        }
        let ports = PortFacts::read(&samples);
        let mut health = self.health(tracked)?;
        health.runs_missed = self.read_missed_runs();
        let dns = match &self.dns {
            Some((capture, _)) => {
                let taken = capture.take();
                health.dns_malformed = taken.malformed;
                health.dns_overflowed = taken.overflowed;
                taken.messages
            }
            None => Vec::new(),
        };
        tracing::debug!(
            ?events_took,
            ?owners_took,
            ?refresh_took,
            ?map_read_took,
            rest_took = ?phases.lap(),
            "poll phases"
        );
        health.poll_duration = reading.elapsed();
        Ok(Poll {
            at: Some(at),
            samples,
            quiet,
            health,
            ports,
            dns,
            monotonic_ns: kernel::monotonic_ns(),
        })
    }

    /// Brings every open TCP connection's counters up to date, in each
    /// network namespace that holds one. A namespace that had none at the
    /// last read and no new connection since is forgotten.
    fn refresh_tcp(&mut self) -> Result<(), Error> {
        let Some(refresh) = &self.tcp_refresh else {
            return Ok(());
        };
        let (open, read_at) = &self.last_read;
        let mut walk = Vec::new();
        let mut forget = Vec::new();
        for entry in self.tcp_netns.iter() {
            let (inode, seen) = entry.map_err(|source| Error::Map {
                map: "tcp_netns",
                cause: source,
            })?;
            if open.contains(&inode) || seen.last_ns >= *read_at {
                walk.push(netns::Namespace {
                    inode,
                    seen_at: (seen.pid != 0).then_some(netns::Opener::Process(seen.pid)),
                });
            } else {
                forget.push(inode);
            }
        }
        for inode in forget {
            // Gone already (LRU) is as good.
            let _ = self.tcp_netns.remove(&inode);
        }
        let began = kernel::monotonic_ns();
        let walked = self
            .namespaces
            .run(refresh, &walk, true)
            .map_err(Error::Refresh)?;
        self.namespaces_unreachable = walked.unreachable as u64;
        self.skipped_closes.walked(walked.walked, began);
        Ok(())
    }

    /// Everything the ring buffer holds now: closed connections become
    /// samples (and `reported`), released UDP sockets go to `released`.
    fn take_events(
        &mut self,
        samples: &mut Vec<ConnectionSample>,
        reported: &mut HashSet<(ConnKey, u64)>,
        released: &mut HashSet<u64>,
    ) {
        self.learn_cgroups();
        let events = self.closed.take();
        samples.reserve(events.len());
        for event in events {
            self.take_event(event, samples, reported, released);
        }
    }

    /// The cgroups made and removed since the last look, before any
    /// connection of theirs is named.
    fn learn_cgroups(&mut self) {
        let (Some((events, _)), Some(table)) = (&self.cgroup_events, self.processes.cgroups_mut())
        else {
            return;
        };
        for event in events.take() {
            match (event.kind, event.path()) {
                (abi::CGROUP_MADE, Some(path)) => table.made(event.id, path),
                (abi::CGROUP_REMOVED, _) => table.removed(event.id),
                _ => {}
            }
        }
    }

    fn take_event(
        &mut self,
        event: ConnEvent,
        samples: &mut Vec<ConnectionSample>,
        reported: &mut HashSet<(ConnKey, u64)>,
        released_udp_sockets: &mut HashSet<u64>,
    ) {
        match event.kind {
            abi::EVENT_CLOSED => {
                let process =
                    self.processes
                        .resolve(event.info.pid, &event.info.comm, event.info.cgroup_id);
                samples.push(decode(&event.key, &event.info, Ending::Closed, process));
                reported.insert((event.key, event.info.first_seen_ns));
            }
            abi::EVENT_RELEASED => {
                released_udp_sockets.insert(event.key.cookie);
            }
            other => tracing::warn!(kind = other, "unknown ring buffer event skipped"),
        }
    }

    /// The total of the skipped runs; says which programs skipped more, at
    /// most once a minute.
    fn read_missed_runs(&mut self) -> u64 {
        let (total, grew) = self.missed_runs.update(&self._programs);
        let quiet = self
            .missed_runs_told
            .is_some_and(|told| told.elapsed() < std::time::Duration::from_secs(60));
        if !grew.is_empty() && !quiet {
            let newly_lost: u64 = grew.iter().map(|(_, runs)| runs).sum();
            let programs: Vec<String> = grew
                .iter()
                .map(|(program, runs)| format!("{runs} of {program}"))
                .collect();
            tracing::warn!(
                "the kernel skipped runs of flowtel's programs ({}): a run of the same program was under way on that CPU (interrupted, or preempted on Linux 7.2+); of those {} events its twin took those that came while the run was in its body, the others are lost (flowtel.kernel.runs.missed counts them all, an upper bound)",
                programs.join(", "),
                newly_lost
            );
            self.missed_runs_told = Some(std::time::Instant::now());
        }
        total
    }

    fn health(&self, tracked: u64) -> Result<PollHealth, Error> {
        let stat = |index: usize| -> Result<u64, Error> {
            let values = self
                .stats
                .get(&(index as u32), 0)
                .map_err(|source| Error::Map {
                    map: "stats",
                    cause: source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(PollHealth {
            connections_dropped: stat(abi::STAT_MAP_FULL)?,
            untracked_events: stat(abi::STAT_UNTRACKED)?,
            close_events_deferred: stat(abi::STAT_CLOSE_DEFERRED)?,
            udp_releases_lost: stat(abi::STAT_RELEASE_LOST)?,
            tcp_closes_missed: self.skipped_closes.found(),
            insert_failures: stat(abi::STAT_INSERT_FAILED)?,
            cgroups_lost: stat(abi::STAT_CGROUP_LOST)?
                + self
                    .processes
                    .cgroups()
                    .map_or(0, cgroups::CgroupTable::dropped),
            dns_lost: stat(abi::STAT_DNS_LOST)?,
            dns_malformed: 0,
            dns_overflowed: 0,
            runs_missed: 0,
            namespaces_unreachable: self.namespaces_unreachable,
            nat_resyncs: self.nat.as_ref().map_or(0, nat::Nat::resyncs),
            nat_entries_dropped: self.nat.as_ref().map_or(0, nat::Nat::dropped),
            container_runtime_errors: 0,
            kubernetes_relists: 0,
            kubernetes_objects_malformed: 0,
            kubernetes_api_errors: 0,
            features: self.features.levels(),
            tracked_connections: tracked,
            map_capacity: self.capacity.into(),
            poll_duration: std::time::Duration::ZERO,
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some((_, reader)) = &self.cgroup_events {
            reader.abort();
        }
        if let Some((_, drain)) = &self.dns {
            drain.abort();
        }
    }
}

/// The time each phase of a poll took, for the debug log.
struct Phases {
    last: std::time::Instant,
}

impl Phases {
    fn starting(at: std::time::Instant) -> Phases {
        Phases { last: at }
    }

    /// The time since the last lap (or the start).
    fn lap(&mut self) -> std::time::Duration {
        let now = std::time::Instant::now();
        let took = now - self.last;
        self.last = now;
        took
    }
}

/// Container cgroups held at most (a few hundred bytes each).
const MAX_CONTAINER_CGROUPS: usize = 16_384;

/// The conntrack reader when feature nat is on; a reader that cannot start
/// turns the feature off.
fn start_nat(features: &mut Features) -> Option<nat::Nat> {
    if features.get(Feature::Nat).level() != Level::On {
        return None;
    }
    match nat::Nat::start() {
        Ok(nat) => Some(nat),
        Err(e) => {
            features.set(
                Feature::Nat,
                FeatureState::Off {
                    why: format!("the conntrack reader could not start: {e}"),
                },
            );
            None
        }
    }
}

fn take_map<M>(ebpf: &mut aya::Ebpf, name: &'static str) -> Result<M, Error>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .unwrap_or_else(|| panic!("map {name} is missing from flowtel.bpf.o"));
    M::try_from(map).map_err(|source| Error::Map {
        map: name,
        cause: source,
    })
}

/// This host's name, as `host.name` reports it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}
