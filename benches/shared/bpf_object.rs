//! The benches' own eBPF objects (benches/*.bpf.c), built with clang at
//! run time.

use std::path::Path;
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

/// Builds benches/`file` and hands it to `bpftool <args> OBJECT <pin>`
/// (`prog loadall` to load and pin its programs, `iter pin` to pin its
/// iterator); panics if bpftool fails.
pub fn pin_with_bpftool(file: &str, args: &[&str], pin: &Path) {
    let object =
        std::env::temp_dir().join(format!("flowtel-bench-pin-{}-{file}.o", std::process::id()));
    std::fs::write(&object, build(file)).expect("write the object");
    let status = Command::new("bpftool")
        .args(args)
        .arg(&object)
        .arg(pin)
        .status()
        .expect("bpftool");
    let _ = std::fs::remove_file(&object);
    assert!(
        status.success(),
        "bpftool {} could not take benches/{file}",
        args.join(" ")
    );
}
