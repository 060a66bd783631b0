//! The kernel matrix: flowtel's accuracy checks inside real kernels booted
//! under qemu. Debian's 6.1 kernel has kprobes and BTF but not the 6.3
//! send/receive tracepoints, so there flowtel must pick the kprobe set and
//! still count every byte. (This machine's own kernel, 6.18, runs the
//! tracepoint set: the other end-to-end tests cover it.)
//!
//! The host test packs this very test binary and `flowtel` into an
//! initramfs and boots it; inside, the guest runs the `guest_*` tests below
//! (ignored on the host) and the host reads their results off the serial
//! console.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration::agent::Agent;
use integration::privilege;
use integration::record::FlowFilter;
use integration::traffic::{tcp, udp};
use integration::vm;

/// Debian bookworm's current 6.1 cloud kernel (kprobes, BTF, no 6.3 hooks).
const DEBIAN_6_1: &str = r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$";

/// Software emulation is slow; a guest run takes well under a minute here.
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);

#[test]
fn debian_6_1_picks_kprobes_and_counts_exactly() {
    privilege::require_root();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-matrix");
    let kernel = vm::Kernel::debian(DEBIAN_6_1, &cache);
    let results = run_guest_checks(&kernel, &cache, "kprobe");
    let failed: Vec<&(String, bool)> = results.iter().filter(|(_, ok)| !ok).collect();
    assert!(failed.is_empty(), "{}: failed {failed:?}", kernel.package);
}

#[test]
fn this_machines_kernel_picks_tracepoints_and_counts_exactly() {
    privilege::require_root();
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args(["--ignored", "guest_", "--test-threads", "1"])
        .env("FLOWTEL_EXPECT_PROBES", "tracepoint")
        .output()
        .expect("run the guest checks here");
    let printed = String::from_utf8_lossy(&output.stdout);
    let results = guest_results(&printed);
    eprintln!("kernel {} (this machine):", kernel_release());
    for (check, ok) in &results {
        eprintln!("  {check:<45} {}", if *ok { "passed" } else { "FAILED" });
    }
    assert!(
        output.status.success() && !results.is_empty(),
        "the checks failed on this machine's kernel:\n{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Here kprobes cannot attach (the kernel lacks CONFIG_KPROBES), but the
/// kprobe programs must still pass this kernel's verifier: `flowtel check
/// --probes kprobe` loads them without attaching.
#[test]
fn kprobe_programs_pass_this_kernels_verifier() {
    privilege::require_root();
    let output = Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .args(["check", "--probes", "kprobe"])
        .output()
        .expect("run flowtel check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("programs      the kprobe set passes the kernel verifier"),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let kprobes_here = stdout
        .lines()
        .any(|line| line.starts_with("kprobes") && !line.contains("not supported"));
    assert_eq!(output.status.success(), kprobes_here, "{stdout}");
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Boots `kernel` with the guest checks and returns each check's result,
/// printing the table row by row.
fn run_guest_checks(kernel: &vm::Kernel, cache: &Path, probes: &str) -> Vec<(String, bool)> {
    let this_test = std::env::current_exe().expect("the test binary's path");
    let mut initramfs = vm::Initramfs::new(
        &cache.join(format!("guest-{}", kernel.package)),
        "FLOWTEL_BINARY=/flowtel /kernel_matrix --ignored guest_ --test-threads 1",
    );
    initramfs
        .add_binary(Path::new(env!("CARGO_BIN_EXE_flowtel")), "flowtel")
        .add_binary(&this_test, "kernel_matrix");
    let initrd = initramfs.pack();
    let started = std::time::Instant::now();
    let console = vm::boot(
        kernel,
        &initrd,
        &format!("flowtel.expect_probes={probes}"),
        GUEST_TIMEOUT,
    );
    // Shown when the test fails (cargo captures it otherwise).
    eprintln!("console of {}:\n{console}", kernel.package);
    let results = guest_results(&console);
    eprintln!("kernel {} ({:?}):", kernel.package, started.elapsed());
    for (check, ok) in &results {
        eprintln!("  {check:<45} {}", if *ok { "passed" } else { "FAILED" });
    }
    assert!(
        !results.is_empty() && vm::guest_exit_status(&console) == Some(0),
        "the guest checks did not all pass on {}; console:\n{console}",
        kernel.package
    );
    results
}

/// `test NAME ... ok|FAILED` lines of the guest's test run.
fn guest_results(console: &str) -> Vec<(String, bool)> {
    console
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("test ")?;
            let (name, outcome) = rest.split_once(" ... ")?;
            Some((name.to_owned(), outcome.trim() == "ok"))
        })
        .collect()
}

// --- The checks that run inside the guest. ------------------------------

/// The flowtel binary: copied into the guest, or this build's on the host.
fn flowtel() -> PathBuf {
    std::env::var_os("FLOWTEL_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_flowtel")))
}

