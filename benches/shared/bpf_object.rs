//! The benches' own eBPF objects (benches/*.bpf.c), built with clang at
//! run time.

use std::process::Command;

/// Builds benches/`file` and returns the object's bytes.
pub fn build(file: &str) -> Vec<u8> {
    let source = format!("{}/benches/{file}", env!("CARGO_MANIFEST_DIR"));
    let object =
        std::env::temp_dir().join(format!("flowtel-bench-{}-{file}.o", std::process::id()));
    let status = Command::new("clang")
        .args([
            "-O2",
            "-g",
            "-target",
            "bpf",
            "-I/usr/include/x86_64-linux-gnu",
            "-c",
            &source,
            "-o",
        ])
        .arg(&object)
        .status()
        .expect("clang");
    assert!(status.success(), "clang could not build {source}");
    let bytes = std::fs::read(&object).expect("the bench object");
    let _ = std::fs::remove_file(&object);
    bytes
}
