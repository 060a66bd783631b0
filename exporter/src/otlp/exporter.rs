//! [`OtlpExporter`]: the [`Exporter`] the agent's loop drives. It encodes
//! each closed window and hands it to the sending task.

use std::collections::BTreeMap;

use processor::{PollReport, WindowReport};

use super::delivery::{Delivery, WindowRequests, SHUTDOWN_GRACE};
use super::destination::Destination;
use super::encode::Encoder;
use super::transport::Transport;
use crate::{ConfigError, Error, Exporter};

/// Sends closed windows to one OTLP backend.
#[derive(Debug)]
pub struct OtlpExporter {
    encoder: Encoder,
    delivery: Delivery,
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
        Ok(OtlpExporter {
            encoder: Encoder::new(resource_attributes, destination.temporality),
            delivery: Delivery::start(
                transport,
                destination.url.clone(),
                super::queue::Bounds {
                    windows: destination.queue_size,
                    bytes: destination.queue_bytes,
                },
            ),
        })
    }
}

impl Exporter for OtlpExporter {
    /// Polls are not exported over OTLP: only closed windows are.
    fn export_poll(&mut self, _report: &PollReport) -> Result<(), Error> {
        Ok(())
    }

    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error> {
        let requests = self.encoder.encode(report);
        if !requests.is_empty() {
            self.delivery.enqueue(WindowRequests(requests));
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), Error> {
        // The agent's loop is synchronous per poll; at shutdown it may wait
        // here, on a runtime worker, for the queue to drain.
        let handle = tokio::runtime::Handle::current();
        tokio::task::block_in_place(|| handle.block_on(self.delivery.close(SHUTDOWN_GRACE)));
        Ok(())
    }
}
