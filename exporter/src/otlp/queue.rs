//! The queue of windows waiting for the backend: in order, bounded by a
//! number of windows and a number of bytes. When a new window would break
//! either bound, the oldest windows go, so that what survives an outage is
//! the most recent data.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::sync::Notify;

use super::delivery::WindowRequests;

/// The bounds of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// At most this many windows (at least 1).
    pub windows: usize,
    /// At most this many bytes of encoded requests; a single window larger
    /// than this is still kept, alone.
    pub bytes: u64,
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
    windows: VecDeque<(Arc<WindowRequests>, u64)>,
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

    /// Adds `window` at the back; returns how many of the oldest windows
    /// were dropped to keep within the bounds.
    pub fn push(&self, window: WindowRequests) -> u64 {
        let size: u64 = window.0.iter().map(|r| r.encoded_len() as u64).sum();
        let mut dropped = 0;
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.bytes += size;
            state.windows.push_back((Arc::new(window), size));
            while state.windows.len() > self.bounds.windows.max(1)
                || (state.bytes > self.bounds.bytes && state.windows.len() > 1)
            {
                let Some((_, oldest)) = state.windows.pop_front() else {
                    break;
                };
                state.bytes -= oldest;
                dropped += 1;
            }
        }
        self.ready.notify_one();
        dropped
    }

    /// The oldest window, waiting for one; `None` once the queue is closed
    /// and empty. It stays queued until [`WindowQueue::confirm`]: a window
    /// being sent when the agent stops is still there to spill.
    pub async fn front(&self) -> Option<Arc<WindowRequests>> {
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
    pub fn confirm(&self, window: &Arc<WindowRequests>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .windows
            .front()
            .is_some_and(|(front, _)| Arc::ptr_eq(front, window))
        {
            if let Some((_, size)) = state.windows.pop_front() {
                state.bytes -= size;
            }
        }
    }

    /// Takes every window still queued, oldest first.
    pub fn drain(&self) -> Vec<Arc<WindowRequests>> {
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
        WindowRequests(vec![ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                schema_url: format!("{mark}{}", "x".repeat(n)),
                ..ResourceMetrics::default()
            }],
        }])
    }

    fn mark(w: &WindowRequests) -> char {
        w.0[0].resource_metrics[0]
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
        assert_eq!(queue.push(window("a", 10)), 0);
        assert_eq!(queue.push(window("b", 10)), 0);
        assert_eq!(queue.push(window("c", 10)), 1);
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
        assert_eq!(queue.push(window("a", 100)), 0);
        assert_eq!(queue.push(window("b", 100)), 0);
        assert_eq!(queue.push(window("c", 100)), 1, "a goes");
        assert_eq!(
            queue.push(window("d", 1000)),
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
        queue.push(window("a", 10));
        queue.push(window("b", 10));
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
}
