//! The flowtel image of `otel-config/container/Dockerfile`, built here for
//! the container test: on a Debian 12 base that `integration/container/
//! debian-base.sh` makes with debootstrap once (no registry is reachable;
//! the image is kept by name and made again only when absent), with the
//! binary under test. And the `docker run` line that runs it as
//! otel-config/README.md says: exactly [`CAPABILITIES`], flowtel's seccomp
//! profile, the host's PID and network namespaces and its cgroup-v2 root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::docker;

/// The capabilities the container gets, as Docker and Kubernetes name
/// them (README "Privileges"); the DaemonSet adds the same.
pub const CAPABILITIES: [&str; 3] = ["BPF", "PERFMON", "NET_ADMIN"];

/// The debootstrap base, made once and kept by this name.
pub const BASE: &str = "flowtel-debian-base:bookworm";

/// The tag the test image is built under (not the `flowtel:VERSION` the
/// README's build gives a release binary, which it must not replace).
pub fn name() -> String {
    format!("flowtel-test:{}", env!("CARGO_PKG_VERSION"))
}

/// Where the Docker runtime for daemons before 23.0 is installed: the
/// daemon keeps its path, so it must outlive the checkout.
pub const RUNTIME_PATH: &str = "/usr/local/libexec/flowtel/runc-bpf";
/// Its name in the daemon's `runtimes`.
pub const RUNTIME: &str = "runc-bpf";

/// The repository's root.
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the integration crate is in the repository")
        .to_path_buf()
}

/// How the daemon gives a container CAP_BPF and CAP_PERFMON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// `--cap-add BPF --cap-add PERFMON` (Docker 23.0 and later).
    CapAdd,
    /// `--runtime runc-bpf` (Docker 20.10, which has no name for them).
    Runtime,
}

/// The image, built from `binary` once per test process, and how this
/// daemon grants the capabilities. Panics, saying why, when it cannot.
pub fn ready(binary: &Path) -> (String, Grant) {
    static READY: OnceLock<(String, Grant)> = OnceLock::new();
    READY
        .get_or_init(|| {
            docker::ready();
            base();
            let grant = grant();
            build(binary);
            (name(), grant)
        })
        .clone()
}

/// Makes [`BASE`] unless it exists (the script says "cached" then).
fn base() {
    let script = repository().join("integration/container/debian-base.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(BASE)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", said.trim());
    assert!(out.status.success(), "{}: {said}", script.display());
}

