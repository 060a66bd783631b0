//! Why an export failed.

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
