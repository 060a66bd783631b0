//! The agent's checkpoint on disk: what it has counted, and of which pinned
//! connection map, so that the next agent continues exactly where it
//! stopped (see `receiver.persistence`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

/// The file under the state directory.
const FILE: &str = "checkpoint.json";

/// A checkpoint and the kernel map it belongs to.
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    /// The kernel's id of the pinned connection map the counters come
    /// from; ids are never reused while the kernel runs, so a reboot or a
    /// new map never matches.
    pub conns_map_id: u32,
    /// What was counted.
    pub checkpoint: processor::Checkpoint,
}

/// Reads and writes the checkpoint in one state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `dir` (created when first written).
    pub fn new(dir: &Path) -> Store {
        Store {
            dir: dir.to_owned(),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes what an interrupted save left (`checkpoint.json.new`).
    pub fn clean_leftovers(&self) {
        let aside = self.dir.join(format!("{FILE}.new"));
        match std::fs::remove_file(&aside) {
            Ok(()) => tracing::info!(
                "flowtel: removed {}, left by a save that was interrupted",
                aside.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("flowtel: could not remove {}: {e}", aside.display()),
        }
    }

    /// Removes the checkpoint, if there is one.
    pub fn discard(&self) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The saved checkpoint; `None` when there is none or it cannot be
    /// read (then the agent starts afresh, which never counts twice).
    pub fn load(&self) -> Option<Saved> {
        let path = self.dir.join(FILE);
        let text = std::fs::read_to_string(&path).ok()?;
        match serde_json::from_str(&text) {
            Ok(saved) => Some(saved),
            Err(e) => {
                tracing::warn!(
                    "flowtel: ignoring the checkpoint {}: {e}; starting afresh",
                    path.display()
                );
                None
            }
        }
    }

    /// Replaces the checkpoint atomically and durably (write aside, fsync,
    /// rename, fsync the directory).
    pub fn save(&self, saved: &Saved) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create the state directory {}", self.dir.display()))?;
        let path = self.dir.join(FILE);
        let aside = self.dir.join(format!("{FILE}.new"));
        let text = serde_json::to_vec(saved).context("cannot encode the checkpoint")?;
        let written = std::fs::File::create(&aside)
            .and_then(|mut file| {
                std::io::Write::write_all(&mut file, &text).and_then(|()| file.sync_all())
            })
            .and_then(|()| std::fs::rename(&aside, &path))
            .and_then(|()| std::fs::File::open(&self.dir)?.sync_all());
        if written.is_err() {
            let _ = std::fs::remove_file(&aside);
        }
        written.with_context(|| format!("cannot write the checkpoint {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use receiver::{ConnectionId, Counters};

    use super::*;

    #[test]
    fn a_saved_checkpoint_loads_back_and_garbage_is_ignored() {
        let dir = std::env::temp_dir().join(format!("flowtel-checkpoint-{}", std::process::id()));
        let store = Store::new(&dir);
        assert!(store.load().is_none());
        let saved = Saved {
            conns_map_id: 42,
            checkpoint: processor::Checkpoint {
                at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
                counted: vec![(
                    ConnectionId {
                        socket_cookie: 7,
                        peer: Some("10.0.0.1:53".parse().unwrap()),
                        first_seen_ns: 99,
                    },
                    Counters {
                        bytes_sent: 1000,
                        ..Counters::default()
                    },
                )],
            },
        };
        store.save(&saved).unwrap();
        let back = store.load().unwrap();
        assert_eq!(back.conns_map_id, 42);
        assert_eq!(back.checkpoint, saved.checkpoint);
        std::fs::write(dir.join(FILE), "{not json").unwrap();
        assert!(store.load().is_none());
        std::fs::write(dir.join(format!("{FILE}.new")), "half").unwrap();
        store.clean_leftovers();
        assert!(!dir.join(format!("{FILE}.new")).exists());
        store.discard().unwrap();
        assert!(!dir.join(FILE).exists());
        store.discard().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
