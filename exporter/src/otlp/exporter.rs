//! [`OtlpExporter`]: the [`Exporter`] the agent's loop drives. It encodes
//! each closed window, writes it to the queue directory when there is one
//! (before returning, so before the agent's checkpoint counts the window as
//! exported), and hands it to the sending task.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use processor::{PollReport, WindowReport};

use super::config::Temporality;
use super::delivery::{Delivery, SHUTDOWN_GRACE};
use super::destination::Destination;
use super::encode::Encoder;
use super::queue::{Queued, WindowRequests};
use super::spill::Spill;
use super::transport::Transport;
use crate::health::Health;
use crate::{ConfigError, Error, Exporter, LogLimit};

/// Sends closed windows, and the agent's health after each, to one OTLP
/// backend.
#[derive(Debug)]
pub struct OtlpExporter {
    encoder: Encoder,
    delivery: Delivery,
    health: Health,
    spill: Option<Spill>,
    /// The queue directory failed the last write, and whether that was
    /// logged.
    disk_failing: Option<bool>,
    /// How often a failing queue directory is logged.
    disk_log: LogLimit,
    /// Windows the queue directory refused, to write once it takes them
    /// again (gone once sent or dropped).
    unwritten: Vec<Weak<Queued>>,
}

impl OtlpExporter {
    /// Starts an exporter to `destination` with these resource attributes.
    /// Must be called inside a tokio runtime: it spawns the sending task.
    pub fn start(
        destination: &Destination,
        resource_attributes: &BTreeMap<String, String>,
    ) -> Result<OtlpExporter, ConfigError> {
        let transport = Transport::new(destination)?;
        let (spill, kept) = match &destination.spill_dir {
            Some(dir) => {
                let (spill, kept) = Spill::open(dir).map_err(|e| {
                    ConfigError::new(format!(
                        "the OTLP queue directory {} cannot be used: {e}: make it a writable directory with room for queue_bytes, or set exporters.otlp.spill_dir elsewhere",
                        dir.display()
                    ))
                })?;
                let free = super::spill::free_bytes(dir).unwrap_or(u64::MAX);
                if free < destination.queue_bytes {
                    tracing::warn!(
                        "flowtel: the OTLP queue directory {} has {} free, less than queue_bytes ({}): in a long outage windows will be held in memory only once it is full",
                        dir.display(),
                        mib(free),
                        mib(destination.queue_bytes)
                    );
                }
                (Some(spill), kept)
            }
            None => (None, Vec::new()),
        };
        tracing::info!(
            endpoint = %destination.shown_url(),
            protocol = %destination.protocol,
            "flowtel: exporting windows over OTLP"
        );
        let encoder = Encoder::new(resource_attributes, destination.temporality);
        let delivery = Delivery::start(
            transport,
            destination.shown_url(),
            super::queue::Bounds {
                windows: destination.queue_size,
                bytes: destination.queue_bytes,
            },
        );
        if let (Some(spill), false) = (&spill, kept.is_empty()) {
            tracing::info!(
                endpoint = %destination.shown_url(),
                "flowtel: sending first {} windows kept in {} by the previous agent",
                kept.len(),
                spill.dir().display()
            );
        }
        for (window, file) in kept {
            delivery.enqueue(window, Some(file));
        }
        let health = Health::new(
            &encoder.resource_attributes(),
            destination.temporality == Temporality::Delta,
            delivery.losses_handle(),
            delivery.queued_handle(),
        );
        Ok(OtlpExporter {
            encoder,
            delivery,
            health,
            spill,
            disk_failing: None,
            disk_log: LogLimit::default(),
            unwritten: Vec::new(),
        })
    }

    /// Writes the windows the queue directory refused earlier and that
    /// still wait, each to its place, now that it takes them again; stops
    /// at the first that fails (tried again after the next window).
    fn write_unwritten(&mut self) {
        let Some(spill) = &self.spill else { return };
        let mut failed = false;
        self.unwritten.retain(|weak| {
            let Some(queued) = weak.upgrade() else {
                return false;
            };
            failed = failed || queued.write_late(spill).is_err();
            failed
        });
    }

    /// Writes `window` to the queue directory, if there is one; returns its
    /// file, written or not. A failure is counted, and logged when it starts
    /// (at most once in [`LogLimit::QUIET`]); the window is then held in
    /// memory only, and written to its file (its place in the queue) at the
    /// stop.
    fn keep(&mut self, window: &WindowRequests) -> Option<PathBuf> {
        let spill = self.spill.as_mut()?;
        let file = spill.reserve();
        match spill.write_at(&file, window) {
            Ok(()) => {
                if self.disk_failing.take() == Some(true) {
                    tracing::info!(
                        "flowtel: writing windows to {} works again",
                        spill.dir().display()
                    );
                }
            }
            Err(e) => {
                self.delivery
                    .losses()
                    .disk_failures
                    .fetch_add(1, Ordering::Relaxed);
                if self.disk_failing.is_none() {
                    let logged = self.disk_log.allow();
                    self.disk_failing = Some(logged);
                    if logged {
                        tracing::warn!(
                        "flowtel: could not write a window to the queue directory {}: {e}; windows are held in memory only (lost if the agent is killed) until writing works again",
                        spill.dir().display()
                    );
                    }
                }
            }
        }
        Some(file)
    }
}

