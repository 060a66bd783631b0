//! Running an iterator in other network namespaces. A TCP iterator walks
//! the sockets of the namespace it is created in, so for a namespace other
//! than the agent's the iterator must be created from a thread that has
//! entered it (`setns`). That needs CAP_SYS_ADMIN (and CAP_SYS_PTRACE to
//! open another user's `/proc/PID/ns/net`): one thread, [`Entry`], keeps
//! just those two when the agent has them at start, while every other
//! thread drops all capabilities. Without them only the agent's own
//! namespace is walked, and [`Walked::unreachable`] says how many were not.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use crate::kernel::iter::BpfIterator;

/// A network namespace, by its inode (as `conn_info.netns` holds it), and
/// where it was last seen, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub inode: u32,
    pub seen_at: Option<Opener>,
}

/// Where a namespace can be opened: a process in it, or a file it is
/// bound to (`ip netns add`, Docker's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opener {
    Process(u32),
    Bound(PathBuf),
}

impl Opener {
    /// The namespace's file, if it is still the namespace `inode`.
    pub(crate) fn open(&self, inode: u32) -> Option<File> {
        let file = match self {
            Opener::Process(pid) => File::open(format!("/proc/{pid}/ns/net")),
            Opener::Bound(path) => File::open(path),
        }
        .ok()?;
        (file.metadata().ok()?.ino() as u32 == inode).then_some(file)
    }
}

/// What a walk over several namespaces did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Walked {
    /// Namespaces whose sockets the iterator walked, by inode.
    pub walked: Vec<u32>,
    /// Namespaces it could not enter (no privilege, or no process left in
    /// them to enter through).
    pub unreachable: usize,
}

/// Runs iterators in network namespaces.
pub struct Namespaces {
    own: u32,
    entry: Option<Entry>,
}

impl Namespaces {
    /// Starts the entering thread when this thread may enter namespaces.
    pub fn new() -> io::Result<Namespaces> {
        let own = own_inode()?;
        let entry = if may_enter_namespaces() {
            Some(Entry::spawn()?)
        } else {
            tracing::info!(
                "no CAP_SYS_ADMIN: TCP connections in other network namespaces (containers) count their bytes at close only, not at each poll"
            );
            None
        };
        Ok(Namespaces { own, entry })
    }

    /// Runs `iterator` once in each of `namespaces`. `complete` says the list
    /// is every namespace that matters now: the entering thread then closes
    /// the namespaces it holds open that are not on it.
    pub fn run(
        &self,
        iterator: &Arc<BpfIterator>,
        namespaces: &[Namespace],
        complete: bool,
    ) -> io::Result<Walked> {
        let mut walked = Walked::default();
        let mut others = Vec::new();
        for namespace in namespaces {
            if namespace.inode == self.own {
                iterator.run()?;
                walked.walked.push(namespace.inode);
            } else {
                others.push(namespace.clone());
            }
        }
        match &self.entry {
            Some(entry) if !others.is_empty() || complete => {
                let result = entry.run(iterator, others, complete)?;
                walked.walked.extend(result.walked);
                walked.unreachable += result.unreachable;
            }
            Some(_) => {}
            None => walked.unreachable += others.len(),
        }
        Ok(walked)
    }
}

/// Every network namespace on the host that a process is in or that is
/// bound to a file (`ip netns add`, Docker's), each once.
pub fn all_namespaces() -> Vec<Namespace> {
    let mut found: HashMap<u32, Opener> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(inode) = namespace_of_pid(pid) {
                found.entry(inode).or_insert(Opener::Process(pid));
            }
        }
    }
    for dir in BOUND_NAMESPACE_DIRS {
        for path in bound_namespaces(Path::new(dir)) {
            if let Ok(meta) = std::fs::metadata(&path) {
                found
                    .entry(meta.ino() as u32)
                    .or_insert(Opener::Bound(path));
            }
        }
    }
    let mut namespaces: Vec<Namespace> = found
        .into_iter()
        .map(|(inode, opener)| Namespace {
            inode,
            seen_at: Some(opener),
        })
        .collect();
    namespaces.sort_unstable_by_key(|n| n.inode);
    namespaces
}

/// Where namespaces bound to files live: iproute2's and Docker's.
const BOUND_NAMESPACE_DIRS: [&str; 2] = ["/run/netns", "/run/docker/netns"];

