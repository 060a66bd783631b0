//! Disk trouble never stops the counting, and never passes in silence: a
//! queue directory that is read-only or full is refused at start in one
//! line; one that fills while the agent runs is logged once and counted,
//! the windows held in memory and written to their places once it has room
//! again, so that nothing is lost even to a SIGKILL after; a state
//! directory that fills while the agent runs is logged once, the agent
//! counts on and says at the stop what the missing checkpoint costs. The
//! faults are real: a tmpfs with a size limit, a read-only bind mount.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration::agent::Agent;
use integration::otlp_metrics;
use integration::otlp_receiver::{Behaviour, OtlpReceiver, Protocol};
use integration::privilege;
use integration::record::window_bytes;
use integration::sandbox::Sandbox;
use integration::traffic::tcp;

const FLOWTEL: &str = env!("CARGO_BIN_EXE_flowtel");
const POLL: Duration = Duration::from_millis(200);
const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A mount, unmounted on drop.
struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` (as mount's `size=` takes it) at `at`.
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], at);
        Mount(at.to_owned())
    }

    /// `source` again at `at`, read-only.
    fn read_only(source: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        mount(&["--bind", source.to_str().unwrap()], at);
        let guard = Mount(at.to_owned());
        mount(&["-o", "remount,bind,ro"], at);
        guard
    }
}

fn mount(args: &[&str], at: &Path) {
    let status = Command::new("mount").args(args).arg(at).status().unwrap();
    assert!(status.success(), "mount {args:?} {at:?} failed");
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with one more file; returns it.
fn fill(dir: &Path) -> PathBuf {
    let n = std::fs::read_dir(dir).unwrap().count();
    let path = dir.join(format!("filler-{n}"));
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    loop {
        if let Err(e) = file.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            break;
        }
    }
    // What is left is less than a chunk: fill it byte by byte.
    while file.write_all(&[0]).is_ok() {}
    path
}

/// `flowtel run --config config` exporting to `receiver`, expected to
/// refuse to start: its exit code and stderr.
fn refused(receiver: &OtlpReceiver, config: &Path) -> (Option<i32>, String) {
    let mut command = receiver.agent_command(FLOWTEL);
    let output = command
        .arg("--config")
        .arg(config)
        .output()
        .expect("run flowtel");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// [`refused`], exit code 1 and one error line holding `expected`;
/// returns the stderr.
fn refused_with(receiver: &OtlpReceiver, config: &Path, expected: &str) -> String {
    let (code, stderr) = refused(receiver, config);
    println!("refused: {code:?}: {stderr}");
    assert_eq!(code, Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("flowtel: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(expected), "{stderr}");
    stderr
}

fn spill_config(root: &Path, spill: &Path) -> PathBuf {
    let config = root.join("flowtel.yaml");
    std::fs::write(
        &config,
        format!("exporters:\n  otlp:\n    spill_dir: {}\n", spill.display()),
    )
    .unwrap();
    config
}

/// Waits until `agent` has a window holding `n` bytes of the connection
/// to `port`.
fn wait_for_window(agent: &mut Agent, port: u16, n: u64) {
    agent.wait_until("the transfer's window", |records| {
        window_bytes(records, port) >= n
    });
}

/// Waits up to 20 s for the agent to log a line holding `text`.
fn wait_for_line(agent: &Agent, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines_with(&agent.stderr(), text).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the agent did not say {text:?}: {:?}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines_with<'a>(lines: &'a [String], text: &str) -> Vec<&'a String> {
    lines.iter().filter(|l| l.contains(text)).collect()
}

#[test]
fn a_read_only_or_full_queue_directory_is_refused_at_start_in_one_line() {
    privilege::require_root();
    let root = std::env::temp_dir().join(format!("flowtel-disk-start-{}", std::process::id()));
    let receiver = OtlpReceiver::start(Protocol::Http, Behaviour::default());

    let tmpfs = Mount::tmpfs(&root.join("tmpfs"), "1m");
    std::fs::create_dir_all(tmpfs.0.join("spill")).unwrap();
    let ro = Mount::read_only(&tmpfs.0, &root.join("ro"));
    let config = spill_config(&root, &ro.0.join("spill"));
    refused_with(
        &receiver,
        &config,
        &format!(
            "the OTLP queue directory {} cannot be used: Read-only file system",
            ro.0.join("spill").display()
        ),
    );

    // A read-only state directory: the lock file cannot be made.
    let config = root.join("state.yaml");
    std::fs::write(
        &config,
        format!(
            "receiver:\n  persistence:\n    pin_dir: /sys/fs/bpf/flowtel-disk-test-none\n    state_dir: {}\n",
            ro.0.display()
        ),
    )
    .unwrap();
    let stderr = refused_with(
        &receiver,
        &config,
        &format!(
            "cannot open the lock file {}/flowtel.lock (receiver.persistence.state_dir must be a writable directory): Read-only file system",
            ro.0.display()
        ),
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    drop(ro);

    let full = Mount::tmpfs(&root.join("full"), "256k");
    std::fs::create_dir_all(full.0.join("spill")).unwrap();
    fill(&full.0);
    let config = spill_config(&root, &full.0.join("spill"));
    let stderr = refused_with(
        &receiver,
        &config,
        "cannot be used: No space left on device",
    );
    assert!(
        !stderr.contains("exporting windows over OTLP"),
        "nothing says it exports: {stderr}"
    );
    drop(full);
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_queue_directory_that_fills_while_running_is_logged_once_and_nothing_is_lost() {
    privilege::require_root();
    let root = std::env::temp_dir().join(format!("flowtel-disk-queue-{}", std::process::id()));
    let tmpfs = Mount::tmpfs(&root.join("tmpfs"), "2m");
    let spill = tmpfs.0.join("spill");
    let config = spill_config(&root, &spill);
    let down = OtlpReceiver::start(
        Protocol::Http,
        Behaviour {
            unavailable_first: u32::MAX,
            ..Behaviour::default()
        },
    );
    let mut command = down.agent_command(FLOWTEL);
    command.arg("--config").arg(&config).env("RUST_LOG", "info");
    let mut first = Agent::launch(command, POLL);
    assert_eq!(
        lines_with(&first.stderr(), "less than queue_bytes").len(),
        1,
        "the small directory is named at start: {:?}",
        first.stderr()
    );

    let before = tcp::transfer(LOOPBACK, 100_000, 100_000);
    wait_for_window(&mut first, before.server_port, 200_000);
    let filler = fill(&tmpfs.0);
    let during = tcp::transfer(LOOPBACK, 150_000, 150_000);
    wait_for_window(&mut first, during.server_port, 300_000);
    first.wait_for_another_window();
    first.wait_for_another_window();
    assert!(first.is_running(), "the agent keeps running");
    let failures = lines_with(
        &first.stderr(),
        "could not write a window to the queue directory",
    )
    .len();
    assert_eq!(failures, 1, "logged once: {:?}", first.stderr());

    // Room again: the next window is written, and those held in memory
    // meanwhile are written to their places, so even a SIGKILL now loses
    // nothing.
    std::fs::remove_file(&filler).unwrap();
    wait_for_line(&first, "writing windows to");
    first.wait_for_another_window();
    assert_eq!(
        lines_with(&first.stderr(), "writing windows to").len(),
        1,
        "{:?}",
        first.stderr()
    );
    let how = first.kill();
    assert!(how.contains("signal: 9"), "{how}");

    let up = OtlpReceiver::start(Protocol::Http, Behaviour::default());
    let mut command = up.agent_command(FLOWTEL);
    command.arg("--config").arg(&config);
    let mut second = Agent::launch(command, POLL);
    let truth = |t: &tcp::Transfer| (t.client_sent + t.server_sent) as i64;
    let deadline = Instant::now() + Duration::from_secs(30);
    let arrived =
        |port| otlp_metrics::flow_bytes(&otlp_metrics::points(&up.accepted()), port, "transmit");
    while arrived(before.server_port) < truth(&before)
        || arrived(during.server_port) < truth(&during)
    {
        assert!(
            Instant::now() < deadline,
            "the kept windows did not all arrive"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    second.wait_for_another_window();
    second.stop();
    println!(
        "queue directory full mid-run: {} of {} and {} of {} bytes arrived",
        arrived(before.server_port),
        truth(&before),
        arrived(during.server_port),
        truth(&during)
    );
    assert_eq!(arrived(before.server_port), truth(&before));
    assert_eq!(arrived(during.server_port), truth(&during));
    // In order: the windows written at the stop kept their place.
    let times: Vec<u64> = otlp_metrics::points(&up.accepted())
        .iter()
        .map(|p| p.time_ns)
        .collect();
    assert!(
        times.windows(2).all(|t| t[0] <= t[1]),
        "the windows arrived out of order"
    );
    let counted: i64 = otlp_metrics::health_points(&up.accepted())
        .iter()
        .filter(|p| p.metric == "flowtel.queue.write_failures")
        .map(otlp_metrics::Point::int)
        .sum();
    assert!(counted >= 1, "flowtel.queue.write_failures: {counted}");
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn a_state_directory_that_fills_while_running_never_stops_the_agent() {
    privilege::require_root();
    let sandbox = Sandbox::new("disk-state");
    let state = Mount::tmpfs(&sandbox.state_dir(), "1m");
    let config = sandbox.config("processor:\n  interval: 1s\n");
    let mut agent = Agent::start_with_config(FLOWTEL, POLL, &config);
    let before = tcp::transfer(LOOPBACK, 50_000, 50_000);
    wait_for_window(&mut agent, before.server_port, 100_000);
    assert!(state.0.join("checkpoint.json").exists());
    fill(&state.0);
    wait_for_line(&agent, "cannot write the checkpoint");
    // Removing the older checkpoint made room: fill that too, so that the
    // saves fail until the stop.
    fill(&state.0);
    let during = tcp::transfer(LOOPBACK, 70_000, 70_000);
    wait_for_window(&mut agent, during.server_port, 140_000);
    agent.wait_for_another_window();
    agent.wait_for_another_window();
    assert!(agent.is_running(), "the agent keeps running");
    let stderr = agent.stderr();
    let said = lines_with(&stderr, "cannot write the checkpoint");
    assert_eq!(said.len(), 1, "logged once: {stderr:?}");
    assert!(said[0].contains("No space left on device"), "{said:?}");
    assert!(
        said[0].contains("the older checkpoint was removed"),
        "{said:?}"
    );
    assert!(
        !state.0.join("checkpoint.json").exists(),
        "a restart starts afresh rather than count twice"
    );
    let how = agent.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(how.contains("exit status: 0"), "{how}");
    let records = agent.records();
    assert_eq!(window_bytes(&records, before.server_port), 100_000);
    assert_eq!(
        window_bytes(&records, during.server_port),
        140_000,
        "counted on while the state directory was full"
    );
    assert_eq!(
        lines_with(&agent.stderr(), "stopped without a checkpoint").len(),
        1,
        "{:?}",
        agent.stderr()
    );
    drop(state);
}
