//! NAT through conntrack: for a connection whose addresses a DNAT, a port
//! forward or a masquerade rewrote, the peer its bytes really reached.
//! One thread reads the conntrack netlink sockets of every network
//! namespace on the host (a dump when a socket opens, then the new and
//! destroyed events) and keeps the translated entries; each poll reads
//! what is still waiting on the sockets, then looks its samples up there.
//! The thread reads at most once per [`COALESCE`], so that a host opening
//! thousands of connections a second wakes it a few times a second, not
//! once per connection.

mod entry;
mod filter;
mod socket;
mod table;

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::features::{refused_for_test, State, REFUSE_FOR_TEST};
use crate::netns;
use crate::sample::ConnectionSample;
use entry::Change;
use socket::{ConntrackSocket, Message};
use table::Table;

/// Exists while nf_conntrack is loaded.
const CONNTRACK_LOADED: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// How often the thread looks for new network namespaces, and for gone
/// ones (a socket keeps its namespace alive).
const RESCAN: Duration = Duration::from_secs(10);

/// How long the thread waits for events before it looks at the clock.
const WAKE_MS: libc::c_int = 200;

/// After a read, how long the thread lets events gather before the next
/// one; a poll reads what came meanwhile itself. At 10,000 new
/// connections a second that is about 500 events, 0.4 MiB of the socket's
/// 8 MiB.
const COALESCE: Duration = Duration::from_millis(50);

/// Whether conntrack can be read here: nf_conntrack loaded and a dump of
/// this namespace answered (its first entry is answer enough: a host with
/// many takes a while to list them all).
pub fn availability() -> State {
    if refused_for_test("conntrack") {
        return State::Off {
            why: format!("conntrack refused for this test ({REFUSE_FOR_TEST})"),
        };
    }
    if !Path::new(CONNTRACK_LOADED).exists() {
        return State::Off {
            why: format!("nf_conntrack is not loaded (no {CONNTRACK_LOADED})"),
        };
    }
    match probe() {
        Ok(()) => State::On {
            via: "conntrack over netlink".to_owned(),
        },
        Err(e) => State::Off {
            why: format!("the kernel refused a conntrack dump over netlink: {e}"),
        },
    }
}

fn probe() -> io::Result<()> {
    let mut socket = ConntrackSocket::open()?;
    socket.request_dump()?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let mut answer = None;
        socket.read(|message| match message {
            Message::DumpDone | Message::Change(_) => answer = answer.take().or(Some(Ok(()))),
            Message::Refused(e) => answer = Some(Err(e)),
        })?;
        if let Some(answer) = answer {
            return answer;
        }
        wait_readable(&[socket.fd()], WAKE_MS);
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "no answer within 2 s",
    ))
}

