//! Builds the eBPF programs in `bpf-programs/` with clang, and records the C
//! layout of the structs shared with user space so a test can compare it
//! with the Rust mirrors.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const PROGRAMS: &str = "../bpf-programs";

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The whole directory: any program, header or the layout check.
    println!("cargo:rerun-if-changed={PROGRAMS}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    require_tool(&clang);
    require_header("/usr/include/bpf/bpf_helpers.h", "libbpf-dev");
    let multiarch = multiarch_include();
    require_header(&format!("{multiarch}/asm/types.h"), "linux-libc-dev");

    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86",
        Ok("aarch64") => "arm64",
        Ok(other) => other.to_owned().leak(),
        Err(_) => "x86",
    };
    run(
        Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{arch}"))
            .arg(format!("-I{multiarch}"))
            .arg("-c")
            .arg(format!("{PROGRAMS}/flowtel.bpf.c"))
            .arg("-o")
            .arg(out.join("flowtel.bpf.o")),
        "compiling bpf-programs/flowtel.bpf.c",
    );

    // The shared structs' layout as the C compiler sees it (for a host of
    // the same data model as BPF: LP64, little endian).
    let layout_bin = out.join("layout");
    run(
        Command::new(&clang)
            .arg(format!("-I{multiarch}"))
            .arg(format!("{PROGRAMS}/layout.c"))
            .arg("-o")
            .arg(&layout_bin),
        "compiling bpf-programs/layout.c",
    );
    let layout = Command::new(&layout_bin)
        .output()
        .unwrap_or_else(|e| fail(&format!("running {}: {e}", layout_bin.display())));
    std::fs::write(out.join("c_layout.txt"), layout.stdout)
        .unwrap_or_else(|e| fail(&format!("writing c_layout.txt: {e}")));
}

fn multiarch_include() -> String {
    let triple = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => "x86_64-linux-gnu",
    };
    format!("/usr/include/{triple}")
}

fn require_tool(clang: &str) {
    if Command::new(clang).arg("--version").output().is_err() {
        fail(&format!(
            "`{clang}` not found: flowtel's eBPF programs are built with clang; install it (apt-get install clang llvm) or set CLANG"
        ));
    }
}

fn require_header(path: &str, package: &str) {
    if !Path::new(path).exists() {
        fail(&format!(
            "{path} not found: install it (apt-get install {package})"
        ));
    }
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|e| fail(&format!("{what}: {e}")));
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        fail(&format!("{what} failed (compiler output above)"));
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
