//! Whatever a /proc cgroup file holds (a container that vanished mid-read,
//! a runtime's odd layout), finding the container id never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(id) = receiver::container_id_from_cgroup(text) {
            assert!(!id.is_empty());
        }
    }
});
