//! The queue of windows waiting for the backend: in order, bounded by a
//! number of windows and a number of bytes. When a new window would break
//! either bound, the oldest windows go, so that what survives an outage is
//! the most recent data. A window kept on disk (a durable queue, see
//! [`super::spill`]) has its file removed when it leaves the queue, sent or
//! dropped, but not when it is drained at a stop.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use tokio::sync::Notify;

/// The requests of one window, sent in order, each held as its protobuf
/// encoding: what the queue holds is what `queue_bytes` counts, and what
/// goes on the wire and to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowRequests(pub Vec<Vec<u8>>);

impl WindowRequests {
    /// Encodes `requests`.
    pub fn encode(requests: &[ExportMetricsServiceRequest]) -> WindowRequests {
        WindowRequests(requests.iter().map(prost::Message::encode_to_vec).collect())
    }

    /// The bytes the window holds.
    pub fn size(&self) -> u64 {
        self.0.iter().map(|r| r.len() as u64).sum()
    }
}

/// The bounds of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// At most this many windows (at least 1).
    pub windows: usize,
    /// At most this many bytes of encoded requests; a single window larger
    /// than this is still kept, alone.
    pub bytes: u64,
}

/// A queued window, and the file that keeps it when the queue is durable.
#[derive(Debug)]
pub struct Queued {
    /// The window's requests.
    pub window: WindowRequests,
    /// Its file on disk, when the queue is durable (not yet written while
    /// the directory refuses writes).
    pub file: Option<PathBuf>,
    /// Sent or dropped: its file is gone and must not be written again.
    settled: Mutex<bool>,
}

impl Queued {
    /// A window to queue, kept in `file`.
    pub fn new(window: WindowRequests, file: Option<PathBuf>) -> Queued {
        Queued {
            window,
            file,
            settled: Mutex::new(false),
        }
    }

    /// Writes the window to its file, if it has one, is not there yet and
    /// the window is still queued (a window written late keeps its place).
    pub fn write_late(&self, spill: &super::spill::Spill) -> std::io::Result<()> {
        let settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        match &self.file {
            Some(file) if !*settled && !file.exists() => spill.write_at(file, &self.window),
            _ => Ok(()),
        }
    }

    /// Removes the file of a window that left the queue.
    fn settle(&self) {
        let mut settled = self.settled.lock().unwrap_or_else(|e| e.into_inner());
        *settled = true;
        let Some(file) = &self.file else { return };
        if let Err(e) = super::spill::remove(file) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(
                    "flowtel: could not remove the settled window {}: {e}; the next agent would send it again",
                    file.display()
                );
            }
        }
    }
}

/// Windows waiting to be sent.
#[derive(Debug)]
pub struct WindowQueue {
    bounds: Bounds,
    state: Mutex<State>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct State {
    windows: VecDeque<(Arc<Queued>, u64)>,
    bytes: u64,
    closed: bool,
}

impl WindowQueue {
    /// An empty queue.
    pub fn new(bounds: Bounds) -> WindowQueue {
        WindowQueue {
            bounds,
            state: Mutex::new(State::default()),
            ready: Notify::new(),
        }
    }

    /// Adds `window` (kept in `file`, if given) at the back; returns how
    /// many of the oldest windows were dropped to keep within the bounds.
    pub fn push(&self, window: WindowRequests, file: Option<PathBuf>) -> u64 {
        self.push_queued(Arc::new(Queued::new(window, file)))
    }

    /// [`WindowQueue::push`] for a window the caller keeps a handle to.
    pub fn push_queued(&self, queued: Arc<Queued>) -> u64 {
        let size = queued.window.size();
        let mut dropped = Vec::new();
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.bytes += size;
            state.windows.push_back((queued, size));
            while state.windows.len() > self.bounds.windows.max(1)
                || (state.bytes > self.bounds.bytes && state.windows.len() > 1)
            {
                let Some((oldest, size)) = state.windows.pop_front() else {
                    break;
                };
                state.bytes -= size;
                dropped.push(oldest);
            }
        }
        self.ready.notify_one();
        dropped.iter().for_each(|w| w.settle());
        dropped.len() as u64
    }

