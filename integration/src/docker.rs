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

/// The containerd namespace the containerd tests make their containers in.
pub const CONTAINERD_NAMESPACE: &str = "flowtel-test";
/// [`IMAGE`] as containerd names it.
pub const CONTAINERD_IMAGE: &str = "docker.io/library/flowtel-test-busybox:1.0";

/// The socket of a containerd that answers: the system's, or the one
/// dockerd started for itself; with [`IMAGE`] imported into
/// [`CONTAINERD_NAMESPACE`]. Panics when none answers.
pub fn containerd_ready() -> &'static Path {
    static SOCKET: OnceLock<&'static Path> = OnceLock::new();
    SOCKET.get_or_init(|| {
        ready();
        let socket = [
            "/run/containerd/containerd.sock",
            "/var/run/docker/containerd/containerd.sock",
        ]
        .into_iter()
        .map(Path::new)
        .find(|socket| ctr(socket, &["version"]).status.success())
        .expect("no containerd answers (dockerd starts one at /var/run/docker/containerd/containerd.sock)");
        let images = ctr(socket, &["images", "ls", "-q"]).stdout;
        if !String::from_utf8_lossy(&images)
            .lines()
            .any(|image| image == CONTAINERD_IMAGE)
        {
            let mut save = Command::new("docker")
                .args(["save", IMAGE])
                .stdout(Stdio::piped())
                .spawn()
                .expect("docker save");
            let imported = Command::new("ctr")
                .arg("-a")
                .arg(socket)
                .args(["-n", CONTAINERD_NAMESPACE, "images", "import", "-"])
                .stdin(save.stdout.take().expect("docker save output"))
                .output()
                .expect("ctr images import");
            assert!(save.wait().expect("docker save").success(), "docker save failed");
            assert!(
                imported.status.success(),
                "ctr images import failed: {}",
                String::from_utf8_lossy(&imported.stderr)
            );
        }
        socket
    })
}

/// Runs `ctr -a SOCKET -n CONTAINERD_NAMESPACE ARGS`.
pub fn ctr(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new("ctr")
        .arg("-a")
        .arg(socket)
        .args(["-n", CONTAINERD_NAMESPACE])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ctr (apt-get install containerd): {e}"))
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