/// The probe set the host expects this kernel to use: from the guest's
/// kernel command line, or FLOWTEL_EXPECT_PROBES on the host.
fn expected_probes() -> Option<String> {
    if let Ok(probes) = std::env::var("FLOWTEL_EXPECT_PROBES") {
        return Some(probes);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("flowtel.expect_probes="))
        .map(str::to_owned)
}

fn start_agent() -> Agent {
    let agent = Agent::start(flowtel(), Duration::from_secs(1));
    if let Some(probes) = expected_probes() {
        let said = format!("({probes} probes)");
        assert!(
            agent.stderr().iter().any(|line| line.contains(&said)),
            "the agent did not say {said}: {:?}",
            agent.stderr()
        );
    }
    agent
}

#[test]
#[ignore = "runs inside the kernel-matrix guests"]
fn guest_check_reports_the_probe_set_and_passes() {
    let output = Command::new(flowtel())
        .arg("check")
        .output()
        .expect("run flowtel check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    assert!(output.status.success(), "flowtel check failed: {stdout}");
    if let Some(probes) = expected_probes() {
        let line = stdout
            .lines()
            .find(|line| line.starts_with("probe set"))
            .unwrap_or_default();
        assert!(line.contains(&format!(" {probes} (")), "{line}");
    }
}

#[test]
#[ignore = "runs inside the kernel-matrix guests"]
fn guest_tcp_bytes_are_exact_both_ways() {
    privilege::require_root();
    let mut agent = start_agent();
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 2 << 20, 256 << 10);
    agent.assert_transfer_counted(&truth);
}

#[test]
#[ignore = "runs inside the kernel-matrix guests"]
fn guest_short_tcp_connections_are_all_counted() {
    privilege::require_root();
    let mut agent = start_agent();
    let truth = tcp::short_connections("127.0.0.1".parse().unwrap(), 50, 1024);
    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(truth.server_port);
    let got = agent.wait_for_totals(&client, |t| {
        t.connections_closed >= 50 && t.bytes_received >= truth.client_received
    });
    assert_eq!(got.connections_opened, 50);
    assert_eq!(got.connections_closed, 50);
    assert_eq!(got.bytes_sent, truth.client_sent);
    assert_eq!(got.bytes_received, truth.client_received);
}

#[test]
#[ignore = "runs inside the kernel-matrix guests"]
fn guest_udp_unconnected_server_bytes_are_exact() {
    privilege::require_root();
    let mut agent = start_agent();
    let truth = udp::serve_clients("127.0.0.1".parse().unwrap(), 3, 4);
    agent.assert_udp_exchange_counted(&truth);
}

#[test]
#[ignore = "runs inside the kernel-matrix guests"]
fn guest_ipv6_tcp_bytes_are_exact_both_ways() {
    privilege::require_root();
    let mut agent = start_agent();
    let truth = tcp::transfer("::1".parse().unwrap(), 1 << 20, 128 << 10);
    let [client, _] = agent.assert_transfer_counted(&truth);
    let flows = agent.poll_flows(&client);
    assert!(flows
        .iter()
        .all(|flow| flow.attributes.network_type.as_deref() == Some("ipv6")));
}

#[test]
#[ignore = "runs inside the kernel-matrix guests"]
fn guest_refused_connection_is_one_failure() {
    privilege::require_root();
    let mut agent = start_agent();
    let port = tcp::connect_refused("127.0.0.1".parse().unwrap());
    let attempt = FlowFilter::this_process().tcp().destination_port(port);
    let got = agent.wait_for_totals(&attempt, |t| t.failed("refused") >= 1);
    assert_eq!(got.failed("refused"), 1, "{got:#?}");
}
