//! Names the process that owns a connection and the container it runs in.

use std::collections::HashMap;
use std::sync::Arc;

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
    let container_id = if pid == 0 {
        None
    } else {
        // A process that has exited has no cgroup file: no container then.
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| container_id_from_cgroup(&text))
    };
    ProcessInfo {
        pid,
        name,
        container_id,
    }
}

pub(crate) fn comm_to_string(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// Finds a container id in `/proc/PID/cgroup`: a 64-hex-digit path segment,
/// bare (`/docker/ID`, `/kubepods/.../ID`) or wrapped by a runtime's systemd
/// scope (`docker-ID.scope`, `cri-containerd-ID.scope`, `crio-ID.scope`,
/// `libpod-ID.scope`).
pub fn container_id_from_cgroup(cgroup_file: &str) -> Option<String> {
    cgroup_file.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(container_id_in_segment)
    })
}

fn container_id_in_segment(segment: &str) -> Option<String> {
    let segment = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = segment.rsplit(['-', ':']).next()?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4ae2a1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";

    #[test]
    fn finds_container_ids_of_common_runtimes() {
        for file in [
            format!("0::/system.slice/docker-{ID}.scope\n"),
            format!("12:memory:/docker/{ID}\n0::/\n"),
            format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1234.slice/cri-containerd-{ID}.scope\n"),
            format!("0::/kubepods/besteffort/pod1234-5678/{ID}\n"),
            format!("0::/machine.slice/libpod-{ID}.scope/container\n"),
            format!("0::/kubepods.slice/crio-{ID}.scope\n"),
        ] {
            assert_eq!(container_id_from_cgroup(&file).as_deref(), Some(ID), "{file}");
        }
    }

    #[test]
    fn a_host_process_has_no_container() {
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-0.slice/session-1.scope\n"),
            None
        );
        assert_eq!(container_id_from_cgroup("0::/\n"), None);
        assert_eq!(container_id_from_cgroup("garbage"), None);
    }

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