/// The conntrack reader; the thread ends when this is dropped.
pub struct Nat {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Nat {
    /// Starts the reading thread. It keeps CAP_NET_ADMIN (a dump after an
    /// overflow needs it) and what entering namespaces needs, nothing else.
    pub fn start() -> io::Result<Nat> {
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            home: File::open("/proc/self/ns/net")?,
            own: netns::own_inode()?,
            shared: Arc::clone(&shared),
            stop: Arc::clone(&stop),
        };
        // The agent's own namespace at once, so that a failure is the
        // caller's to report.
        shared.watch(reader.own, ConntrackSocket::open()?);
        let thread = std::thread::Builder::new()
            .name("flowtel-conntrack".to_owned())
            .spawn(move || {
                netns::keep_only_capabilities(&[
                    caps::Capability::CAP_NET_ADMIN,
                    caps::Capability::CAP_SYS_ADMIN,
                    caps::Capability::CAP_SYS_PTRACE,
                ]);
                reader.run();
            })?;
        Ok(Nat {
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Gives each sample what NAT rewrote of it, if anything. Reads the
    /// events still waiting first: the connections of this poll's samples
    /// were all made before it.
    pub fn translate(&self, samples: &mut [ConnectionSample]) {
        self.shared.read_all();
        let table = lock(&self.shared.table);
        for sample in samples {
            if let Some(translation) =
                table.translation(sample.netns, sample.transport, sample.local, sample.remote)
            {
                sample.translation = Some(Box::new(translation));
            }
        }
    }

    /// The poll's samples are read: entries destroyed two polls ago go.
    pub fn end_poll(&self) {
        lock(&self.shared.table).end_poll();
    }

    /// Dumps that followed an overflow of a conntrack socket.
    pub fn resyncs(&self) -> u64 {
        self.shared.resyncs.load(Ordering::Relaxed)
    }

    /// Translated entries not held because the table was full.
    pub fn dropped(&self) -> u64 {
        lock(&self.shared.table).dropped
    }
}

impl Drop for Nat {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding it left data that is still consistent enough
    // to read.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Watched {
    socket: ConntrackSocket,
    /// The dump under way, if one is.
    resync: Option<u64>,
    /// Events were lost since that dump began: another follows it.
    again: bool,
}

/// What the thread and the polls share: the sockets, by namespace inode,
/// and the table they fill. Locked in that order.
#[derive(Default)]
struct Shared {
    sockets: Mutex<HashMap<u32, Watched>>,
    table: Mutex<Table>,
    resyncs: AtomicU64,
}

impl Shared {
    fn watch(&self, inode: u32, socket: ConntrackSocket) {
        let mut watched = Watched {
            socket,
            resync: None,
            again: false,
        };
        self.dump(inode, &mut watched);
        lock(&self.sockets).insert(inode, watched);
    }

    fn dump(&self, inode: u32, watched: &mut Watched) {
        match watched.socket.request_dump() {
            Ok(()) => watched.resync = Some(lock(&self.table).begin_resync()),
            Err(e) => tracing::warn!(inode, "conntrack: the dump request failed: {e}"),
        }
    }

    /// Reads what waits on every socket.
    fn read_all(&self) {
        let mut sockets = lock(&self.sockets);
        let inodes: Vec<u32> = sockets.keys().copied().collect();
        for inode in inodes {
            self.read(&mut sockets, inode);
        }
    }

    /// Reads what waits on the socket of `inode`.
    fn read(&self, sockets: &mut HashMap<u32, Watched>, inode: u32) {
        let Some(mut watched) = sockets.remove(&inode) else {
            return;
        };
        let mut changes = Vec::new();
        let mut done = false;
        let read = watched.socket.read(|message| match message {
            Message::Change(change) => changes.push(change),
            Message::DumpDone => done = true,
            Message::Refused(e) => {
                tracing::warn!(inode, "conntrack: the kernel refused the dump: {e}")
            }
        });
        {
            let mut table = lock(&self.table);
            for change in changes {
                match change {
                    Change::Seen(tracked) if tracked.is_translated() => {
                        table.insert(inode, &tracked)
                    }
                    Change::Gone(tracked) if tracked.is_translated() => {
                        table.destroyed(inode, &tracked)
                    }
                    _ => {}
                }
            }
            if let (true, Some(resync)) = (done, watched.resync) {
                table.end_resync(inode, resync);
                watched.resync = None;
                // What a dump cost shows here (and the bench waits for it).
                tracing::debug!(
                    inode,
                    held = table.len(),
                    dropped = table.dropped,
                    "conntrack: namespace dumped"
                );
            }
        }
        match read {
            Ok(true) => {}
            // Events were lost: the namespace is read again by a dump (one
            // at a time), and what it no longer lists goes.
            Ok(false) => {
                self.resyncs.fetch_add(1, Ordering::Relaxed);
                watched.again = true;
            }
            Err(e) => {
                tracing::warn!(
                    inode,
                    "conntrack: reading the socket failed, closing it: {e}"
                );
                return;
            }
        }
        if watched.again && watched.resync.is_none() {
            watched.again = false;
            self.dump(inode, &mut watched);
        }
        sockets.insert(inode, watched);
    }
}

struct Reader {
    home: File,
    own: u32,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Reader {
    fn run(&self) {
        let mut scanned: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if scanned.is_none_or(|at| at.elapsed() >= RESCAN) {
                if let Err(e) = self.rescan() {
                    tracing::error!("conntrack: could not return to the agent's network namespace ({e}); NAT translations stop here");
                    return;
                }
                scanned = Some(Instant::now());
            }
            let (inodes, fds): (Vec<u32>, Vec<_>) = lock(&self.shared.sockets)
                .iter()
                .map(|(inode, watched)| (*inode, watched.socket.fd()))
                .unzip();
            let ready = wait_readable(&fds, WAKE_MS);
            if !ready.contains(&true) {
                continue;
            }
            {
                let mut sockets = lock(&self.shared.sockets);
                for (inode, _) in inodes.iter().zip(ready).filter(|(_, ready)| *ready) {
                    self.shared.read(&mut sockets, *inode);
                }
            }
            std::thread::sleep(COALESCE);
        }
    }

    /// Opens a socket in each namespace not watched yet; closes those of
    /// the namespaces that are gone.
    fn rescan(&self) -> io::Result<()> {
        let all = netns::all_namespaces();
        let own = self.own;
        let watched: Vec<u32> = lock(&self.shared.sockets).keys().copied().collect();
        for inode in &watched {
            if *inode != own && !all.iter().any(|n| n.inode == *inode) {
                lock(&self.shared.sockets).remove(inode);
                lock(&self.shared.table).forget(*inode);
            }
        }
        for namespace in all {
            if watched.contains(&namespace.inode) {
                continue;
            }
            let Some(file) = namespace
                .seen_at
                .as_ref()
                .and_then(|opener| opener.open(namespace.inode))
            else {
                continue;
            };
            if netns::enter(&file).is_err() {
                continue;
            }
            let opened = ConntrackSocket::open();
            netns::enter(&self.home)?;
            match opened {
                Ok(socket) => self.shared.watch(namespace.inode, socket),
                Err(e) => tracing::debug!(
                    inode = namespace.inode,
                    "conntrack: no socket in this namespace: {e}"
                ),
            }
        }
        Ok(())
    }
}

/// Which of `fds` have something to read, waiting up to `timeout_ms`.
fn wait_readable(fds: &[std::os::fd::RawFd], timeout_ms: libc::c_int) -> Vec<bool> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    if polled.is_empty() {
        std::thread::sleep(Duration::from_millis(timeout_ms as u64));
        return Vec::new();
    }
    // SAFETY: a valid array of pollfd of the given length.
    let ready = unsafe {
        libc::poll(
            polled.as_mut_ptr(),
            polled.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if ready <= 0 {
        return vec![false; fds.len()];
    }
    polled
        .iter()
        .map(|p| p.revents & (libc::POLLIN | libc::POLLERR) != 0)
        .collect()
}
