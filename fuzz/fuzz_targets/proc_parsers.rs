//! Whatever a /proc cgroup file holds (a container that vanished mid-read,
//! a runtime's odd layout), finding the container and pod never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let found = receiver::ContainerPath::from_proc_cgroup(text);
        assert!(found.container_id.is_none_or(|id| id.len() == 64));
        assert!(found.pod_uid.is_none_or(|uid| uid.len() == 36));
    }
});
