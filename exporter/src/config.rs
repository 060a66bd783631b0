//! The `exporters` section of the configuration: which exporters run and
//! how each is set up. Every exporter is optional; with none configured the
//! agent prints to the console.

use serde::{Deserialize, Serialize};

use crate::console::Format;

/// Settings of the exporters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Flows on stdout, as a table or JSON lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleConfig>,
}

/// The console exporter.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// `table` (default) or `json`.
    pub format: Format,
}

impl Config {
    /// True when no exporter is configured: the agent then falls back to the
    /// console table.
    pub fn is_empty(&self) -> bool {
        self.console.is_none()
    }
}