    /// The oldest window, waiting for one; `None` once the queue is closed
    /// and empty. It stays queued until [`WindowQueue::confirm`]: a window
    /// being sent when the agent stops is still there to spill.
    pub async fn front(&self) -> Option<Arc<Queued>> {
        loop {
            let ready = self.ready.notified();
            {
                let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((window, _)) = state.windows.front() {
                    return Some(Arc::clone(window));
                }
                if state.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    /// Removes `window`, settled (sent, or refused for good), if it is still
    /// the oldest (it may have been dropped meanwhile to make room).
    pub fn confirm(&self, window: &Arc<Queued>) {
        let settled = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state
                .windows
                .front()
                .is_some_and(|(front, _)| Arc::ptr_eq(front, window))
            {
                state.windows.pop_front().map(|(front, size)| {
                    state.bytes -= size;
                    front
                })
            } else {
                None
            }
        };
        if let Some(settled) = settled {
            settled.settle();
        }
    }

    /// Takes every window still queued, oldest first; their files stay.
    pub fn drain(&self) -> Vec<Arc<Queued>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.bytes = 0;
        state.windows.drain(..).map(|(window, _)| window).collect()
    }

    /// How many windows wait.
    pub fn len(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .windows
            .len()
    }

    /// True when none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// No more windows will come; returns how many are still waiting.
    pub fn close(&self) -> usize {
        let waiting = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.closed = true;
            state.windows.len()
        };
        self.ready.notify_one();
        waiting
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;

    use super::*;

    /// A window whose one request encodes to about `n` bytes, marked by
    /// its schema URL.
    fn window(mark: &str, n: usize) -> WindowRequests {
        WindowRequests::encode(&[ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                schema_url: format!("{mark}{}", "x".repeat(n)),
                ..ResourceMetrics::default()
            }],
        }])
    }

    fn mark(w: &Queued) -> char {
        use prost::Message as _;
        ExportMetricsServiceRequest::decode(&w.window.0[0][..])
            .unwrap()
            .resource_metrics[0]
            .schema_url
            .chars()
            .next()
            .unwrap()
    }

    #[tokio::test]
    async fn the_oldest_windows_go_when_the_count_is_reached() {
        let queue = WindowQueue::new(Bounds {
            windows: 2,
            bytes: u64::MAX,
        });
        assert_eq!(queue.push(window("a", 10), None), 0);
        assert_eq!(queue.push(window("b", 10), None), 0);
        assert_eq!(queue.push(window("c", 10), None), 1);
        let b = queue.front().await.unwrap();
        assert_eq!(mark(&b), 'b');
        queue.confirm(&b);
        assert_eq!(queue.close(), 1);
        let c = queue.front().await.unwrap();
        assert_eq!(mark(&c), 'c');
        queue.confirm(&c);
        assert!(queue.front().await.is_none());
    }

    #[tokio::test]
    async fn the_oldest_windows_go_when_the_bytes_are_reached_but_one_always_stays() {
        let queue = WindowQueue::new(Bounds {
            windows: 100,
            bytes: 250,
        });
        assert_eq!(queue.push(window("a", 100), None), 0);
        assert_eq!(queue.push(window("b", 100), None), 0);
        assert_eq!(queue.push(window("c", 100), None), 1, "a goes");
        assert_eq!(
            queue.push(window("d", 1000), None),
            2,
            "b and c go; d stays alone"
        );
        assert_eq!(mark(&queue.front().await.unwrap()), 'd');
    }

    #[tokio::test]
    async fn a_window_being_sent_stays_until_confirmed_and_drains_in_order() {
        let queue = WindowQueue::new(Bounds {
            windows: 10,
            bytes: u64::MAX,
        });
        queue.push(window("a", 10), None);
        queue.push(window("b", 10), None);
        let a = queue.front().await.unwrap();
        assert_eq!(
            mark(&queue.front().await.unwrap()),
            'a',
            "not confirmed yet"
        );
        queue.close();
        let left: Vec<char> = queue.drain().iter().map(|w| mark(w)).collect();
        assert_eq!(left, vec!['a', 'b']);
        queue.confirm(&a); // too late: nothing to remove
        assert!(queue.is_empty());
    }

    #[tokio::test]
    async fn a_window_leaves_its_file_when_sent_or_dropped_but_not_when_drained() {
        let dir = std::env::temp_dir().join(format!("flowtel-queue-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str| {
            let path = dir.join(name);
            std::fs::write(&path, b"window").unwrap();
            Some(path)
        };
        let queue = WindowQueue::new(Bounds {
            windows: 2,
            bytes: u64::MAX,
        });
        queue.push(window("a", 10), file("a"));
        queue.push(window("b", 10), file("b"));
        queue.push(window("c", 10), file("c"));
        assert!(!dir.join("a").exists(), "dropped as the oldest");
        let b = queue.front().await.unwrap();
        queue.confirm(&b);
        assert!(!dir.join("b").exists(), "sent");
        queue.close();
        assert_eq!(queue.drain().len(), 1);
        assert!(dir.join("c").exists(), "kept for the next agent");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
