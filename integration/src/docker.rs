//! A real Docker daemon for the container tests: Debian's docker.io
//! `dockerd`, started here when none answers, and a busybox image made
//! from the host's static busybox (no registry is reachable), run on the
//! host network so that traffic stays on loopback.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The image every test container runs.
pub const IMAGE: &str = "flowtel-test-busybox:1.0";
/// A file in the image, of [`PAYLOAD_BYTES`] bytes.
pub const PAYLOAD: &str = "/payload";
/// The size of [`PAYLOAD`].
pub const PAYLOAD_BYTES: u64 = 123_457;

/// How long dockerd may take to answer after it starts.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes sure a daemon answers and [`IMAGE`] exists, once per test
/// process. Panics with what to do when it cannot.
pub fn ready() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if !answers() {
            start_daemon();
        }
        if !docker(&["image", "inspect", IMAGE]).status.success() {
            import_image();
        }
    });
}

/// Runs `docker ARGS`, panicking when the client cannot be started.
pub fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker (apt-get install docker.io): {e}"))
}

/// `docker run --rm --network host` of [`IMAGE`] with `extra` arguments
/// (names, labels) and `sh -c SCRIPT`; panics unless it exits 0.
pub fn run(extra: &[&str], script: &str) {
    let mut args = vec!["run", "--rm", "--network", "host"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, "sh", "-c", script]);
    let out = docker(&args);
    assert!(
        out.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn answers() -> bool {
    Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn start_daemon() {
    let log = std::env::temp_dir().join("flowtel-test-dockerd.log");
    let log_file = std::fs::File::create(&log).expect("dockerd log file");
    // Left running for the other tests (and later runs): starting a
    // daemon takes seconds. Its parent's exit hands it to init.
    #[allow(clippy::zombie_processes)]
    Command::new("dockerd")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start dockerd (apt-get install docker.io): {e}"));
    let deadline = Instant::now() + DAEMON_TIMEOUT;
    while !answers() {
        assert!(
            Instant::now() < deadline,
            "dockerd did not answer within {DAEMON_TIMEOUT:?}; see {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A root filesystem of the host's static busybox (busybox-static), its
/// applets and the payload, imported as [`IMAGE`].
fn import_image() {
    let busybox = Path::new("/bin/busybox");
    let root = std::env::temp_dir().join(format!("flowtel-rootfs-{}", std::process::id()));
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs bin");
    std::fs::copy(busybox, bin.join("busybox")).expect("copy busybox");
    for applet in ["sh", "nc", "cat", "sleep", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
    }
    let payload: Vec<u8> = (0..PAYLOAD_BYTES).map(|n| (n * 7 % 251) as u8).collect();
    std::fs::write(root.join(PAYLOAD.trim_start_matches('/')), payload).expect("payload");
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("tar");
    let imported = Command::new("docker")
        .args(["import", "-", IMAGE])
        .stdin(tar.stdout.take().expect("tar output"))
        .output()
        .expect("docker import");
    let archived = tar.wait().expect("tar");
    let _ = std::fs::remove_dir_all(&root);
    assert!(archived.success(), "tar of the image's rootfs failed");
    assert!(
        imported.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&imported.stderr)
    );
}
