//! What the agent runs with: the configuration file, with the options the
//! command line gave over it, every stage's part validated before anything
//! is loaded into the kernel. The command line ([`crate::cli`]) and the
//! subcommands depend on this; it depends on neither.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;

/// What `flowtel run` runs with, every part validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The kernel side.
    pub receiver: receiver::Config,
    /// Deltas and windows.
    pub processor: processor::Config,
    /// The exporters (the console as `--format` says; OTLP from the
    /// standard `OTEL_EXPORTER_OTLP_*` variables).
    pub exporters: exporter::Config,
}

/// The options given on the command line, each over the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// The configuration file; without it, every setting takes its default.
    pub config: Option<PathBuf>,
    pub poll_interval: Option<Duration>,
    pub probes: Option<receiver::ProbeSet>,
    pub max_connections: Option<u32>,
    pub interval: Option<Duration>,
    /// The console's format (a console is added if the file has none).
    pub console: Option<exporter::console::Format>,
}

impl Overrides {
    /// Resolves the file and the options into settings, validating each
    /// stage's part.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => flowtel::config::FileConfig::load(path)?,
            None => flowtel::config::FileConfig::default(),
        };
        let mut receiver = file.receiver;
        if let Some(poll_interval) = self.poll_interval {
            receiver.poll_interval = poll_interval;
        }
        if let Some(max_connections) = self.max_connections {
            receiver.max_connections = max_connections;
        }
        if let Some(probes) = self.probes {
            receiver.probes = probes;
        }
        receiver
            .validate()
            .context("invalid --poll-interval or --max-connections")?;
        let mut processor = file.processor;
        if let Some(interval) = self.interval {
            processor.interval = interval;
        }
        processor.validate().context("invalid --interval")?;
        let mut exporters = file.exporters;
        if let Some(format) = self.console {
            exporters.console = Some(exporter::ConsoleConfig { format });
        }
        exporters
            .validate()
            .context("invalid OTEL_* environment for the OTLP exporter")?;
        Ok(Settings {
            receiver,
            processor,
            exporters,
        })
    }
}
