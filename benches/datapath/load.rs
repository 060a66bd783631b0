//! The loads measured: sockperf ping-pong and iperf3 bulk on loopback,
//! client and server pinned by `taskset`, each giving a rate and the CPU
//! its own processes spent per unit of work.

use std::process::{Command, Stdio};
use std::time::Duration;

/// Where a load's client and server run: both on one CPU (the worst case
/// for per-syscall cost, and the least noisy) or one on each of two CPUs.
#[derive(Debug, Clone, Copy)]
pub enum Placement {
    OneCpu,
    TwoCpus,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::OneCpu => "client and server on one CPU",
            Placement::TwoCpus => "client and server on two CPUs",
        }
    }

    /// `command` run under `taskset`, on the CPU of the given side.
    fn pinned(self, side: Side, program: &str) -> Command {
        let cpu = match (self, side) {
            (Placement::OneCpu, _) | (Placement::TwoCpus, Side::Server) => "1",
            (Placement::TwoCpus, Side::Client) => "0",
        };
        let mut command = Command::new("taskset");
        command.args(["-c", cpu, program]);
        command
    }
}

#[derive(Debug, Clone, Copy)]
enum Side {
    Client,
    Server,
}

/// One measurement: the rate (round trips/s, bit/s) and the CPU the load's
/// own processes spent per unit of work (per round trip, per MiB), which
/// includes the BPF programs that run in their syscalls and is less
/// disturbed by other work on a shared machine than the rate.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rate: f64,
    pub cpu_ns_per_unit: f64,
}

type Measure = fn(Duration, Placement) -> Sample;

pub struct Load {
    pub title: &'static str,
    /// Unit of the rate.
    pub unit: &'static str,
    /// Unit of work the CPU time is divided by.
    pub per: &'static str,
    pub measure: Measure,
}

pub const PING_PONG: Load = Load {
    title: "TCP ping-pong, 64-byte messages (sockperf)",
    unit: "round trips/s",
    per: "round trip",
    measure: ping_pong,
};

pub const BULK: Load = Load {
    title: "TCP bulk, one stream (iperf3)",
    unit: "bit/s",
    per: "MiB",
    measure: bulk,
};

/// CPU time (user + system) of this process's waited-for children so far.
fn children_cpu() -> Duration {
    cpu_used(libc::RUSAGE_CHILDREN)
}

/// CPU time (user + system) so far of `who` (a `getrusage` target).
pub fn cpu_used(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(who, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// sockperf ping-pong, 64-byte TCP messages: round trips per second, and
/// CPU per round trip (client and server).
pub fn ping_pong(time: Duration, placement: Placement) -> Sample {
    let cpu_before = children_cpu();
    let port = "11311";
    let mut server = placement
        .pinned(Side::Server, "sockperf")
        .args(["sr", "--tcp", "-i", "127.0.0.1", "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sockperf under taskset (apt-get install sockperf util-linux)");
    std::thread::sleep(Duration::from_millis(300));
    let out = placement
        .pinned(Side::Client, "sockperf")
        .args([
            "pp",
            "--tcp",
            "-i",
            "127.0.0.1",
            "-p",
            port,
            "-m",
            "64",
            "-t",
        ])
        .arg(time.as_secs().to_string())
        .output()
        .expect("sockperf pp");
    let _ = server.kill();
    let _ = server.wait();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let field = |section: &str, name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.contains(section))
            .unwrap_or_else(|| panic!("no {section} line from sockperf:\n{text}"));
        let start = line.find(name).expect("sockperf field") + name.len();
        line[start..]
            .split(|c: char| c != '.' && !c.is_ascii_digit())
            .next()
            .and_then(|v| v.parse().ok())
            .expect("sockperf number")
    };
    let cpu = children_cpu() - cpu_before;
    Sample {
        rate: field("[Valid Duration]", "ReceivedMessages=")
            / field("[Valid Duration]", "RunTime="),
        cpu_ns_per_unit: cpu.as_nanos() as f64 / field("[Total Run]", "ReceivedMessages="),
    }
}

/// iperf3, one TCP stream on loopback: bits per second received, and CPU
/// per MiB moved (client and server).
pub fn bulk(time: Duration, placement: Placement) -> Sample {
    let cpu_before = children_cpu();
    let port = "15201";
    let mut server = placement
        .pinned(Side::Server, "iperf3")
        .args(["-s", "-1", "-p", port])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 under taskset (apt-get install iperf3 util-linux)");
    std::thread::sleep(Duration::from_millis(300));
    let out = placement
        .pinned(Side::Client, "iperf3")
        .args(["-c", "127.0.0.1", "-p", port, "-J", "-t"])
        .arg(time.as_secs().to_string())
        .output()
        .expect("iperf3 -c");
    let _ = server.wait();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("iperf3 JSON report");
    let received = &report["end"]["sum_received"];
    let bytes = received["bytes"].as_f64().expect("iperf3 bytes");
    let cpu = children_cpu() - cpu_before;
    Sample {
        rate: received["bits_per_second"]
            .as_f64()
            .expect("iperf3 bits_per_second"),
        cpu_ns_per_unit: cpu.as_nanos() as f64 / (bytes / f64::from(1 << 20)),
    }
}
