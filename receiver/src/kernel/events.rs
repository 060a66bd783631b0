//! Reads a ring buffer: closed TCP connections and released UDP sockets
//! (`events`), cgroups made and removed (`cgroup_events`). A background task
//! drains it as soon as the kernel writes, so it rarely fills; a poll drains
//! it once more, so nothing written before the poll waits for the next one.
//!
//! What is read waits in chunks of [`CHUNK_BYTES`]: a poll turns the
//! records into samples chunk by chunk, and each chunk goes back to the
//! system as soon as it is turned, so that tens of thousands of closed
//! connections are not held twice (as records and as samples) at the
//! poll's peak.

use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use super::abi::Record;

/// A chunk's size: above malloc's mmap threshold (128 KiB, fixed by the
/// agent's `main`), so that each chunk is a mapping of its own, unmapped
/// when dropped.
const CHUNK_BYTES: usize = 256 << 10;

/// The ring buffer and what has been read from it but not yet taken.
pub struct RingEvents<T> {
    ring: Arc<Mutex<RingBuf<MapData>>>,
    inbox: Arc<Mutex<Taken<T>>>,
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
            inbox: Arc::new(Mutex::new(Taken::default())),
            what,
        }
    }

    /// Everything the kernel has written up to now.
    pub fn take(&self) -> Taken<T> {
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

    /// Starts the task that drains the ring whenever the kernel wakes it.
    pub fn spawn_reader(&self) -> std::io::Result<tokio::task::JoinHandle<()>> {
        let events = self.clone();
        spawn_drain(&self.ring, self.what, move || events.drain())
    }
}

/// Starts a task that calls `drain` whenever `ring` becomes readable: when
/// a program submits a record with a wakeup (flowtel's programs ask for one
/// only once the ring is filling up, see `ring_wakeup` in common.h).
pub fn spawn_drain(
    ring: &Mutex<RingBuf<MapData>>,
    what: &'static str,
    drain: impl Fn() + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    // A duplicate of the ring's descriptor, owned by the task: readiness
    // is per open file description, so it wakes for the original too.
    let fd = ring
        .lock()
        .expect("ring buffer poisoned")
        .as_fd()
        .try_clone_to_owned()?;
    // SAFETY: `fd` is an OwnedFd moved into the AsyncFd: it stays open
    // and unchanged for the AsyncFd's whole life.
    let readiness = unsafe { AsyncFd::register(fd) }.map_err(std::io::Error::from)?;
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match readiness.readable().await {
                Ok(guard) => guard,
                Err(error) => {
                    tracing::error!(%error, "ring buffer of {what} unreadable: they are now read only at each poll");
                    return;
                }
            };
            drain();
            guard.clear_ready();
        }
    }))
}

/// Records taken from a ring, oldest first; iterating frees each chunk
/// once it is passed.
pub struct Taken<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

// Not derived: that would ask for `T: Default`.
impl<T> Default for Taken<T> {
    fn default() -> Self {
        Taken {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Taken<T> {
    /// How many records there are.
    pub fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, record: T) {
        let per_chunk = (CHUNK_BYTES / std::mem::size_of::<T>().max(1)).max(1);
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < chunk.capacity() => chunk.push(record),
            _ => {
                let mut chunk = Vec::with_capacity(per_chunk);
                chunk.push(record);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }
}

impl<T> IntoIterator for Taken<T> {
    type Item = T;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<T>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_records_come_out_in_order_across_chunks() {
        let mut taken = Taken::default();
        let per_chunk = CHUNK_BYTES / std::mem::size_of::<u64>();
        let count = 2 * per_chunk as u64 + 7;
        for record in 0..count {
            taken.push(record);
        }
        assert_eq!(taken.len(), count as usize);
        assert_eq!(taken.chunks.len(), 3);
        assert!(taken.into_iter().eq(0..count));
    }
}
