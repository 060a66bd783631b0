//! [`OtlpExporter`]: the [`Exporter`] the agent's loop drives. It encodes
//! each closed window and hands it to the sending task.

use std::collections::BTreeMap;

use processor::{PollReport, WindowReport};

use super::config::Temporality;
use super::delivery::{Delivery, WindowRequests, SHUTDOWN_GRACE};
use super::destination::Destination;
use super::encode::Encoder;
use super::spill::Spill;
use super::transport::Transport;
use crate::health::Health;
use crate::{ConfigError, Error, Exporter};

/// Sends closed windows, and the agent's health after each, to one OTLP
/// backend.
#[derive(Debug)]
pub struct OtlpExporter {
    encoder: Encoder,
    delivery: Delivery,
    health: Health,
    spill: Option<Spill>,
}

impl OtlpExporter {
    /// Starts an exporter to `destination` with these resource attributes.
    /// Must be called inside a tokio runtime: it spawns the sending task.
    pub fn start(
        destination: &Destination,
        resource_attributes: &BTreeMap<String, String>,
    ) -> Result<OtlpExporter, ConfigError> {
        let transport = Transport::new(destination)?;
        tracing::info!(
            endpoint = %destination.url,
            protocol = %destination.protocol,
            "flowtel: exporting windows over OTLP"
        );
        let encoder = Encoder::new(resource_attributes, destination.temporality);
        let delivery = Delivery::start(
            transport,
            destination.url.clone(),
            super::queue::Bounds {
                windows: destination.queue_size,
                bytes: destination.queue_bytes,
            },
        );
        let spill = destination.spill_dir.as_deref().map(Spill::new);
        if let Some(spill) = &spill {
            let spilled = spill.take();
            if !spilled.is_empty() {
                tracing::info!(
                    endpoint = %destination.url,
                    "flowtel: sending first {} windows kept at the last shutdown",
                    spilled.len()
                );
            }
            for window in spilled {
                delivery.enqueue(window);
            }
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
        })
    }
}

impl Exporter for OtlpExporter {
    /// Polls are not exported over OTLP (only closed windows are); their
    /// health feeds the health metrics.
    fn export_poll(&mut self, report: &PollReport) -> Result<(), Error> {
        self.health.record_poll(&report.health);
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
        self.delivery.enqueue(WindowRequests(requests));
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
        let saved = match &self.spill {
            Some(spill) => spill.save(left.iter().map(|w| &**w)).unwrap_or_else(|e| {
                tracing::warn!("flowtel: could not keep the unsent windows on disk: {e}");
                0
            }),
            None => 0,
        };
        if saved > 0 {
            tracing::info!("flowtel: {saved} unsent windows kept on disk for the next start");
        }
        self.delivery
            .lost_at_shutdown(left.len() - saved, SHUTDOWN_GRACE);
        Ok(())
    }
}
