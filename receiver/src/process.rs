//! Names the process that owns a connection and the container it runs in.

use foldhash::{HashMap, HashMapExt};
use std::sync::Arc;

use crate::cgroups::{CgroupTable, ContainerPath};
use crate::ProcessInfo;

/// Caches one [`ProcessInfo`] per (pid, name, cgroup), so a poll shares
/// one allocation among all connections of a process and looks up its
/// container once per process, not per connection.
pub struct ProcessResolver {
    known: HashMap<ProcessKey, Known>,
    /// The last answer of this poll: a process's connections mostly come
    /// one after another (from one socket walk), and this skips hashing
    /// the 28-byte key for each.
    last: Option<(ProcessKey, Arc<ProcessInfo>)>,
    generation: u64,
    containers: Containers,
}

/// Where a process's container comes from.
pub enum Containers {
    /// The cgroup id the kernel recorded with the connection, named by the
    /// cgroups the kernel told as they were made: right even when the
    /// process and its container are gone.
    Cgroups(CgroupTable),
    /// `/proc/PID/cgroup` when user space first sees the process: nothing
    /// once the process has exited.
    ProcFiles,
}

/// What the kernel recorded of a process: its pid, name and cgroup.
type ProcessKey = (u32, [u8; 16], u64);

struct Known {
    info: Arc<ProcessInfo>,
    last_used: u64,
}

/// Entries unused for this many polls are forgotten (their pid may be reused).
const FORGET_AFTER_POLLS: u64 = 3;

impl ProcessResolver {
    /// A resolver finding containers from `containers`.
    pub fn new(containers: Containers) -> ProcessResolver {
        ProcessResolver {
            known: HashMap::new(),
            last: None,
            generation: 0,
            containers,
        }
    }

    /// The cgroups known, when containers come from them.
    pub fn cgroups(&self) -> Option<&CgroupTable> {
        match &self.containers {
            Containers::Cgroups(table) => Some(table),
            Containers::ProcFiles => None,
        }
    }

    /// The cgroups known, when containers come from them, to tell it more.
    pub fn cgroups_mut(&mut self) -> Option<&mut CgroupTable> {
        match &mut self.containers {
            Containers::Cgroups(table) => Some(table),
            Containers::ProcFiles => None,
        }
    }

    /// `comm` and `cgroup_id` are what the kernel recorded when it first
    /// saw the connection: still right when the process has exited since.
    pub fn resolve(&mut self, pid: u32, comm: &[u8; 16], cgroup_id: u64) -> Arc<ProcessInfo> {
        let key = (pid, *comm, cgroup_id);
        if let Some((last_key, info)) = &self.last {
            if *last_key == key {
                return info.clone();
            }
        }
        let generation = self.generation;
        let containers = &self.containers;
        let known = self.known.entry(key).or_insert_with(|| {
            let found = match containers {
                Containers::Cgroups(table) => table
                    .get(cgroup_id)
                    .map(|c| (**c).clone())
                    .unwrap_or_default(),
                Containers::ProcFiles => read_proc_cgroup(pid),
            };
            Known {
                info: Arc::new(ProcessInfo {
                    pid,
                    name: comm_to_string(comm),
                    container_id: found.container_id,
                    pod_uid: found.pod_uid,
                }),
                last_used: generation,
            }
        });
        known.last_used = generation;
        self.last = Some((key, known.info.clone()));
        known.info.clone()
    }

    /// Marks the end of a poll: forgets processes not seen lately, and
    /// cgroups removed a while ago.
    pub fn end_poll(&mut self) {
        if let Some(table) = self.cgroups_mut() {
            table.end_poll();
        }
        // The memo's entry must be marked used in the next poll too.
        self.last = None;
        self.generation += 1;
        let generation = self.generation;
        self.known
            .retain(|_, known| generation - known.last_used <= FORGET_AFTER_POLLS);
    }
}

/// The container in `/proc/PID/cgroup`; none for a process that has
/// exited (no file) or for pid 0 (no process was ever seen).
fn read_proc_cgroup(pid: u32) -> ContainerPath {
    if pid == 0 {
        return ContainerPath::default();
    }
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|text| ContainerPath::from_proc_cgroup(&text))
        .unwrap_or_default()
}

pub(crate) fn comm_to_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exited_process_keeps_the_container_its_cgroup_named() {
        const ID: &str = "3f4ae2a1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";
        let mut table = CgroupTable::new(4);
        table.made(77, &format!("/docker/{ID}"));
        table.removed(77);
        let mut resolver = ProcessResolver::new(Containers::Cgroups(table));
        let info = resolver.resolve(u32::MAX - 1, &[b'n'; 16], 77);
        assert_eq!(info.container_id.as_deref(), Some(ID));
        let host = resolver.resolve(u32::MAX - 1, &[b'n'; 16], 1);
        assert_eq!(host.container_id, None);
    }

    #[test]
    fn keeps_the_kernel_name_of_an_exited_process() {
        let mut resolver = ProcessResolver::new(Containers::ProcFiles);
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"gone");
        let info = resolver.resolve(u32::MAX - 1, &comm, 0);
        assert_eq!(info.name, "gone");
        assert_eq!(info.container_id, None);
    }

    #[test]
    fn shares_one_info_per_process_and_forgets_idle_ones() {
        let mut resolver = ProcessResolver::new(Containers::ProcFiles);
        let comm = [b'x'; 16];
        let a = resolver.resolve(1, &comm, 0);
        let b = resolver.resolve(1, &comm, 0);
        assert!(Arc::ptr_eq(&a, &b));
        for _ in 0..=FORGET_AFTER_POLLS + 1 {
            resolver.end_poll();
        }
        assert!(resolver.known.is_empty());
    }
}
