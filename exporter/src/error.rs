//! Why an export failed, and why a configuration is refused.

/// Why an exporter could not export a report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing to the console (stdout, or the writer given) failed.
    #[error("could not write to the console")]
    Console(#[source] std::io::Error),
    /// A record could not be encoded as JSON.
    #[error("could not encode a JSON record")]
    Json(#[source] serde_json::Error),
}

/// An exporter setting that cannot work, as one line that says what to do.
/// Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> ConfigError {
        ConfigError(message.into())
    }
}
