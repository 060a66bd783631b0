//! Real kernels under qemu, for the kernel matrix: fetch a Debian kernel
//! package, pack a busybox initramfs holding the freshly built binaries and
//! their shared libraries, boot it (software emulation; no KVM needed) and
//! collect what the guest prints on its serial console.
//!
//! Needs Debian's `qemu-system-x86`, `busybox-static` and `cpio`
//! (`.ci/run` installs them); a missing one fails the test with its name.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A kernel image ready to boot.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The Debian package it came from, e.g.
    /// `linux-image-6.1.0-53-cloud-amd64-unsigned`.
    pub package: String,
    /// The `vmlinuz` inside it.
    pub image: PathBuf,
}

/// Debian's archive as the matrix sees it: its own apt sources file and
/// package lists under a cache directory, so that the suites it needs
/// (bullseye to sid, with backports) never touch the host's apt setup.
pub struct Archive {
    dir: PathBuf,
}

/// The suites whose cloud kernels the matrix boots.
const SUITES: [&str; 6] = [
    "bullseye",
    "bookworm",
    "bookworm-backports",
    "trixie",
    "trixie-backports",
    "sid",
];

/// Package lists younger than this are used as they are.
const LISTS_FRESH_FOR: Duration = Duration::from_secs(12 * 3600);

impl Archive {
    /// The archive under `cache`, its package lists brought up to date
    /// (`apt-get update` with the matrix's own sources) unless fresh.
    pub fn open(cache: &Path) -> Archive {
        // apt locks its lists: the matrix's kernels open the archive at
        // once, from the threads of one test binary.
        static OPENING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = OPENING.lock().unwrap_or_else(|e| e.into_inner());
        let dir = cache.join("apt");
        fs::create_dir_all(dir.join("lists/partial")).expect("create the apt lists directory");
        fs::create_dir_all(dir.join("cache/archives/partial")).expect("create the apt cache");
        let sources: String = SUITES
            .iter()
            .map(|suite| {
                format!(
                    "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n"
                )
            })
            .collect();
        fs::write(dir.join("sources.list"), sources).expect("write the matrix's apt sources");
        let archive = Archive { dir };
        let stamp = archive.dir.join("updated");
        let fresh = fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at.elapsed().is_ok_and(|age| age < LISTS_FRESH_FOR));
        if !fresh {
            run_ok(archive.apt("apt-get").arg("update"));
            fs::write(&stamp, "").expect("stamp the apt lists");
        }
        archive
    }

    fn apt(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        let option = |name: &str, value: &Path| format!("{name}={}", value.display());
        command
            .arg("-o")
            .arg(option(
                "Dir::Etc::SourceList",
                &self.dir.join("sources.list"),
            ))
            .args(["-o", "Dir::Etc::SourceParts=/nonexistent"])
            .arg("-o")
            .arg(option("Dir::State::Lists", &self.dir.join("lists")))
            .arg("-o")
            .arg(option("Dir::Cache", &self.dir.join("cache")))
            .args(["-o", "APT::Architecture=amd64", "-q"]);
        command
    }

    /// The newest package whose name matches `pattern` (a regex).
    fn newest(&self, pattern: &str) -> String {
        static SEARCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = SEARCHING.lock().unwrap_or_else(|e| e.into_inner());
        let search = run_ok(
            self.apt("apt-cache")
                .args(["search", "--names-only", pattern]),
        );
        let mut packages: Vec<String> = search
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        packages.sort_by_key(|name| version_key(name));
        packages
            .pop()
            .unwrap_or_else(|| panic!("no Debian package matches {pattern:?}"))
    }
}

impl Kernel {
    /// The newest Debian package whose name matches `pattern`, downloaded
    /// and unpacked under `cache` once. The image is `/boot/vmlinuz-*`, or
    /// `usr/lib/modules/*/vmlinuz` in the `linux-binary-*` packages of 6.19
    /// and later.
    pub fn debian(archive: &Archive, pattern: &str, cache: &Path) -> Kernel {
        let package = archive.newest(pattern);
        let dir = cache.join(&package);
        let unpacked = dir.join("unpacked");
        // apt locks its cache while it downloads.
        static DOWNLOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = DOWNLOADING.lock().unwrap_or_else(|e| e.into_inner());
        if !unpacked.is_dir() {
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create the kernel cache");
            run_ok(
                archive
                    .apt("apt-get")
                    .args(["download", &package])
                    .current_dir(&dir),
            );
            let deb = fs::read_dir(&dir)
                .expect("read the kernel cache")
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .find(|path| path.extension().is_some_and(|e| e == "deb"))
                .unwrap_or_else(|| panic!("apt-get download {package} left no .deb"));
            let staging = dir.join("staging");
            run_ok(Command::new("dpkg").arg("-x").arg(&deb).arg(&staging));
            let _ = fs::remove_file(&deb);
            fs::rename(&staging, &unpacked).expect("keep the unpacked package");
        }
        let image = find_vmlinuz(&unpacked)
            .unwrap_or_else(|| panic!("{package} has no vmlinuz in /boot or usr/lib/modules"));
        Kernel { package, image }
    }
}

fn find_vmlinuz(root: &Path) -> Option<PathBuf> {
    let entries = |dir: PathBuf| -> Vec<PathBuf> {
        fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    let boot = entries(root.join("boot")).into_iter().find(|path| {
        path.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
    });
    boot.or_else(|| {
        entries(root.join("usr/lib/modules"))
            .into_iter()
            .map(|dir| dir.join("vmlinuz"))
            .find(|path| path.is_file())
    })
}

/// Numeric runs of a package name, to sort 6.1.0-9 before 6.1.0-53.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter(|run| !run.is_empty())
        .filter_map(|run| run.parse().ok())
        .collect()
}