fn bound_namespaces(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// The namespace inode of a process, from the `net:[INODE]` link.
fn namespace_of_pid(pid: u32) -> Option<u32> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    parse_namespace_link(link.to_str()?)
}

fn parse_namespace_link(link: &str) -> Option<u32> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

pub(crate) fn own_inode() -> io::Result<u32> {
    Ok(std::fs::metadata("/proc/self/ns/net")?.ino() as u32)
}

const CAP_SYS_ADMIN: caps::Capability = caps::Capability::CAP_SYS_ADMIN;
const CAP_SYS_PTRACE: caps::Capability = caps::Capability::CAP_SYS_PTRACE;

/// Whether this thread may enter other network namespaces (`setns` needs
/// CAP_SYS_ADMIN).
pub fn may_enter_namespaces() -> bool {
    caps::has_cap(None, caps::CapSet::Effective, CAP_SYS_ADMIN).unwrap_or(false)
}

/// What a feature that works namespace by namespace reaches without
/// CAP_SYS_ADMIN: `flowtel check`'s `namespaces` line.
pub const OWN_NAMESPACE_ONLY: &str = "flowtel's own network namespace only: no CAP_SYS_ADMIN to enter the others (setns); TCP connections in other namespaces (containers, pods) count their bytes at close only, those older than the agent there are not counted, and NAT there is not seen";

/// The features that walk each network namespace (the TCP iterators,
/// conntrack) say so when this process cannot enter the others: they stay
/// on, in the agent's own namespace, which their `via` then says.
pub(crate) fn scope_features(features: &mut crate::Features) {
    if !may_enter_namespaces() {
        own_namespace_only(features);
    }
}

fn own_namespace_only(features: &mut crate::Features) {
    use crate::{Feature, FeatureState};
    const OWN: &str = "in flowtel's own network namespace only (no CAP_SYS_ADMIN)";
    let scoped = |via: &str| match via.contains("in each network namespace") {
        true => via.replace("in each network namespace", OWN),
        false => format!("{via}, {OWN}"),
    };
    for feature in [
        Feature::TcpLiveBytes,
        Feature::ExistingConnections,
        Feature::Nat,
    ] {
        let state = match features.get(feature).clone() {
            FeatureState::On { via } => FeatureState::On { via: scoped(&via) },
            FeatureState::Fallback { via, why } => FeatureState::Fallback {
                via: scoped(&via),
                why,
            },
            off => off,
        };
        features.set(feature, state);
    }
}

/// One walk for the entering thread.
struct Job {
    iterator: Arc<BpfIterator>,
    namespaces: Vec<Namespace>,
    complete: bool,
    done: mpsc::Sender<io::Result<Walked>>,
}

/// The thread that enters namespaces; it ends when this is dropped.
struct Entry {
    jobs: mpsc::Sender<Job>,
}

impl Entry {
    fn spawn() -> io::Result<Entry> {
        let (jobs, incoming) = mpsc::channel::<Job>();
        let home = File::open("/proc/self/ns/net")?;
        std::thread::Builder::new()
            .name("flowtel-netns".to_owned())
            .spawn(move || {
                keep_only_namespace_capabilities();
                let mut thread = EntryThread {
                    home,
                    open: HashMap::new(),
                };
                for job in incoming {
                    let result = thread.walk(&job);
                    let _ = job.done.send(result);
                }
            })?;
        Ok(Entry { jobs })
    }

    fn run(
        &self,
        iterator: &Arc<BpfIterator>,
        namespaces: Vec<Namespace>,
        complete: bool,
    ) -> io::Result<Walked> {
        let (done, result) = mpsc::channel();
        let gone = || io::Error::other("the namespace thread has stopped");
        self.jobs
            .send(Job {
                iterator: Arc::clone(iterator),
                namespaces,
                complete,
                done,
            })
            .map_err(|_| gone())?;
        result.recv().map_err(|_| gone())?
    }
}

/// The capabilities are this thread's own (Linux keeps them per thread):
/// it keeps what entering a namespace needs, and nothing else.
fn keep_only_namespace_capabilities() {
    keep_only_capabilities(&[CAP_SYS_ADMIN, CAP_SYS_PTRACE]);
}