impl Exporter for OtlpExporter {
    /// Polls are not exported over OTLP (only closed windows are); their
    /// health feeds the health metrics.
    fn export_poll(&mut self, report: &PollReport) -> Result<(), Error> {
        self.health.record_poll(&report.health);
        self.health.record_dns(&report.dns_health);
        Ok(())
    }

    /// The window's requests, the agent's health riding in the last one
    /// (same resource, scope `flowtel.health`). An empty window sends
    /// nothing: its health goes with the next window that has data.
    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error> {
        self.health.record_overflow(report.overflowed_series);
        let mut requests = self.encoder.encode(report);
        let Some(last) = requests.last_mut() else {
            return Ok(());
        };
        if let (Some(health), Some(window)) =
            (self.health.collect(), last.resource_metrics.first_mut())
        {
            for resource_metrics in health.resource_metrics {
                window.scope_metrics.extend(resource_metrics.scope_metrics);
            }
        }
        let window = WindowRequests::encode(&requests);
        tracing::debug!(
            "flowtel: window of {} series encoded in {} requests, {} bytes",
            report.series.len(),
            window.0.len(),
            window.size()
        );
        let file = self.keep(&window);
        let queued = self.delivery.enqueue(window, file);
        if self.disk_failing.is_some() {
            self.unwritten.push(Arc::downgrade(&queued));
        } else {
            self.write_unwritten();
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), Error> {
        // The agent's loop is synchronous per poll; at shutdown it may wait
        // here, on a runtime worker, for the queue to drain.
        let handle = tokio::runtime::Handle::current();
        let left =
            tokio::task::block_in_place(|| handle.block_on(self.delivery.close(SHUTDOWN_GRACE)));
        if left.is_empty() {
            return Ok(());
        }
        let Some(spill) = &mut self.spill else {
            self.delivery.lost_at_shutdown(
                left.len(),
                SHUTDOWN_GRACE,
                "no queue directory is set (set exporters.otlp.spill_dir, or receiver.persistence, to keep them for the next start)",
            );
            return Ok(());
        };
        // Those the directory refused while running get one more try.
        let mut kept = 0;
        let mut failure = None;
        for queued in &left {
            let written = match &queued.file {
                Some(_) => queued.write_late(spill),
                None => spill.write(&queued.window).map(drop),
            };
            match written {
                Ok(()) => kept += 1,
                Err(e) => failure = Some(e),
            }
        }
        if kept > 0 {
            tracing::info!(
                "flowtel: {kept} unsent windows kept in {} for the next start",
                spill.dir().display()
            );
        }
        if let Some(e) = failure {
            let why = format!("could not write them to {}: {e}", spill.dir().display());
            self.delivery
                .lost_at_shutdown(left.len() - kept, SHUTDOWN_GRACE, &why);
        }
        Ok(())
    }
}

/// Bytes as MiB, one decimal.
fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn windows_kept_beyond_the_bounds_are_dropped_oldest_first_counted_and_removed() {
        let dir = std::env::temp_dir().join(format!("flowtel-exporter-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut spill, _) = Spill::open(&dir).unwrap();
        let window = WindowRequests::encode(&[ExportMetricsServiceRequest::default()]);
        let files: Vec<PathBuf> = (0..3).map(|_| spill.write(&window).unwrap()).collect();
        let mut destination = crate::otlp::delivery::tests::unreachable_destination();
        destination.queue_size = 2;
        destination.spill_dir = Some(dir.clone());
        let mut exporter = OtlpExporter::start(&destination, &BTreeMap::new()).unwrap();
        let losses = exporter.delivery.losses();
        assert_eq!(losses.queue_full.load(Ordering::Relaxed), 1);
        assert!(!files[0].exists(), "the oldest went, from disk too");
        assert!(files[1].exists() && files[2].exists());
        exporter.close().unwrap();
        assert!(
            files[1].exists() && files[2].exists(),
            "kept for the next agent"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_window_the_directory_refused_is_written_to_its_place_once_it_takes_them_again() {
        use crate::otlp::encode::tests::{curl_to, window};
        let dir =
            std::env::temp_dir().join(format!("flowtel-exporter-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut destination = crate::otlp::delivery::tests::unreachable_destination();
        destination.queue_size = 10;
        destination.spill_dir = Some(dir.clone());
        let mut exporter = OtlpExporter::start(&destination, &BTreeMap::new()).unwrap();
        // The directory is gone, a file in its place: writes fail.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"in the way").unwrap();
        let refused = window(60, 60, vec![curl_to(443, 1, 1)]);
        exporter.export_window(&refused).unwrap();
        let losses = exporter.delivery.losses_handle();
        assert_eq!(losses.disk_failures.load(Ordering::Relaxed), 1);
        let place = exporter.unwritten[0]
            .upgrade()
            .unwrap()
            .file
            .clone()
            .unwrap();
        // Back: the next window is written, and the refused one to its place.
        std::fs::remove_file(&dir).unwrap();
        std::fs::create_dir(&dir).unwrap();
        let next = window(120, 60, vec![curl_to(443, 2, 2)]);
        exporter.export_window(&next).unwrap();
        assert!(exporter.unwritten.is_empty());
        let (_, kept) = Spill::open(&dir).unwrap();
        let files: Vec<&PathBuf> = kept.iter().map(|(_, file)| file).collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0], &place, "the refused window comes first");
        exporter.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
