//! One agent per state and pin directory (`receiver.persistence`): the
//! agent holds an exclusive `flock` on `<state_dir>/flowtel.lock`, which
//! holds its pid, and on the pin directory when it exists, for as long as it
//! runs; the kernel releases both when it exits, however it exits. A second
//! agent on the same directories refuses to start, naming the first.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::path::Path;

use anyhow::Context as _;
use rustix::fs::{flock, FlockOperation};

/// The lock file in the state directory.
pub const FILE: &str = "flowtel.lock";

/// The locks held; released on drop or exit.
#[derive(Debug)]
pub struct Lock {
    _files: Vec<File>,
}

/// Takes the locks for `persistence`, or says which agent holds them.
pub fn acquire(persistence: &receiver::Persistence) -> anyhow::Result<Lock> {
    let state_dir = &persistence.state_dir;
    let writable = "receiver.persistence.state_dir must be a writable directory";
    std::fs::create_dir_all(state_dir).with_context(|| {
        format!(
            "cannot create the state directory {} ({writable})",
            state_dir.display()
        )
    })?;
    let path = state_dir.join(FILE);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {} ({writable})", path.display()))?;
    if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
        if e != rustix::io::Errno::WOULDBLOCK {
            return Err(std::io::Error::from(e))
                .with_context(|| format!("cannot lock {}", path.display()));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another flowtel agent".to_owned(),
            pid => format!("another flowtel agent (pid {pid})"),
        };
        anyhow::bail!(
            "{holder} is running with the state directory {} (it holds {}): stop it first, or give this agent other receiver.persistence directories",
            state_dir.display(),
            path.display()
        );
    }
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .with_context(|| format!("cannot write the lock file {} ({writable})", path.display()))?;
    let mut files = vec![file];
    if let Some(pins) = lock_pins(&persistence.pin_dir)? {
        files.push(pins);
    }
    Ok(Lock { _files: files })
}

/// Locks the pin directory when it exists (the receiver makes it on the
/// first start): two agents with other state directories but one pin
/// directory would adopt each other's pins.
fn lock_pins(pin_dir: &Path) -> anyhow::Result<Option<File>> {
    let Ok(dir) = File::open(pin_dir) else {
        return Ok(None);
    };
    match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(dir)),
        Err(rustix::io::Errno::WOULDBLOCK) => anyhow::bail!(
            "another flowtel agent is running with the pin directory {} (with another state directory): stop it first, or give this agent another receiver.persistence.pin_dir",
            pin_dir.display()
        ),
        // A file system without locks: the state directory's lock stands.
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directories_names_the_first_holder() {
        let root = std::env::temp_dir().join(format!("flowtel-lock-{}", std::process::id()));
        let persistence = receiver::Persistence {
            pin_dir: root.join("pins"),
            state_dir: root.join("state"),
        };
        std::fs::create_dir_all(&persistence.pin_dir).unwrap();
        let first = acquire(&persistence).unwrap();
        // flock locks belong to the open file, so a second open in this
        // process conflicts as another process would.
        let error = acquire(&persistence).unwrap_err().to_string();
        assert!(
            error.starts_with(&format!(
                "another flowtel agent (pid {}) is running with the state directory",
                std::process::id()
            )),
            "{error}"
        );
        let other_state = receiver::Persistence {
            state_dir: root.join("state2"),
            ..persistence.clone()
        };
        let error = acquire(&other_state).unwrap_err().to_string();
        assert!(error.contains("with the pin directory"), "{error}");
        drop(first);
        acquire(&persistence).expect("free again once the first is gone");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
