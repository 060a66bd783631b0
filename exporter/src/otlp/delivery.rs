//! The sending side: a tokio task that takes windows from a bounded queue,
//! in order, and sends each until the backend accepts it, refuses it for
//! good, or the agent stops. The agent's loop only ever enqueues, so a slow
//! or absent backend never delays a poll.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use super::queue::{Bounds, Queued, WindowQueue, WindowRequests};
use super::retry::{Attempt, Backoff};
use super::transport::Transport;

/// How long the agent waits at shutdown for the queue to drain.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Windows lost, by cause; also what the agent's health metrics read.
#[derive(Debug, Default)]
pub struct Losses {
    /// The oldest windows, dropped because the queue was full.
    pub queue_full: AtomicU64,
    /// Requests the backend refused for good (4xx, bad credentials).
    pub refused: AtomicU64,
    /// Windows still queued when the agent stopped, and not kept on disk.
    pub at_shutdown: AtomicU64,
    /// Windows that could not be written to the queue directory (held in
    /// memory only, written again at the stop).
    pub disk_failures: AtomicU64,
    /// 2xx answers that were not OTLP's (the request is retried).
    pub not_otlp: AtomicU64,
}

/// The handle the exporter keeps: the queue's sending end and the task.
#[derive(Debug)]
pub struct Delivery {
    queue: Arc<WindowQueue>,
    task: Option<JoinHandle<()>>,
    losses: Arc<Losses>,
    endpoint: String,
}

impl Delivery {
    /// Starts the sending task on the current tokio runtime.
    pub fn start(transport: Transport, endpoint: String, bounds: Bounds) -> Delivery {
        let queue = Arc::new(WindowQueue::new(bounds));
        let losses = Arc::new(Losses::default());
        let task = tokio::spawn(send_all(
            Arc::clone(&queue),
            transport,
            endpoint.clone(),
            Arc::clone(&losses),
        ));
        Delivery {
            queue,
            task: Some(task),
            losses,
            endpoint,
        }
    }

    /// Queues a window (kept on disk in `file`, if given); when the queue
    /// is full (the backend has been down for longer than it holds), the
    /// oldest windows are dropped, counted and logged.
    pub fn enqueue(&self, window: WindowRequests, file: Option<PathBuf>) -> Arc<Queued> {
        let queued = Arc::new(Queued::new(window, file));
        let dropped = self.queue.push_queued(Arc::clone(&queued));
        if dropped > 0 {
            let total = self.losses.queue_full.fetch_add(dropped, Ordering::Relaxed) + dropped;
            tracing::warn!(
                endpoint = %self.endpoint,
                dropped,
                total,
                "OTLP queue full: the oldest windows were dropped; the backend is down for longer than queue_size windows (or queue_bytes) hold"
            );
        }
        queued
    }

    /// What was lost so far.
    pub fn losses(&self) -> &Losses {
        &self.losses
    }

    /// The loss counters, shared, for the health metrics.
    pub fn losses_handle(&self) -> Arc<Losses> {
        Arc::clone(&self.losses)
    }

    /// How many windows wait, as a function the health metrics call.
    pub fn queued_handle(&self) -> Arc<dyn Fn() -> u64 + Send + Sync> {
        let queue = Arc::clone(&self.queue);
        Arc::new(move || queue.len() as u64)
    }

    /// Closes the queue and waits up to `grace` for what is queued to be
    /// sent; returns what is left then (the window being sent included),
    /// oldest first, for the caller to keep on disk or count as lost.
    pub async fn close(&mut self, grace: Duration) -> Vec<Arc<Queued>> {
        self.queue.close();
        let Some(mut task) = self.task.take() else {
            return Vec::new();
        };
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
        self.queue.drain()
    }

    /// Counts and logs `left` windows as lost at shutdown, and why they
    /// could not be kept.
    pub fn lost_at_shutdown(&self, left: usize, grace: Duration, why: &str) {
        if left == 0 {
            return;
        }
        self.losses
            .at_shutdown
            .store(left as u64, Ordering::Relaxed);
        tracing::warn!(
            endpoint = %self.endpoint,
            "OTLP export still failing at shutdown after {}: {left} queued windows lost: {why}",
            humantime::format_duration(grace),
        );
    }
}

