//! `flowtel top` in a real terminal: a tmux session of 160 x 40 runs it
//! while a thread of this test sends steadily over loopback TCP; the screen
//! gets a row keyed by that thread's name (its kernel `comm`, the flow's
//! `source.process.name`) and the server's port; `g` and `s` change the
//! grouping and the sort; `q` quits with status 0
//! and gives the terminal back (the alternate screen left, raw mode off).
//! Without a terminal, `top` refuses with one line.

use std::process::Command;
use std::time::Duration;

use integration::privilege;
use integration::tmux::Tmux;
use integration::traffic::tcp::Steady;

/// The client thread's name: the comm the kernel records for its
/// connection.
const CLIENT: &str = "top-e2e-client";

/// How long the first poll, and then the first row, may take.
const ROW_TIMEOUT: Duration = Duration::from_secs(40);

#[test]
fn top_shows_this_tests_flow_and_quits_on_q() {
    privilege::require_root();
    let binary = env!("CARGO_BIN_EXE_flowtel");
    let top = Tmux::start(
        binary,
        &[
            "top",
            "--poll-interval",
            "1s",
            "--group-by",
            "source.process.name,destination.port",
        ],
        160,
        40,
    );
    // Connections older than the agent have no direction and keep both
    // ports: the traffic starts once top has polled.
    let (screen, polled) = top.wait_for_screen(ROW_TIMEOUT, |screen| screen.contains("poll at "));
    assert!(
        polled,
        "flowtel top did not poll within {ROW_TIMEOUT:?}; exit status {:?}, stderr: {}\n\
         screen:\n{screen}",
        top.exit_status(),
        top.stderr()
    );
    let traffic = Steady::start("127.0.0.1".parse().unwrap(), CLIENT);
    let port = traffic.server_port.to_string();

    let (screen, found) = top.wait_for_screen(ROW_TIMEOUT, |screen| {
        row(screen, &[CLIENT, &port]).is_some()
    });
    println!("flowtel top, 160 x 40, while {CLIENT} sends to 127.0.0.1:{port}:\n{screen}");
    assert!(
        found,
        "no row for {CLIENT} and port {port} within {ROW_TIMEOUT:?}; exit status {:?}, \
         stderr: {}\nscreen:\n{screen}",
        top.exit_status(),
        top.stderr()
    );
    assert!(
        screen.contains("group by: source.process.name,destination.port"),
        "{screen}"
    );
    let header = row(&screen, &["SOURCE.PROCESS.NAME", "DESTINATION.PORT"]).expect(&screen);
    assert_eq!(
        header[2..],
        ["SENT", "RECV", "BANDWIDTH", "RETRANS", "RTT", "CONNS"],
        "{screen}"
    );
    // The client sends and gets nothing back: "SENT" is some KiB or MiB,
    // "RECV" is 0 B.
    let ours = row(&screen, &[CLIENT, &port]).expect(&screen);
    assert!(
        matches!(ours[3], "KiB" | "MiB") && ours[4..6] == ["0", "B"],
        "{ours:?}"
    );

    // g: the next group-by preset; s: the next sort column.
    top.send_key("g");
    let (screen, regrouped) = top.wait_for_screen(Duration::from_secs(5), |screen| {
        screen.contains("group by: destination.address,destination.port")
            && row(screen, &["127.0.0.1", &port]).is_some()
    });
    assert!(regrouped, "g did not regroup:\n{screen}");
    top.send_key("s");
    let (screen, resorted) = top.wait_for_screen(Duration::from_secs(5), |screen| {
        screen.contains("sort: sent")
    });
    assert!(resorted, "s did not change the sort:\n{screen}");

    top.send_key("q");
    let status = top.wait_for_exit(Duration::from_secs(5));
    let after = top.capture();
    let (sent, received) = traffic.stop();
    assert_eq!(sent, received);
    assert_eq!(
        status,
        Some(0),
        "flowtel top did not exit with 0 within 5s of q; stderr: {}\nscreen:\n{after}",
        top.stderr()
    );
    assert_eq!(top.stderr(), "");
    // The alternate screen is left: the table is gone.
    assert!(!after.contains("SOURCE.PROCESS.NAME"), "{after}");
    // Raw mode is off: the terminal echoes and reads lines again.
    let stty = top.stty_after_exit();
    let flags: Vec<&str> = stty.split_whitespace().collect();
    for flag in ["icanon", "echo", "isig"] {
        assert!(flags.contains(&flag), "{flag} is off after top: {stty}");
    }
}

/// The cells (whitespace-separated words) of the first screen line whose
/// words start with `first`.
fn row<'s>(screen: &'s str, first: &[&str]) -> Option<Vec<&'s str>> {
    screen
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() >= first.len() && cells[..first.len()] == *first)
}

#[test]
fn top_without_a_terminal_says_so_in_one_line_and_exits_1() {
    // Refused before anything is loaded into the kernel: no root needed.
    let out = Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .args(["top", "--poll-interval", "1s"])
        .output()
        .expect("run flowtel top");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(out.stdout, b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "flowtel: error: top needs a terminal; for scripts use flowtel run --format json\n"
    );
}