/// Narrows the calling thread's capabilities to those of `keep` it has.
pub(crate) fn keep_only_capabilities(keep: &[caps::Capability]) {
    let keep: caps::CapsHashSet = keep.iter().copied().collect();
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        let have = caps::read(None, set).unwrap_or_default();
        let _ = caps::set(None, set, &have.intersection(&keep).copied().collect());
    }
    let _ = caps::clear(None, caps::CapSet::Inheritable);
    let _ = caps::clear(None, caps::CapSet::Ambient);
}

struct EntryThread {
    home: File,
    /// The namespaces entered before, kept open by inode.
    open: HashMap<u32, File>,
}

impl EntryThread {
    fn walk(&mut self, job: &Job) -> io::Result<Walked> {
        let mut walked = Walked::default();
        if job.complete {
            self.open
                .retain(|inode, _| job.namespaces.iter().any(|n| n.inode == *inode));
        }
        // Every namespace on the host, scanned at most once a walk, for the
        // namespaces not held open whose last sighting no longer fits.
        let mut scan: Option<HashMap<u32, Opener>> = None;
        for namespace in &job.namespaces {
            let Some(file) = self.find(namespace, &mut scan) else {
                walked.unreachable += 1;
                continue;
            };
            if enter(file).is_err() {
                walked.unreachable += 1;
                self.open.remove(&namespace.inode);
                continue;
            }
            let ran = job.iterator.run();
            // Back home before anything else: a failure to return would
            // leave this thread walking the wrong namespace.
            enter(&self.home)?;
            ran?;
            walked.walked.push(namespace.inode);
        }
        Ok(walked)
    }

    /// The namespace's file: held open from before, or opened where it was
    /// last seen, or found among all processes and bound namespaces.
    fn find(
        &mut self,
        namespace: &Namespace,
        scan: &mut Option<HashMap<u32, Opener>>,
    ) -> Option<&File> {
        use std::collections::hash_map::Entry as Slot;
        match self.open.entry(namespace.inode) {
            Slot::Occupied(held) => Some(held.into_mut()),
            Slot::Vacant(slot) => {
                let inode = namespace.inode;
                let file = namespace
                    .seen_at
                    .as_ref()
                    .and_then(|opener| opener.open(inode))
                    .or_else(|| {
                        let all = scan.get_or_insert_with(|| {
                            all_namespaces()
                                .into_iter()
                                .filter_map(|n| Some((n.inode, n.seen_at?)))
                                .collect()
                        });
                        all.get(&inode)?.open(inode)
                    })?;
                Some(slot.insert(file))
            }
        }
    }
}

pub(crate) fn enter(namespace: &File) -> io::Result<()> {
    // SAFETY: setns takes a descriptor we hold open and a namespace type.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Feature, FeatureState, Features};

    #[test]
    fn without_setns_the_namespace_walks_say_they_stay_home() {
        let mut features = Features::default();
        let on = |via: &str| FeatureState::On {
            via: via.to_owned(),
        };
        features.set(
            Feature::TcpLiveBytes,
            on("iter/tcp in each network namespace"),
        );
        features.set(Feature::Nat, on("conntrack over netlink"));
        features.set(Feature::Udp, on("cgroup_skb egress"));
        own_namespace_only(&mut features);
        let via = |feature| match features.get(feature) {
            FeatureState::On { via } => via.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            via(Feature::TcpLiveBytes),
            "iter/tcp in flowtel's own network namespace only (no CAP_SYS_ADMIN)"
        );
        assert_eq!(
            via(Feature::Nat),
            "conntrack over netlink, in flowtel's own network namespace only (no CAP_SYS_ADMIN)"
        );
        assert_eq!(via(Feature::Udp), "cgroup_skb egress");
        assert!(matches!(
            features.get(Feature::ExistingConnections),
            FeatureState::Off { .. }
        ));
    }

    #[test]
    fn reads_the_namespace_link() {
        assert_eq!(parse_namespace_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_namespace_link("mnt:[4026531840]"), None);
        assert_eq!(parse_namespace_link("net:[x]"), None);
    }

    #[test]
    fn finds_this_process_namespace() {
        let own = own_inode().unwrap();
        assert!(all_namespaces().iter().any(|n| n.inode == own));
    }
}
