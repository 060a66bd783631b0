//! What watches the loads: nothing, empty programs on flowtel's hooks,
//! flowtel (as configured by default, with `receiver.udp: false` and with
//! `receiver.dns: false`), or a bpftrace peer; each attached before a
//! measurement and detached after.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use integration::agent::Agent;

use crate::programs;

/// The peer: bytes per (pid, socket) on the same tracepoints as flowtel.
const BPFTRACE_PEER: &str = "tracepoint:sock:sock_send_length /args->ret > 0/ { @sent[pid, args->sk] = sum(args->ret); } \
                             tracepoint:sock:sock_recv_length /args->ret > 0/ { @received[pid, args->sk] = sum(args->ret); }";

/// flowtel's poll interval here: longer than any measurement.
const POLL_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watcher {
    Bare,
    Floor,
    Flowtel,
    FlowtelTcpOnly,
    FlowtelNoDns,
    Bpftrace,
}

impl Watcher {
    pub const ALL: [Watcher; 6] = [
        Watcher::Bare,
        Watcher::Floor,
        Watcher::Flowtel,
        Watcher::FlowtelTcpOnly,
        Watcher::FlowtelNoDns,
        Watcher::Bpftrace,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Watcher::Bare => "nothing attached",
            Watcher::Floor => "empty programs",
            Watcher::Flowtel => "flowtel",
            Watcher::FlowtelTcpOnly => "flowtel, no UDP",
            Watcher::FlowtelNoDns => "flowtel, no DNS",
            Watcher::Bpftrace => "bpftrace peer",
        }
    }

    /// Starts the watcher and returns once its programs are attached.
    pub fn attach(self) -> Attached {
        match self {
            Watcher::Bare => Attached::Nothing,
            Watcher::Floor => Attached::Programs(programs::attach_floor()),
            Watcher::Flowtel => Attached::Agent(start_flowtel(&[])),
            Watcher::FlowtelTcpOnly => Attached::Agent(start_flowtel_with("no-udp", "udp: false")),
            Watcher::FlowtelNoDns => Attached::Agent(start_flowtel_with("no-dns", "dns: false")),
            Watcher::Bpftrace => Attached::Process(start_bpftrace()),
        }
    }
}

/// flowtel with one `receiver` setting, from a config file named after
/// `name`.
fn start_flowtel_with(name: &str, receiver_setting: &str) -> Agent {
    let config = std::env::temp_dir().join(format!("flowtel-bench-{name}.yaml"));
    std::fs::write(&config, format!("receiver:\n  {receiver_setting}\n")).expect("write a config");
    let config = config.to_str().expect("UTF-8 temp path").to_owned();
    start_flowtel(&["--config", &config])
}

/// `flowtel run` with `args`, once its programs are attached. The binary
/// is this build's, or `FLOWTEL_BINARY` (inside the guest).
fn start_flowtel(args: &[&str]) -> Agent {
    let binary =
        std::env::var_os("FLOWTEL_BINARY").unwrap_or_else(|| env!("CARGO_BIN_EXE_flowtel").into());
    let mut command = Command::new(binary);
    command
        .args(["run", "--format", "json", "--poll-interval"])
        .arg(format!("{}s", POLL_INTERVAL.as_secs()))
        .args(args);
    Agent::launch_quiet(command, POLL_INTERVAL)
}

/// The bpftrace peer, once it says it is attaching its probes; the rest of
/// its output is discarded.
fn start_bpftrace() -> Child {
    let mut command = Command::new("bpftrace");
    command.args(["-e", BPFTRACE_PEER]);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.contains("Attaching") => break,
            Some(_) => continue,
            None => panic!("{command:?} exited before printing \"Attaching\""),
        }
    }
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
}

/// An attached watcher; detached when dropped (an agent is stopped, a
/// process gets SIGINT and is waited for), also on a panic, so that none
/// outlives the run and skews later measurements.
#[allow(dead_code)] // the programs and the agent are held only to stay attached
pub enum Attached {
    Nothing,
    Programs(aya::Ebpf),
    Agent(Agent),
    Process(Child),
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Attached::Process(child) = self {
            // SIGINT: what bpftrace stops on (it can sit through a
            // SIGTERM). Never wait for it forever.
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("watcher {} ignored SIGINT for 5 s: killed", child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn detach(attached: Attached) {
    drop(attached);
}

/// Lets the work a watcher leaves behind when it stops (freeing its maps
/// and programs after an RCU grace period, in kernel workers) finish before
/// the next measurement, which would otherwise pay for it.
pub fn settle() {
    std::thread::sleep(Duration::from_secs(1));
}
