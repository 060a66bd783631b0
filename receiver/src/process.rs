//! Names the process that owns a connection and the container it runs in.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cgroups::ContainerPath;
use crate::ProcessInfo;

/// Caches one [`ProcessInfo`] per (pid, name), so a poll shares one
/// allocation among all connections of a process and reads /proc once per
/// process, not per connection.
#[derive(Default)]
pub struct ProcessResolver {
    known: HashMap<(u32, [u8; 16]), Known>,
    generation: u64,
}

struct Known {
    info: Arc<ProcessInfo>,
    last_used: u64,
}

/// Entries unused for this many polls are forgotten (their pid may be reused).
const FORGET_AFTER_POLLS: u64 = 3;

impl ProcessResolver {
    /// `comm` is the name the kernel recorded when it first saw the
    /// connection: still right when the process has exited since.
    pub fn resolve(&mut self, pid: u32, comm: &[u8; 16]) -> Arc<ProcessInfo> {
        let generation = self.generation;
        let known = self.known.entry((pid, *comm)).or_insert_with(|| Known {
            info: Arc::new(read_process(pid, comm)),
            last_used: generation,
        });
        known.last_used = generation;
        known.info.clone()
    }

    /// Marks the end of a poll: forgets processes not seen lately.
    pub fn end_poll(&mut self) {
        self.generation += 1;
        let generation = self.generation;
        self.known
            .retain(|_, known| generation - known.last_used <= FORGET_AFTER_POLLS);
    }
}

fn read_process(pid: u32, comm: &[u8; 16]) -> ProcessInfo {
    let name = comm_to_string(comm);
    // A process that has exited has no cgroup file: no container then.
    let found = match pid {
        0 => ContainerPath::default(),
        pid => std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|text| ContainerPath::from_proc_cgroup(&text))
            .unwrap_or_default(),
    };
    ProcessInfo {
        pid,
        name,
        container_id: found.container_id,
        pod_uid: found.pod_uid,
    }
}

fn comm_to_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_kernel_name_of_an_exited_process() {
        let mut resolver = ProcessResolver::default();
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"gone");
        let info = resolver.resolve(u32::MAX - 1, &comm);
        assert_eq!(info.name, "gone");
        assert_eq!(info.container_id, None);
    }

    #[test]
    fn shares_one_info_per_process_and_forgets_idle_ones() {
        let mut resolver = ProcessResolver::default();
        let comm = [b'x'; 16];
        let a = resolver.resolve(1, &comm);
        let b = resolver.resolve(1, &comm);
        assert!(Arc::ptr_eq(&a, &b));
        for _ in 0..=FORGET_AFTER_POLLS + 1 {
            resolver.end_poll();
        }
        assert!(resolver.known.is_empty());
    }
}