/// A busybox initramfs that runs `command` as root once the kernel is up,
/// prints `FLOWTEL-GUEST-EXIT <status>` and powers off.
pub struct Initramfs {
    root: PathBuf,
}

impl Initramfs {
    /// An empty tree under `dir` (wiped first) with busybox and the init
    /// script.
    pub fn new(dir: &Path, command: &str) -> Initramfs {
        let root = dir.join("root");
        let _ = fs::remove_dir_all(&root);
        for sub in ["bin", "proc", "sys", "dev", "tmp"] {
            fs::create_dir_all(root.join(sub)).expect("create the initramfs tree");
        }
        let busybox = which("busybox", "busybox-static");
        fs::copy(busybox, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "mount", "mkdir", "ip", "cat", "poweroff", "sleep"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))
                .expect("link a busybox applet");
        }
        let init = format!(
            "#!/bin/sh\n\
             mount -t proc proc /proc\n\
             mount -t sysfs sys /sys\n\
             mount -t devtmpfs dev /dev\n\
             mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup\n\
             mount -t tracefs none /sys/kernel/tracing 2>/dev/null\n\
             ip link set lo up\n\
             echo FLOWTEL-GUEST-START $(cat /proc/sys/kernel/osrelease)\n\
             cd /\n\
             {command}\n\
             echo FLOWTEL-GUEST-EXIT $?\n\
             poweroff -f\n"
        );
        let path = root.join("init");
        fs::write(&path, init).expect("write /init");
        set_executable(&path);
        Initramfs { root }
    }

    /// Adds an executable at `/name`, without debug info, with the shared
    /// libraries it links at the same paths as here.
    pub fn add_binary(&mut self, binary: &Path, name: &str) -> &mut Self {
        let dest = self.root.join(name);
        run_ok(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(binary)
                .arg(&dest),
        );
        set_executable(&dest);
        let ldd = run_ok(Command::new("ldd").arg(binary));
        for library in ldd.split_whitespace().filter(|w| w.starts_with('/')) {
            let target = self.root.join(library.trim_start_matches('/'));
            fs::create_dir_all(target.parent().expect("a library has a directory"))
                .expect("create the library directory");
            fs::copy(library, &target).unwrap_or_else(|e| panic!("copy {library}: {e}"));
        }
        self
    }

    /// Packs the tree into `initrd.gz` beside it.
    pub fn pack(&self) -> PathBuf {
        let out = self.root.with_file_name("initrd.gz");
        let script = format!(
            "cd '{}' && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            self.root.display(),
            out.display()
        );
        which("cpio", "cpio");
        run_ok(Command::new("sh").args(["-c", &script]));
        out
    }
}

/// Boots `kernel` with `initrd` and the extra kernel command line `append`
/// under qemu (software emulation) with `cpus` CPUs, and returns the serial
/// console output. Panics if qemu cannot start or the guest runs past
/// `timeout`.
pub fn boot(kernel: &Kernel, initrd: &Path, append: &str, timeout: Duration, cpus: u32) -> String {
    let qemu = which("qemu-system-x86_64", "qemu-system-x86");
    let started = Instant::now();
    let cpus = cpus.to_string();
    let mut child = Command::new(qemu)
        .args(["-m", "1024", "-smp", &cpus, "-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(format!("console=ttyS0 panic=-1 quiet {append}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-system-x86_64");
    let stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    loop {
        if child.try_wait().expect("wait for qemu").is_some() {
            break;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            let console = reader.join().unwrap_or_default();
            panic!(
                "the guest ({}) ran past {timeout:?}; its console:\n{console}",
                kernel.package
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = reader.join().unwrap_or_default();
    let _ = std::io::stderr().flush();
    console
}

/// The guest command's exit status from the console, if it got that far.
pub fn guest_exit_status(console: &str) -> Option<i32> {
    console
        .lines()
        .find_map(|line| line.trim().strip_prefix("FLOWTEL-GUEST-EXIT "))
        .and_then(|status| status.trim().parse().ok())
}

fn which(program: &str, package: &str) -> PathBuf {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    found.unwrap_or_else(|| {
        panic!("{program} not found: install Debian's {package} (apt-get install {package})")
    })
}

/// Runs `command`; its stdout. Panics, with its stderr, unless it succeeds.
pub(crate) fn run_ok(command: &mut Command) -> String {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        output.status.success(),
        "{shown} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod 755");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_kernel_packages_sort_last() {
        let mut names = [
            "linux-image-6.1.0-53-cloud-amd64-unsigned",
            "linux-image-6.1.0-9-cloud-amd64-unsigned",
            "linux-image-6.1.0-47-cloud-amd64-unsigned",
        ];
        names.sort_by_key(|name| version_key(name));
        assert_eq!(
            names.last(),
            Some(&"linux-image-6.1.0-53-cloud-amd64-unsigned")
        );
    }

    #[test]
    fn reads_the_guest_exit_status() {
        let console = "FLOWTEL-GUEST-START 6.1.0\r\ntest x ... ok\r\nFLOWTEL-GUEST-EXIT 101\r\n";
        assert_eq!(guest_exit_status(console), Some(101));
        assert_eq!(guest_exit_status("FLOWTEL-GUEST-START"), None);
    }
}
