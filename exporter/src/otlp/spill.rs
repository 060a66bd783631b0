//! Windows the backend had not taken when the agent stopped, kept on disk
//! (`exporters.otlp.spill_dir`) and sent first by the next agent, with their
//! original timestamps.
//!
//! One file per window, named so that names sort in queue order: each
//! request as a 4-byte little-endian length and its protobuf encoding.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

use super::delivery::WindowRequests;

const EXTENSION: &str = "otlp";

/// A spill directory.
#[derive(Debug, Clone)]
pub struct Spill {
    dir: PathBuf,
}

impl Spill {
    /// The spill in `dir` (created when first written).
    pub fn new(dir: &Path) -> Spill {
        Spill {
            dir: dir.to_owned(),
        }
    }

    /// Writes `windows` (oldest first) after any already spilled.
    pub fn save<'a>(
        &self,
        windows: impl IntoIterator<Item = &'a WindowRequests>,
    ) -> std::io::Result<usize> {
        std::fs::create_dir_all(&self.dir)?;
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let mut saved = 0;
        for (n, window) in windows.into_iter().enumerate() {
            let mut bytes = Vec::new();
            for request in &window.0 {
                let encoded = request.encode_to_vec();
                bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
                bytes.extend_from_slice(&encoded);
            }
            let name = format!("{base:024}-{n:06}.{EXTENSION}");
            let aside = self.dir.join(format!("{name}.new"));
            std::fs::write(&aside, bytes)?;
            std::fs::rename(&aside, self.dir.join(name))?;
            saved += 1;
        }
        Ok(saved)
    }

    /// Reads and removes every spilled window, oldest first. A file that
    /// does not decode is left in place and named in the log.
    pub fn take(&self) -> Vec<WindowRequests> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
            .collect();
        paths.sort();
        let mut windows = Vec::new();
        for path in paths {
            match std::fs::read(&path).ok().and_then(|b| decode(&b)) {
                Some(window) => {
                    windows.push(window);
                    let _ = std::fs::remove_file(&path);
                }
                None => tracing::warn!(
                    "flowtel: the spilled window {} does not decode; left in place",
                    path.display()
                ),
            }
        }
        windows
    }
}

fn decode(mut bytes: &[u8]) -> Option<WindowRequests> {
    let mut requests = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let body = rest.get(..len)?;
        requests.push(ExportMetricsServiceRequest::decode(body).ok()?);
        bytes = &rest[len..];
    }
    Some(WindowRequests(requests))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;

    use super::*;

    fn window(mark: &str) -> WindowRequests {
        WindowRequests(vec![
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    schema_url: mark.to_owned(),
                    ..ResourceMetrics::default()
                }],
            },
            ExportMetricsServiceRequest::default(),
        ])
    }

    #[test]
    fn spilled_windows_come_back_in_order_once() {
        let dir = std::env::temp_dir().join(format!("flowtel-spill-{}", std::process::id()));
        let spill = Spill::new(&dir);
        assert!(spill.take().is_empty());
        assert_eq!(spill.save([&window("a"), &window("b")]).unwrap(), 2);
        assert_eq!(spill.save([&window("c")]).unwrap(), 1);
        std::fs::write(dir.join("garbage.otlp"), [9, 0, 0, 0, 1]).unwrap();
        let back = spill.take();
        let marks: Vec<&str> = back
            .iter()
            .map(|w| w.0[0].resource_metrics[0].schema_url.as_str())
            .collect();
        assert_eq!(marks, vec!["a", "b", "c"]);
        assert_eq!(back[0].0.len(), 2);
        assert!(spill.take().is_empty(), "taken once");
        assert!(dir.join("garbage.otlp").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
