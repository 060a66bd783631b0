//! Reads a ring buffer: closed TCP connections and released UDP sockets
//! (`events`), cgroups made and removed (`cgroup_events`). A background task
//! drains it as soon as the kernel writes, so it rarely fills; a poll drains
//! it once more, so nothing written before the poll waits for the next one.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::abi::Record;

/// The ring buffer and what has been read from it but not yet taken.
pub struct RingEvents<T> {
    ring: Arc<Mutex<RingBuf<MapData>>>,
    inbox: Arc<Mutex<Vec<T>>>,
    /// What its records are, for the log.
    what: &'static str,
}

// Not derived: that would ask for `T: Clone`.
impl<T> Clone for RingEvents<T> {
    fn clone(&self) -> Self {
        RingEvents {
            ring: Arc::clone(&self.ring),
            inbox: Arc::clone(&self.inbox),
            what: self.what,
        }
    }
}

impl<T: Record + Send + 'static> RingEvents<T> {
    /// Reads `ring`, whose records are `what` (`closed connections`).
    pub fn new(ring: RingBuf<MapData>, what: &'static str) -> RingEvents<T> {
        RingEvents {
            ring: Arc::new(Mutex::new(ring)),
            inbox: Arc::default(),
            what,
        }
    }

    /// Everything the kernel has written up to now.
    pub fn take(&self) -> Vec<T> {
        self.drain();
        std::mem::take(&mut *self.inbox.lock().expect("event inbox poisoned"))
    }

    fn drain(&self) {
        let mut ring = self.ring.lock().expect("ring buffer poisoned");
        let mut inbox = self.inbox.lock().expect("event inbox poisoned");
        while let Some(record) = ring.next() {
            match T::from_bytes(&record) {
                Some(event) => inbox.push(event),
                None => tracing::warn!(
                    len = record.len(),
                    "short ring buffer record of {} skipped",
                    self.what
                ),
            }
        }
    }

    /// Starts the task that drains the ring whenever it becomes readable.
    pub fn spawn_reader(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        // A duplicate of the ring's descriptor, owned by the task: readiness
        // is per open file description, so it wakes for the original too.
        let fd = self
            .ring
            .lock()
            .expect("ring buffer poisoned")
            .as_fd()
            .try_clone_to_owned()?;
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open
        // and unchanged for the AsyncFd's whole life.
        let readiness = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
        let events = self.clone();
        Ok(tokio::spawn(async move {
            loop {
                let mut guard = match readiness.readable().await {
                    Ok(guard) => guard,
                    Err(error) => {
                        tracing::error!(%error, "ring buffer of {} unreadable: they are now read only at each poll", events.what);
                        return;
                    }
                };
                events.drain();
                guard.clear_ready();
            }
        }))
    }
}
