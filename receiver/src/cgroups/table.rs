//! The container cgroups of the host by id: found by a walk of the
//! cgroup-v2 tree at start, then told by the kernel as they are made and
//! removed. Only cgroups that name a container or a pod are kept.

use foldhash::{HashMap, HashMapExt};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use super::ContainerPath;

/// Removed cgroups stay known this many polls: their last connections'
/// samples may come in the poll after the removal.
const KEEP_REMOVED_POLLS: u64 = 3;

/// How deep the start walk goes: kubelet's systemd layout is 4 levels,
/// nested runtimes add a few.
const WALK_DEPTH: usize = 12;

/// What each container cgroup id names.
#[derive(Debug)]
pub struct CgroupTable {
    known: HashMap<u64, Known>,
    limit: usize,
    poll: u64,
    /// Container cgroups not kept because the table was full.
    dropped: u64,
}

#[derive(Debug)]
struct Known {
    names: Arc<ContainerPath>,
    removed_at: Option<u64>,
}

impl CgroupTable {
    /// An empty table holding at most `limit` cgroups.
    pub fn new(limit: usize) -> CgroupTable {
        CgroupTable {
            known: HashMap::new(),
            limit,
            poll: 0,
            dropped: 0,
        }
    }

    /// What cgroup `id` names; empty for a host cgroup (or one never told).
    pub fn get(&self, id: u64) -> Option<&Arc<ContainerPath>> {
        self.known.get(&id).map(|known| &known.names)
    }

    /// Cgroup `id` was made at `path` (from the hierarchy's root).
    pub fn made(&mut self, id: u64, path: &str) {
        let names = ContainerPath::parse(path);
        if names.is_empty() || self.known.contains_key(&id) {
            return;
        }
        if self.known.len() >= self.limit {
            self.dropped += 1;
            return;
        }
        let names = Arc::new(names);
        self.known.insert(
            id,
            Known {
                names,
                removed_at: None,
            },
        );
    }

    /// Cgroup `id` was removed: it is forgotten a few polls from now.
    pub fn removed(&mut self, id: u64) {
        if let Some(known) = self.known.get_mut(&id) {
            known.removed_at.get_or_insert(self.poll);
        }
    }

    /// Marks the end of a poll: forgets cgroups removed a while ago.
    pub fn end_poll(&mut self) {
        self.poll += 1;
        let poll = self.poll;
        self.known.retain(|_, known| {
            known
                .removed_at
                .is_none_or(|at| poll - at <= KEEP_REMOVED_POLLS)
        });
    }

    /// Container cgroups not kept because the table was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Cgroups known now.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Adds every container cgroup under `root` (a cgroup-v2 mount), whose
    /// ids are their directories' inode numbers. Unreadable directories
    /// (removed during the walk) are skipped.
    pub fn walk(&mut self, root: &Path) {
        let mut pending = vec![(root.to_path_buf(), 0)];
        while let Some((dir, depth)) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                if !metadata.is_dir() {
                    continue;
                }
                let path = entry.path();
                if let Ok(relative) = path.strip_prefix(root) {
                    let relative = format!("/{}", relative.to_string_lossy());
                    self.made(metadata.ino(), &relative);
                }
                if depth + 1 < WALK_DEPTH {
                    pending.push((path, depth + 1));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4ae2a1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";

    #[test]
    fn keeps_only_cgroups_that_name_a_container_or_a_pod() {
        let mut table = CgroupTable::new(10);
        table.made(1, "/system.slice/cron.service");
        table.made(2, &format!("/docker/{ID}"));
        assert!(table.get(1).is_none());
        assert_eq!(table.get(2).unwrap().container_id.as_deref(), Some(ID));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_removed_cgroup_is_named_for_a_few_polls_more() {
        let mut table = CgroupTable::new(10);
        table.made(2, &format!("/docker/{ID}"));
        table.removed(2);
        for _ in 0..KEEP_REMOVED_POLLS {
            table.end_poll();
            assert!(table.get(2).is_some());
        }
        table.end_poll();
        assert!(table.get(2).is_none());
    }

    #[test]
    fn a_full_table_counts_what_it_drops() {
        let mut table = CgroupTable::new(1);
        table.made(2, &format!("/docker/{ID}"));
        table.made(3, &format!("/system.slice/docker-{ID}.scope"));
        assert!(table.get(3).is_none());
        assert_eq!(table.dropped(), 1);
    }

    #[test]
    fn the_walk_names_directories_by_their_inode() {
        let root = std::env::temp_dir().join(format!("flowtel-cgroup-walk-{}", std::process::id()));
        let container = root
            .join("kubepods/besteffort/pod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
            .join(ID);
        std::fs::create_dir_all(&container).unwrap();
        let mut table = CgroupTable::new(10);
        table.walk(&root);
        let ino = std::fs::metadata(&container).unwrap().ino();
        let names = table.get(ino).cloned();
        std::fs::remove_dir_all(&root).unwrap();
        let names = names.expect("the container's directory is known");
        assert_eq!(names.container_id.as_deref(), Some(ID));
        assert_eq!(
            names.pod_uid.as_deref(),
            Some("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
    }
}
