//! Which console output to write.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{JsonLines, Table};
use crate::Exporter;

/// The console output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A table of the busiest flows every poll and the totals of every
    /// window, for people. The default.
    #[default]
    Table,
    /// One JSON object per line per flow, poll and window, for programs.
    Json,
}

impl Format {
    /// The name used on the command line and in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Json => "json",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is neither `table` nor `json`.
#[derive(Debug, thiserror::Error)]
#[error("unknown console format {0:?}: expected \"table\" or \"json\"")]
pub struct UnknownFormat(String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Format, UnknownFormat> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

/// The console exporter for `format`, writing to `out` (usually
/// `std::io::stdout()`) and flushing it after every report.
pub fn exporter<W: Write + Send + 'static>(format: Format, out: W) -> Box<dyn Exporter + Send> {
    match format {
        Format::Table => Box::new(Table::new(out)),
        Format::Json => Box::new(JsonLines::new(out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_format_names() {
        assert_eq!("table".parse::<Format>().unwrap(), Format::Table);
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        let err = "yaml".parse::<Format>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown console format \"yaml\": expected \"table\" or \"json\""
        );
        assert_eq!(Format::default(), Format::Table);
    }
}