/// `docker build` of the Dockerfile, from a context of the binary (its
/// debug information stripped, which the image does not need) and the
/// image's configuration, laid out as the repository's `.dockerignore`
/// lets through.
fn build(binary: &Path) {
    let context = std::env::temp_dir().join(format!("flowtel-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&context);
    let release = context.join("target/release");
    let container = context.join("otel-config/container");
    std::fs::create_dir_all(&release).expect("the build context");
    std::fs::create_dir_all(&container).expect("the build context");
    let copy = release.join("flowtel");
    let stripped = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&copy)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(binary, &copy).expect("copy the binary into the context");
    }
    let source = repository().join("otel-config/container");
    std::fs::copy(source.join("flowtel.yaml"), container.join("flowtel.yaml"))
        .expect("the image's flowtel.yaml");
    let out = Command::new("docker")
        .arg("build")
        .arg("-f")
        .arg(source.join("Dockerfile"))
        .args(["--build-arg", &format!("BASE={BASE}")])
        .args(["-t", &name()])
        .arg(&context)
        // The classic builder: it takes a local base image as it is, where
        // BuildKit may ask a registry for its metadata.
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run docker build");
    let _ = std::fs::remove_dir_all(&context);
    assert!(
        out.status.success(),
        "docker build failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the daemon takes `--cap-add BPF`; if not, the runtime that
/// stands in for it, registered with the daemon.
fn grant() -> Grant {
    let probe = docker::docker(&[
        "run",
        "--rm",
        "--cap-drop",
        "ALL",
        "--cap-add",
        "BPF",
        "--cap-add",
        "PERFMON",
        BASE,
        "true",
    ]);
    if probe.status.success() {
        return Grant::CapAdd;
    }
    let said = String::from_utf8_lossy(&probe.stderr);
    assert!(
        said.contains("unknown capability"),
        "docker run --cap-add BPF failed: {said}"
    );
    register_runtime();
    Grant::Runtime
}

/// Installs `otel-config/container/runc-bpf` at [`RUNTIME_PATH`] and makes
/// the daemon know it: `runtimes` in `/etc/docker/daemon.json` (kept
/// otherwise as it is), then SIGHUP, which reloads the runtimes.
fn register_runtime() {
    use std::os::unix::fs::PermissionsExt as _;
    let target = Path::new(RUNTIME_PATH);
    std::fs::create_dir_all(target.parent().unwrap()).expect("the runtime's directory");
    let aside = target.with_extension("new");
    std::fs::copy(repository().join("otel-config/container/runc-bpf"), &aside)
        .expect("copy runc-bpf");
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::rename(&aside, target).expect("install runc-bpf");
    if known_runtimes().contains(&RUNTIME.to_owned()) {
        return;
    }
    let config = Path::new("/etc/docker/daemon.json");
    let mut settings: serde_json::Value = std::fs::read_to_string(config)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    settings["runtimes"][RUNTIME] = serde_json::json!({ "path": RUNTIME_PATH });
    std::fs::create_dir_all(config.parent().unwrap()).expect("/etc/docker");
    std::fs::write(config, serde_json::to_string_pretty(&settings).unwrap())
        .expect("write /etc/docker/daemon.json");
    let pid = std::fs::read_to_string("/var/run/docker.pid")
        .expect("dockerd's pid file")
        .trim()
        .parse::<libc::pid_t>()
        .expect("dockerd's pid");
    // SAFETY: kill has no memory preconditions.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !known_runtimes().contains(&RUNTIME.to_owned()) {
        assert!(
            std::time::Instant::now() < deadline,
            "dockerd did not take the {RUNTIME} runtime from {}",
            config.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn known_runtimes() -> Vec<String> {
    let out = docker::docker(&["info", "--format", "{{json .Runtimes}}"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default()
}

/// The host's cgroup-v2 root: `/sys/fs/cgroup`, or on a hybrid host its
/// `unified` mount.
pub fn host_cgroup2() -> PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("/proc/self/mounts");
    mounts
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(2) == Some(&"cgroup2")).then(|| PathBuf::from(fields[1]))
        })
        .expect("a cgroup-v2 mount on the host")
}

/// flowtel's seccomp profile.
pub fn seccomp_profile() -> PathBuf {
    repository().join("otel-config/container/seccomp.json")
}

/// `docker run --rm` of the image as otel-config/README.md runs it,
/// named `name`, with `args` for flowtel. Not started.
pub fn run_command(image: &str, grant: Grant, name: &str, args: &[&str]) -> Command {
    run_command_with(image, grant, name, Some(&seccomp_profile()), args)
}

/// [`run_command`] with another seccomp profile, or Docker's default.
pub fn run_command_with(
    image: &str,
    grant: Grant,
    name: &str,
    seccomp: Option<&Path>,
    args: &[&str],
) -> Command {
    let mut command = Command::new("docker");
    command
        .args(["run", "--rm", "--name", name])
        .args(["--pid", "host", "--network", "host"])
        .args(["--cap-drop", "ALL"]);
    for capability in CAPABILITIES {
        let granted_by_runtime = matches!(capability, "BPF" | "PERFMON");
        if grant == Grant::CapAdd || !granted_by_runtime {
            command.args(["--cap-add", capability]);
        }
    }
    if grant == Grant::Runtime {
        command.args(["--runtime", RUNTIME]);
    }
    if let Some(profile) = seccomp {
        command
            .arg("--security-opt")
            .arg(format!("seccomp={}", profile.display()));
    }
    command
        .args(["--security-opt", "no-new-privileges"])
        .arg("--read-only")
        .arg("-v")
        .arg(format!(
            "{}:/host/sys/fs/cgroup:ro",
            host_cgroup2().display()
        ))
        .arg(image)
        .args(args);
    command
}
