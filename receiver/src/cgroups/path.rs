//! What a cgroup path says about the container and the Kubernetes pod a
//! process runs in. Runtimes name their cgroups in a few known ways:
//!
//! | runtime, driver            | container's cgroup                                   |
//! |----------------------------|------------------------------------------------------|
//! | Docker, cgroupfs           | `/docker/ID`                                         |
//! | Docker, systemd            | `/system.slice/docker-ID.scope`                      |
//! | containerd (nerdctl)       | `/NAMESPACE/ID`                                      |
//! | kubelet, cgroupfs          | `/kubepods/besteffort/podUID/ID`                     |
//! | kubelet, systemd           | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podUID_WITH_UNDERSCORES.slice/cri-containerd-ID.scope` |
//! | CRI-O                      | `.../crio-ID.scope` (`crio-conmon-ID.scope` is its monitor, no container) |
//! | Podman                     | `/machine.slice/libpod-ID.scope/container`           |
//!
//! Guaranteed pods sit right under `kubepods` (`/kubepods/podUID`,
//! `kubepods-podUID.slice`).

/// The container and pod a cgroup path names, each where there is one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ContainerPath {
    /// The runtime's 64-hex-digit container id.
    pub container_id: Option<String>,
    /// The Kubernetes pod's UID, in its canonical dashed form.
    pub pod_uid: Option<String>,
}

impl ContainerPath {
    /// Reads a cgroup path (`/kubepods/besteffort/pod.../ID`). The innermost
    /// container id and pod UID win.
    pub fn parse(path: &str) -> ContainerPath {
        let segments = || path.rsplit('/').filter(|s| !s.is_empty());
        ContainerPath {
            container_id: segments().find_map(container_id_in_segment),
            pod_uid: segments().find_map(pod_uid_in_segment),
        }
    }

    /// Reads `/proc/PID/cgroup`: the unified hierarchy's line (`0::PATH`)
    /// first, else the first v1 hierarchy that names a container.
    pub fn from_proc_cgroup(file: &str) -> ContainerPath {
        let paths = || file.lines().filter_map(|line| line.splitn(3, ':').nth(2));
        let unified = file
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .map(ContainerPath::parse)
            .filter(|found| !found.is_empty());
        unified
            .or_else(|| {
                paths()
                    .map(ContainerPath::parse)
                    .find(|found| !found.is_empty())
            })
            .unwrap_or_default()
    }

    /// Whether the path names neither a container nor a pod.
    pub fn is_empty(&self) -> bool {
        self.container_id.is_none() && self.pod_uid.is_none()
    }
}

/// The container id in one path segment: bare, or wrapped by a runtime's
/// systemd scope (`docker-ID.scope`, `cri-containerd-ID.scope`). A
/// runtime's monitor process (`crio-conmon-ID`, `libpod-conmon-ID`) is not
/// in the container.
fn container_id_in_segment(segment: &str) -> Option<String> {
    let unit = segment.strip_suffix(".scope").unwrap_or(segment);
    if unit.contains("-conmon-") {
        return None;
    }
    let id = unit.rsplit(['-', ':']).next()?;
    is_container_id(id).then(|| id.to_owned())
}

fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID in one segment: `podUID` (cgroupfs) or
/// `kubepods[-QOS]-podUID_WITH_UNDERSCORES.slice` (systemd, which keeps
/// dashes for its own hierarchy).
fn pod_uid_in_segment(segment: &str) -> Option<String> {
    let name = segment.strip_suffix(".slice").unwrap_or(segment);
    let (_, uid) = name.rsplit_once("pod")?;
    let before = &name[..name.len() - uid.len() - "pod".len()];
    if !(before.is_empty() || before.ends_with('-')) {
        return None;
    }
    let uid = uid.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// A UUID in its 8-4-4-4-12 hexadecimal form.
fn is_uid(uid: &str) -> bool {
    uid.len() == 36
        && uid.bytes().enumerate().all(|(n, b)| match n {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4ae2a1b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e";
    const UID: &str = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0";
    const UID_UNDERSCORES: &str = "0f1e2d3c_4b5a_6978_8796_a5b4c3d2e1f0";

    fn container(path: &str) -> ContainerPath {
        ContainerPath::parse(path)
    }

    fn both(id: &str, uid: &str) -> ContainerPath {
        ContainerPath {
            container_id: Some(id.into()),
            pod_uid: Some(uid.into()),
        }
    }

    fn only_container(id: &str) -> ContainerPath {
        ContainerPath {
            container_id: Some(id.into()),
            pod_uid: None,
        }
    }

    #[test]
    fn docker_with_either_cgroup_driver() {
        assert_eq!(container(&format!("/docker/{ID}")), only_container(ID));
        assert_eq!(
            container(&format!("/system.slice/docker-{ID}.scope")),
            only_container(ID)
        );
    }

    #[test]
    fn containerd_podman_and_cri_o_outside_kubernetes() {
        assert_eq!(container(&format!("/default/{ID}")), only_container(ID));
        assert_eq!(
            container(&format!("/machine.slice/libpod-{ID}.scope/container")),
            only_container(ID)
        );
        assert_eq!(
            container(&format!("/machine.slice/crio-{ID}.scope")),
            only_container(ID)
        );
    }

    #[test]
    fn kubelet_with_the_cgroupfs_driver() {
        for qos in ["besteffort/", "burstable/", ""] {
            let path = format!("/kubepods/{qos}pod{UID}/{ID}");
            assert_eq!(container(&path), both(ID, UID), "{path}");
        }
    }

    #[test]
    fn kubelet_with_the_systemd_driver_and_each_runtime() {
        for runtime in ["cri-containerd", "crio", "docker"] {
            let path = format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_UNDERSCORES}.slice/{runtime}-{ID}.scope"
            );
            assert_eq!(container(&path), both(ID, UID), "{path}");
        }
        let guaranteed = format!(
            "/kubepods.slice/kubepods-pod{UID_UNDERSCORES}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(container(&guaranteed), both(ID, UID));
    }

    #[test]
    fn a_pod_cgroup_without_its_container() {
        assert_eq!(
            container(&format!("/kubepods/besteffort/pod{UID}")),
            ContainerPath {
                container_id: None,
                pod_uid: Some(UID.into())
            }
        );
    }

    #[test]
    fn a_runtime_monitor_is_not_its_container() {
        let path =
            format!("/kubepods.slice/kubepods-pod{UID_UNDERSCORES}.slice/crio-conmon-{ID}.scope");
        assert_eq!(
            container(&path),
            ContainerPath {
                container_id: None,
                pod_uid: Some(UID.into())
            }
        );
    }

    #[test]
    fn host_cgroups_name_nothing() {
        for path in [
            "/",
            "",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/docker.service",
            "/kubepods.slice/kubepods-besteffort.slice",
            "/system.slice/podman.service",
            "/notapod0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            &format!("/docker/{}", &ID[1..]),
        ] {
            assert!(container(path).is_empty(), "{path}");
        }
    }

    #[test]
    fn proc_files_of_the_unified_hybrid_and_v1_layouts() {
        let v2 = format!("0::/system.slice/docker-{ID}.scope\n");
        let hybrid =
            format!("9:name=systemd:/docker/{ID}\n4:memory:/docker/{ID}\n0::/docker/{ID}\n");
        let v1_only = format!("12:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:cpu:/\n");
        let hybrid_unified_at_root = format!("4:memory:/docker/{ID}\n0::/\n");
        assert_eq!(ContainerPath::from_proc_cgroup(&v2), only_container(ID));
        assert_eq!(ContainerPath::from_proc_cgroup(&hybrid), only_container(ID));
        assert_eq!(ContainerPath::from_proc_cgroup(&v1_only), both(ID, UID));
        assert_eq!(
            ContainerPath::from_proc_cgroup(&hybrid_unified_at_root),
            only_container(ID)
        );
        assert!(ContainerPath::from_proc_cgroup("0::/\n").is_empty());
        assert!(ContainerPath::from_proc_cgroup("garbage").is_empty());
    }
}