/// The task: every window, in order, each request until it is settled.
async fn send_all(
    windows: Arc<WindowQueue>,
    mut transport: Transport,
    endpoint: String,
    losses: Arc<Losses>,
) {
    // Log a permanent refusal, or an answer that is not OTLP's, once per
    // distinct reason, not once per window or per retry.
    let mut last_refusal: Option<String> = None;
    let mut last_not_otlp: Option<String> = None;
    while let Some(window) = windows.front().await {
        for request in &window.window.0 {
            let mut backoff = Backoff::default();
            let mut retries = 0u32;
            loop {
                match transport.send(request).await {
                    Attempt::Accepted { rejected, message } => {
                        if retries > 0 {
                            tracing::info!(endpoint = %endpoint, retries, "OTLP export works again");
                        }
                        if rejected > 0 {
                            tracing::warn!(
                                endpoint = %endpoint,
                                rejected,
                                "OTLP backend accepted the window partially: {rejected} data points rejected: {message}"
                            );
                        }
                        last_refusal = None;
                        last_not_otlp = None;
                        break;
                    }
                    Attempt::NotOtlp { reason } => {
                        losses.not_otlp.fetch_add(1, Ordering::Relaxed);
                        let wait = backoff.next_wait(None);
                        retries += 1;
                        if last_not_otlp.as_deref() != Some(reason.as_str()) {
                            tracing::error!(
                                endpoint = %endpoint,
                                "{}; the windows stay queued and are retried (check the endpoint's host, port and path)",
                                super::retry::not_otlp_line(&reason)
                            );
                            last_not_otlp = Some(reason);
                        }
                        tokio::time::sleep(wait).await;
                    }
                    Attempt::Retryable {
                        reason,
                        retry_after,
                    } => {
                        let wait = backoff.next_wait(retry_after);
                        retries += 1;
                        tracing::warn!(
                            endpoint = %endpoint,
                            "OTLP export failed ({reason}); retry {retries} in {} (windows wait in the queue)",
                            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                        );
                        tokio::time::sleep(wait).await;
                    }
                    Attempt::Permanent { reason } => {
                        losses.refused.fetch_add(1, Ordering::Relaxed);
                        if last_refusal.as_deref() != Some(reason.as_str()) {
                            tracing::error!(
                                endpoint = %endpoint,
                                "OTLP export refused ({reason}): not retried; windows are dropped until the endpoint, credentials or headers are fixed"
                            );
                            last_refusal = Some(reason);
                        }
                        break;
                    }
                }
            }
        }
        windows.confirm(&window);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::otlp::{
        Compression, Destination, Protocol, Temporality, TlsConfig, DEFAULT_QUEUE_BYTES,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

    /// A real HTTP client aimed at a loopback port nobody listens on: every
    /// attempt fails to connect, which is retryable.
    fn unreachable() -> (Transport, String) {
        let destination = unreachable_destination();
        (Transport::new(&destination).unwrap(), destination.url)
    }

    /// A destination on a loopback port nobody listens on, queue_size 1.
    pub(crate) fn unreachable_destination() -> Destination {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        Destination {
            url: format!("http://127.0.0.1:{port}/v1/metrics"),
            protocol: Protocol::HttpProtobuf,
            headers: BTreeMap::new(),
            compression: Compression::None,
            timeout: Duration::from_secs(1),
            temporality: Temporality::Delta,
            tls: TlsConfig::default(),
            queue_size: 1,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            insecure: false,
            spill_dir: None,
        }
    }

    fn window() -> WindowRequests {
        WindowRequests::encode(&[ExportMetricsServiceRequest::default()])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn when_the_queue_is_full_the_oldest_window_is_dropped_and_counted() {
        let (transport, url) = unreachable();
        let bounds = Bounds {
            windows: 1,
            bytes: u64::MAX,
        };
        let mut delivery = Delivery::start(transport, url, bounds);
        delivery.enqueue(window(), None); // being sent, retried, still queued
        tokio::time::sleep(Duration::from_millis(200)).await;
        delivery.enqueue(window(), None); // pushes the oldest out
        delivery.enqueue(window(), None); // and again
        assert_eq!(delivery.losses().queue_full.load(Ordering::Relaxed), 2);
        let left = delivery.close(Duration::from_millis(100)).await;
        assert_eq!(left.len(), 1, "the newest window is left to spill");
    }
}
