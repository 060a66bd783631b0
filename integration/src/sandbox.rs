//! A private bpf filesystem and a state directory for the tests that run
//! agents with `receiver.persistence`, gone on drop (which also detaches
//! whatever programs stay pinned there).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory with a bpf filesystem mounted at `bpffs/` inside it.
pub struct Sandbox {
    /// The directory; the state directory, spill directories and the
    /// configuration file go inside it.
    pub root: PathBuf,
    /// The private bpf filesystem.
    pub bpffs: PathBuf,
}

impl Sandbox {
    /// A new sandbox named after this process and `tag`. Panics when the
    /// bpf filesystem cannot be mounted (the tests run as root).
    pub fn new(tag: &str) -> Sandbox {
        let root = std::env::temp_dir().join(format!("flowtel-{tag}-{}", std::process::id()));
        let bpffs = root.join("bpffs");
        std::fs::create_dir_all(&bpffs).expect("sandbox dir");
        let status = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&bpffs)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "cannot mount a bpf filesystem on {bpffs:?}"
        );
        Sandbox { root, bpffs }
    }

    /// The state directory the configuration names.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Writes `flowtel.yaml` with `receiver.persistence` in this sandbox,
    /// followed by `more` (further top-level sections); returns its path.
    pub fn config(&self, more: &str) -> PathBuf {
        let path = self.root.join("flowtel.yaml");
        let text = format!(
            "receiver:\n  persistence:\n    pin_dir: {}\n    state_dir: {}\n{more}",
            self.bpffs.join("flowtel").display(),
            self.state_dir().display()
        );
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// A path inside the sandbox.
    pub fn path(&self, name: impl AsRef<Path>) -> PathBuf {
        self.root.join(name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.bpffs).status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
