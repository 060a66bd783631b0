//! [`Fanout`]: several exporters driven as one, e.g. OTLP plus the console.

use processor::{PollReport, WindowReport};

use crate::console;
use crate::otlp::OtlpExporter;
use crate::prometheus::PrometheusExporter;
use crate::{ConfigError, Error, Exporter, Plan};

/// Every exporter of a [`Plan`], each given every report in turn.
pub struct Fanout {
    exporters: Vec<Box<dyn Exporter + Send>>,
}

impl Fanout {
    /// Starts the exporters `plan` names; the console writes to `stdout`.
    /// Must be called inside a tokio runtime (the OTLP exporters spawn
    /// their sending tasks, the Prometheus exporter its HTTP server).
    pub fn start(
        plan: &Plan,
        stdout: impl std::io::Write + Send + 'static,
    ) -> Result<Fanout, ConfigError> {
        let mut exporters: Vec<Box<dyn Exporter + Send>> = Vec::new();
        if let Some(format) = plan.console {
            exporters.push(console::exporter(format, stdout));
        }
        for destination in &plan.destinations {
            exporters.push(Box::new(OtlpExporter::start(
                destination,
                &plan.resource_attributes,
            )?));
        }
        if let Some(prometheus) = &plan.prometheus {
            exporters.push(Box::new(PrometheusExporter::start(
                prometheus,
                &plan.resource_attributes,
            )?));
        }
        Ok(Fanout { exporters })
    }
}

impl Exporter for Fanout {
    fn export_poll(&mut self, report: &PollReport) -> Result<(), Error> {
        self.exporters
            .iter_mut()
            .try_for_each(|e| e.export_poll(report))
    }

    fn export_window(&mut self, report: &WindowReport) -> Result<(), Error> {
        self.exporters
            .iter_mut()
            .try_for_each(|e| e.export_window(report))
    }

    fn close(&mut self) -> Result<(), Error> {
        self.exporters.iter_mut().try_for_each(|e| e.close())
    }
}
