//! The queue on disk (`exporters.otlp.spill_dir`, or a directory under
//! `receiver.persistence.state_dir`): each window is written here when it
//! closes, before the agent's checkpoint counts it as exported, and removed
//! once it is settled (the backend accepted it or refused it for good, or it
//! was dropped as the oldest beyond the queue's bounds). The next agent,
//! after a stop, a crash or a power loss, sends what is left first, in
//! order, with its original timestamps.
//!
//! One file per window, `<sequence>.otlp`, the sequence growing so that
//! names sort in queue order: each request as a 4-byte little-endian length
//! and its protobuf encoding. A file is written aside (`.new`), fsynced,
//! renamed and its directory fsynced, so that a crash leaves the whole
//! window or none; a leftover `.new` file is removed at start.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

use super::queue::WindowRequests;

const EXTENSION: &str = "otlp";
const ASIDE: &str = "new";

/// A queue directory, open for writing.
#[derive(Debug)]
pub struct Spill {
    dir: PathBuf,
    next: u64,
}

/// A window found on disk at start, and its file.
pub type Kept = (WindowRequests, PathBuf);

impl Spill {
    /// Opens `dir` (creating it), removes leftovers of an interrupted write,
    /// checks that a window can be written there, and returns the windows
    /// kept there, oldest first. A file that does not decode is left in
    /// place and named in the log.
    pub fn open(dir: &Path) -> std::io::Result<(Spill, Vec<Kept>)> {
        std::fs::create_dir_all(dir)?;
        let mut found: Vec<(Option<u64>, PathBuf)> = Vec::new();
        let mut leftovers = 0;
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            match path.extension().and_then(|x| x.to_str()) {
                Some(ASIDE) => {
                    std::fs::remove_file(&path)?;
                    leftovers += 1;
                }
                Some(EXTENSION) => {
                    let sequence = path
                        .file_stem()
                        .and_then(|s| s.to_str())
                        .and_then(|s| s.parse::<u64>().ok());
                    found.push((sequence, path));
                }
                _ => {}
            }
        }
        if leftovers > 0 {
            tracing::info!(
                "flowtel: removed {leftovers} half-written window files in {} (an earlier agent stopped while writing them; nothing they held had been counted as exported)",
                dir.display()
            );
        }
        // Files of the older spill (named by time, written only at a stop)
        // are older than any numbered one.
        found.sort();
        let next = found
            .iter()
            .filter_map(|(n, _)| *n)
            .max()
            .map_or(0, |n| n + 1);
        let spill = Spill {
            dir: dir.to_owned(),
            next,
        };
        spill.probe()?;
        let mut kept = Vec::new();
        for (_, path) in found {
            match std::fs::read(&path).ok().and_then(|b| decode(&b)) {
                Some(window) => kept.push((window, path)),
                None => tracing::warn!(
                    "flowtel: the kept window {} does not decode; left in place",
                    path.display()
                ),
            }
        }
        Ok((spill, kept))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `window` after those already kept, durably; returns its file.
    pub fn write(&mut self, window: &WindowRequests) -> std::io::Result<PathBuf> {
        let path = self.reserve();
        self.write_at(&path, window)?;
        Ok(path)
    }

    /// The file of the next window, in queue order: a window that cannot
    /// be written now and is written later (at the stop) keeps its place.
    pub fn reserve(&mut self) -> PathBuf {
        let path = self.dir.join(format!("{:020}.{EXTENSION}", self.next));
        self.next += 1;
        path
    }

    /// Writes `window` to `path` (from [`Spill::reserve`]), durably.
    pub fn write_at(&self, path: &Path, window: &WindowRequests) -> std::io::Result<()> {
        let mut bytes = Vec::with_capacity(window.size() as usize + 4 * window.0.len());
        for encoded in &window.0 {
            bytes.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
            bytes.extend_from_slice(encoded);
        }
        self.write_durably(path, &bytes)
    }

    /// Writes and removes a small file, so that a directory that is
    /// read-only, full or missing is found at start rather than at the
    /// first window.
    fn probe(&self) -> std::io::Result<()> {
        let path = self.dir.join(".probe");
        self.write_durably(&path, b"flowtel")?;
        std::fs::remove_file(&path)
    }

    /// Write aside, fsync, rename, fsync the directory.
    fn write_durably(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".{ASIDE}"));
        let aside = PathBuf::from(aside);
        let written = File::create(&aside)
            .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
            .and_then(|()| std::fs::rename(&aside, path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&aside);
            return Err(e);
        }
        File::open(&self.dir)?.sync_all()
    }
}

/// The bytes free for an unprivileged writer in `dir`'s file system.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Removes the file of a settled window (and fsyncs its directory, so that
/// a power loss does not bring it back to be sent twice).
pub fn remove(path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(path)?;
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

fn decode(mut bytes: &[u8]) -> Option<WindowRequests> {
    let mut requests = Vec::new();
    while !bytes.is_empty() {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let body = rest.get(..len)?;
        ExportMetricsServiceRequest::decode(body).ok()?;
        requests.push(body.to_vec());
        bytes = &rest[len..];
    }
    Some(WindowRequests(requests))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;

    use super::*;

    fn window(mark: &str) -> WindowRequests {
        WindowRequests::encode(&[
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    schema_url: mark.to_owned(),
                    ..ResourceMetrics::default()
                }],
            },
            ExportMetricsServiceRequest::default(),
        ])
    }

    fn marks(kept: &[Kept]) -> Vec<String> {
        kept.iter()
            .map(|(w, _)| {
                ExportMetricsServiceRequest::decode(&w.0[0][..])
                    .unwrap()
                    .resource_metrics[0]
                    .schema_url
                    .clone()
            })
            .collect()
    }

    #[test]
    fn kept_windows_come_back_in_order_until_removed_and_leftovers_go() {
        let dir = std::env::temp_dir().join(format!("flowtel-spill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (mut spill, kept) = Spill::open(&dir).unwrap();
        assert!(kept.is_empty());
        let a = spill.write(&window("a")).unwrap();
        spill.write(&window("b")).unwrap();
        std::fs::write(dir.join("garbage.otlp"), [9, 0, 0, 0, 1]).unwrap();
        std::fs::write(dir.join("00000000000000000099.otlp.new"), b"half").unwrap();

        let (mut spill, kept) = Spill::open(&dir).unwrap();
        assert_eq!(marks(&kept), ["a", "b"]);
        assert_eq!(kept[0].0 .0.len(), 2);
        assert!(!dir.join("00000000000000000099.otlp.new").exists());
        assert!(dir.join("garbage.otlp").exists(), "left in place");
        remove(&a).unwrap();
        spill.write(&window("c")).unwrap();

        let (mut spill, kept) = Spill::open(&dir).unwrap();
        assert_eq!(marks(&kept), ["b", "c"], "a was settled; c comes after b");

        // A window written late (the directory was full) keeps its place.
        let late = spill.reserve();
        spill.write(&window("e")).unwrap();
        spill.write_at(&late, &window("d")).unwrap();
        let (_, kept) = Spill::open(&dir).unwrap();
        assert_eq!(marks(&kept), ["b", "c", "d", "e"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_be_written_is_found_at_open() {
        // A regular file where the directory should be.
        let path = std::env::temp_dir().join(format!("flowtel-spill-file-{}", std::process::id()));
        std::fs::write(&path, b"not a directory").unwrap();
        assert!(Spill::open(&path).is_err());
        assert!(Spill::open(&path.join("below")).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
