//! Runs the real `flowtel` binary as a child process and collects what it
//! prints.
//!
//! The agent runs `flowtel run --format json` with a short poll interval and a
//! one-hour window, so every poll prints the deltas of the flows with activity.
//! Its stdout is parsed line by line in a background thread; its stderr is
//! kept (and echoed, so `cargo test -- --nocapture` shows it) and watched for
//! the readiness line `flowtel: watching`. The process is ended when the
//! [`Agent`] is dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::record::{self, Flow, FlowFilter, Record, Totals};
use crate::traffic::tcp::Transfer;
use crate::traffic::udp::Exchange;

/// What the agent prints on stderr once its programs are attached.
pub const READY_LINE: &str = "flowtel: watching";

/// How long the agent may take to load and attach its programs.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a test waits for its flows to add up, past the first poll.
pub const DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the agent gets to exit after SIGTERM before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// `run` as the tests start it: JSON lines, the given poll interval, and a
/// window long enough that only polls matter.
fn run_args(poll_interval: Duration) -> Vec<String> {
    let mut args = json_run_args(poll_interval);
    args.extend(["--interval", "1h"].map(str::to_owned));
    args
}

/// `run` with JSON lines and the given poll interval; the window as
/// configured.
fn json_run_args(poll_interval: Duration) -> Vec<String> {
    ["run", "--format", "json", "--poll-interval"]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("{}ms", poll_interval.as_millis())])
        .collect()
}

/// A running `flowtel run --format json`.
pub struct Agent {
    child: Child,
    poll_interval: Duration,
    output: Arc<Mutex<Output>>,
    /// The threads reading stdout and stderr: they end at the pipes' EOF,
    /// after the process, and then every line is in `output`.
    readers: Vec<thread::JoinHandle<()>>,
}

/// Whether the agent's stderr is echoed on the caller's.
#[derive(Clone, Copy)]
enum Echo {
    Stderr,
    Nothing,
}

/// What the agent printed so far.
#[derive(Default)]
struct Output {
    records: Vec<Record>,
    /// Stdout lines that are not valid records: each is a broken contract.
    unparsed: Vec<String>,
    stderr: Vec<String>,
}

impl Agent {
    /// Starts `binary run --format json --poll-interval <poll_interval>
    /// --interval 1h` and waits (up to [`READY_TIMEOUT`]) until it says it is
    /// watching.
    ///
    /// Panics, with the agent's stderr, if it exits or does not become ready.
    pub fn start(binary: impl AsRef<Path>, poll_interval: Duration) -> Agent {
        Agent::start_with(binary, poll_interval, &[])
    }

    /// Like [`Agent::start`], for a command that runs the binary in some
    /// other way (`setpriv ... flowtel`): the `run` arguments are appended.
    pub fn start_command(mut command: Command, poll_interval: Duration) -> Agent {
        command.args(run_args(poll_interval));
        Agent::launch(command, poll_interval)
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The agent's resident memory now (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The agent's peak resident memory so far (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    /// A `kB` field of the agent's `/proc/PID/status`.
    pub fn status_kib(&self, field: &str) -> u64 {
        let pid = self.pid();
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent's status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in the agent's status"))
    }

    /// The agent's user + system CPU time so far (`utime` + `stime` of
    /// `/proc/PID/stat`), in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let fields = self.stat_fields();
        let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count in stat");
        ticks(11) + ticks(12)
    }

    /// Whether the agent is stopped (state `T`: SIGSTOP).
    pub fn is_stopped(&self) -> bool {
        self.stat_fields()[0] == "T"
    }

    /// The fields of `/proc/PID/stat` after the command name (which is in
    /// parentheses and may hold spaces): the state first.
    fn stat_fields(&self) -> Vec<String> {
        let pid = self.pid();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the agent's stat");
        let (_, rest) = stat.rsplit_once(") ").expect("stat has a command");
        rest.split_whitespace().map(str::to_owned).collect()
    }

    /// Like [`Agent::start`], with more arguments for `flowtel run`.
    pub fn start_with(binary: impl AsRef<Path>, poll_interval: Duration, args: &[&str]) -> Agent {
        let mut command = Command::new(binary.as_ref());
        command.args(run_args(poll_interval)).args(args);
        Agent::launch(command, poll_interval)
    }

    /// Like [`Agent::start`], with the configuration file `config` and
    /// without `--interval`: the file's `processor.interval` is the window.
    pub fn start_with_config(
        binary: impl AsRef<Path>,
        poll_interval: Duration,
        config: &Path,
    ) -> Agent {
        let mut command = Command::new(binary.as_ref());
        command
            .args(json_run_args(poll_interval))
            .arg("--config")
            .arg(config);
        Agent::launch(command, poll_interval)
    }

    /// The health records printed so far, oldest first.
    pub fn health(&self) -> Vec<record::Health> {
        self.output
            .lock()
            .unwrap()
            .records
            .iter()
            .filter_map(Record::as_health)
            .collect()
    }

    /// Whether the agent process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Starts `command` (an agent with arguments and environment of the
    /// test's choosing, or a stand-in) and waits for it to be ready.
    pub fn launch(command: Command, poll_interval: Duration) -> Agent {
        Agent::spawn(command, poll_interval, Echo::Stderr)
    }

    /// Like [`Agent::launch`], without echoing the agent's stderr: for the
    /// benches, whose own output is their report. The lines are still kept
    /// ([`Agent::stderr`]).
    pub fn launch_quiet(command: Command, poll_interval: Duration) -> Agent {
        Agent::spawn(command, poll_interval, Echo::Nothing)
    }

    fn spawn(mut command: Command, poll_interval: Duration, echo: Echo) -> Agent {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));

        let output = Arc::new(Mutex::new(Output::default()));
        let (ready_tx, ready_rx) = mpsc::channel();

        let stdout = child.stdout.take().expect("stdout is piped");
        let sink = Arc::clone(&output);
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                let parsed = Record::parse(&line);
                let mut out = sink.lock().unwrap();
                match parsed {
                    Ok(record) => out.records.push(record),
                    Err(problem) => out.unparsed.push(problem),
                }
            }
        });

        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&output);
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Echo::Stderr = echo {
                    eprintln!("[flowtel] {line}");
                }
                let ready = line.contains(READY_LINE);
                // Kept before start() returns, so the caller sees the line.
                sink.lock().unwrap().stderr.push(line);
                if ready {
                    // The receiver is gone only if start() already gave up.
                    let _ = ready_tx.send(());
                }
            }
            // Dropping ready_tx here tells start() that stderr closed.
        });

        let mut agent = Agent {
            child,
            poll_interval,
            output,
            readers: vec![stdout_reader, stderr_reader],
        };
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => agent,
            Err(mpsc::RecvTimeoutError::Timeout) => agent.fail(&format!(
                "flowtel did not print {READY_LINE:?} within {READY_TIMEOUT:?}"
            )),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Stderr closed: the process is exiting; let it finish so the
                // message can say how.
                let deadline = Instant::now() + EXIT_GRACE;
                while agent.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                agent.fail("flowtel closed its stderr before it was ready")
            }
        }
    }

    /// The poll interval the agent was started with.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Every record printed so far.
    pub fn records(&self) -> Vec<Record> {
        self.output.lock().unwrap().records.clone()
    }

    /// Stderr lines printed so far.
    pub fn stderr(&self) -> Vec<String> {
        self.output.lock().unwrap().stderr.clone()
    }

    /// The poll records so far that pass `filter`.
    pub fn poll_flows(&self, filter: &FlowFilter) -> Vec<Flow> {
        self.output
            .lock()
            .unwrap()
            .records
            .iter()
            .filter_map(Record::as_poll)
            .filter(|flow| filter.matches(&flow.attributes))
            .cloned()
            .collect()
    }

    /// Sums the poll records so far that pass `filter`.
    pub fn sum(&self, filter: &FlowFilter) -> Totals {
        record::sum(&self.output.lock().unwrap().records, filter)
    }

    /// Sums the poll records so far that pass `filter`, one sum per flow
    /// (distinct attributes), keyed by the attributes as JSON.
    pub fn sum_by_flow(&self, filter: &FlowFilter) -> std::collections::BTreeMap<String, Totals> {
        record::sum_by_flow(&self.output.lock().unwrap().records, filter)
    }

    /// Waits until `done` holds for the records printed so far, checking
    /// every 100 ms, for up to [`DATA_TIMEOUT`] plus one poll interval.
    ///
    /// Panics, describing `what` and showing the agent's output, on timeout,
    /// if the agent exits, or if it prints a line that is not a valid record.
    pub fn wait_until(&mut self, what: &str, mut done: impl FnMut(&[Record]) -> bool) {
        self.wait(what, |records| (done(records), String::new()));
    }

    /// Waits for `polls` more health records: that many polls went by.
    pub fn wait_polls(&mut self, polls: usize) {
        let seen = self.health().len();
        self.wait_until(&format!("{polls} more polls"), |records| {
            records.iter().filter(|r| r.as_health().is_some()).count() >= seen + polls
        });
    }

    /// Waits for both ends of a TCP [`Transfer`] made by this process and
    /// asserts each end's bytes equal what its socket moved. Returns the
    /// client's filter (outgoing to the server port) and the server's
    /// (incoming at the server port), for further checks.
    pub fn assert_transfer_counted(&mut self, truth: &Transfer) -> [FlowFilter; 2] {
        let client = FlowFilter::this_process()
            .tcp()
            .outgoing()
            .destination_port(truth.server_port);
        let server = FlowFilter::this_process()
            .tcp()
            .incoming()
            .source_port(truth.server_port);
        self.assert_ends_counted(&[
            (&client, truth.client_sent, truth.client_received),
            (&server, truth.server_sent, truth.server_received),
        ]);
        [client, server]
    }

    /// Waits for each `(filter, sent, received)` and asserts the sum of the
    /// flows passing `filter` moved exactly `sent` and `received` bytes.
    pub fn assert_ends_counted(&mut self, ends: &[(&FlowFilter, u64, u64)]) {
        for &(filter, sent, received) in ends {
            let got = self.wait_for_totals(filter, |t| {
                t.bytes_sent >= sent && t.bytes_received >= received
            });
            assert_eq!(
                (got.bytes_sent, got.bytes_received),
                (sent, received),
                "bytes (sent, received) of {filter:?}"
            );
        }
    }

    /// Waits for a UDP [`Exchange`] made by this process and asserts, per
    /// client, that the server's flow to that client and the client's own
    /// flow carry exactly the bytes and datagrams their sockets moved.
    pub fn assert_udp_exchange_counted(&mut self, truth: &Exchange) {
        let server = FlowFilter::this_process()
            .udp()
            .source_port(truth.server_port);
        let received: u64 = truth.clients.iter().map(|c| c.server_received).sum();
        let sent: u64 = truth.clients.iter().map(|c| c.server_sent).sum();
        self.wait_for_totals(&server, |t| {
            t.bytes_received >= received && t.bytes_sent >= sent
        });

        let flows = self.sum_by_flow(&server);
        assert_eq!(
            flows.len(),
            truth.clients.len(),
            "the server's flows: {:#?}",
            flows.keys().collect::<Vec<_>>()
        );
        for client in &truth.clients {
            let peer = server.clone().destination_address(client.address);
            let got = self.sum(&peer);
            assert_eq!(
                got.bytes_received, client.server_received,
                "from client {}",
                client.address
            );
            assert_eq!(
                got.bytes_sent, client.server_sent,
                "to client {}",
                client.address
            );
            assert_eq!(
                got.packets_received, client.datagrams,
                "datagrams from client {}",
                client.address
            );
            assert_eq!(
                got.packets_sent, client.datagrams,
                "datagrams to client {}",
                client.address
            );

            // The client's ephemeral port never becomes a flow of its own.
            let by_port = self.sum(&server.clone().destination_port(client.port));
            assert_eq!(
                by_port.bytes_sent + by_port.bytes_received,
                0,
                "client port {} was not collapsed",
                client.port
            );

            // The client's own (connected) socket, seen from its end: its
            // ephemeral port collapsed, the server's kept.
            let own = FlowFilter::this_process()
                .udp()
                .source_address(client.address)
                .destination_port(truth.server_port);
            let got = self.sum(&own);
            assert_eq!(
                got.bytes_sent,
                client.client_sent,
                "client {} sent; this process's UDP flows: {:#?}; health: {:?}",
                client.address,
                self.sum_by_flow(&FlowFilter::this_process().udp()),
                self.health().last()
            );
            assert_eq!(
                got.bytes_received, client.client_received,
                "client {} received",
                client.address
            );
        }
    }

    /// Waits until the sum of the poll records passing `filter` satisfies
    /// `reached`, then one more poll interval (so a count that would overshoot
    /// has time to show), and returns the sum then.
    ///
    /// `reached` should say "everything expected has arrived" (usually with
    /// `>=`); the caller then asserts exact equality on what is returned.
    /// Panics like [`Agent::wait_until`], showing the last sum.
    pub fn wait_for_totals(
        &mut self,
        filter: &FlowFilter,
        mut reached: impl FnMut(&Totals) -> bool,
    ) -> Totals {
        let what = format!("the flows matching {filter:?} to add up");
        self.wait(&what, |records| {
            let totals = record::sum(records, filter);
            (reached(&totals), format!("last sum: {totals:#?}"))
        });
        thread::sleep(self.poll_interval + Duration::from_millis(500));
        self.sum(filter)
    }

    /// Waits until `check` says done; on failure shows the state it last
    /// described.
    fn wait(&mut self, what: &str, mut check: impl FnMut(&[Record]) -> (bool, String)) {
        let deadline = Instant::now() + DATA_TIMEOUT + self.poll_interval;
        loop {
            let (problem, state) = {
                let out = self.output.lock().unwrap();
                let (done, now) = check(&out.records);
                if done {
                    return;
                }
                let problem = out
                    .unparsed
                    .first()
                    .map(|line| format!("flowtel printed a line that is not a record: {line}"));
                (problem, now)
            };
            if let Some(problem) = problem {
                self.fail(&problem);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.fail(&format!(
                    "flowtel exited ({status}) while waiting for {what}\n{state}"
                ));
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {what}\n{state}"));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the agent and panics with `problem`, the agent's exit status,
    /// its stderr and its last records.
    fn fail(&mut self, problem: &str) -> ! {
        let status = self.stop();
        // The message is built before panicking so that the lock is not
        // poisoned for the reader threads.
        let message = {
            let out = self.output.lock().unwrap();
            // The flows of this (the test's) process are what explains a
            // failure; health records arrive every poll and would crowd them out.
            let ours: Vec<&Record> = out
                .records
                .iter()
                .filter(|r| {
                    r.flow()
                        .is_some_and(|f| f.attributes.pid == Some(std::process::id()))
                })
                .collect();
            let last: Vec<String> = ours
                .iter()
                .rev()
                .take(40)
                .rev()
                .map(|r| format!("  {}", r.summary()))
                .collect();
            let stderr = if out.stderr.is_empty() {
                "(nothing)".to_owned()
            } else {
                out.stderr.join("\n  ")
            };
            format!(
                "{problem}\nflowtel exit status: {status}\nflowtel stderr:\n  {stderr}\n\
             unparsed stdout lines: {:?}\nlast {} of {} records:\n{}",
                out.unparsed,
                last.len(),
                out.records.len(),
                last.join("\n"),
            )
        };
        panic!("{message}");
    }

    /// Waits until the agent closes one more window than it had.
    pub fn wait_for_another_window(&mut self) {
        let closed = record::windows_closed(&self.records());
        self.wait_until("one more window", |records| {
            record::windows_closed(records) > closed
        });
    }

    /// Sends the agent `signal` (`libc::SIGKILL`, `libc::SIGHUP`, ...).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.pid()).expect("a pid");
        // SAFETY: kill has no memory preconditions; the pid is our own
        // child, not yet reaped (the Child is not waited for until drop or
        // stop), so it cannot name another process.
        unsafe { libc::kill(pid, signal) };
    }

    /// Waits (up to the stop grace period) for the agent to exit; says how
    /// it ended, or that it did not.
    pub fn wait_for_exit(&mut self) -> String {
        let deadline = Instant::now() + EXIT_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_readers();
                return status.to_string();
            }
            thread::sleep(Duration::from_millis(20));
        }
        format!("still running after {EXIT_GRACE:?}")
    }

    /// Asserts that the agent said it continues the previous agent's
    /// counters (`receiver.persistence`).
    pub fn assert_resumed(&self) {
        assert!(
            self.stderr()
                .iter()
                .any(|line| line.contains("continuing the previous agent's counters")),
            "the agent did not resume: {:?}",
            self.stderr()
        );
    }

    /// Asks the agent to stop (SIGTERM), kills it after a grace period, and
    /// says how it ended.
    pub fn stop(&mut self) -> String {
        let how = terminate(&mut self.child);
        self.join_readers();
        how
    }

    /// Kills the agent (SIGKILL: no shutdown, no last checkpoint) and
    /// waits until it is gone and all it printed is read.
    pub fn kill(&mut self) -> String {
        self.signal(libc::SIGKILL);
        self.wait_for_exit()
    }

    /// Waits (up to the stop grace period) until the output readers have
    /// read the process's last line: they end at its pipes' EOF.
    fn join_readers(&mut self) {
        let deadline = Instant::now() + EXIT_GRACE;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        for reader in std::mem::take(&mut self.readers) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

/// Asks `child` to stop (SIGTERM), kills it after a grace period, reaps it,
/// and says how it ended.
pub fn terminate(child: &mut Child) -> String {
    if let Ok(Some(status)) = child.try_wait() {
        return status.to_string();
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the pid is our own
        // child, not yet reaped, so it cannot name another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + EXIT_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.to_string();
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    match child.wait() {
        Ok(status) => {
            format!("{status} (killed after {EXIT_GRACE:?} without exiting on SIGTERM)")
        }
        Err(e) => format!("unknown ({e})"),
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: &str = r#"{"record":"poll","start":"s","end":"e","attributes":{"network.transport":"udp","source.process.pid":7,"source.port":53,"destination.port":4000},"bytes_sent":10,"bytes_received":1,"packets_sent":1,"packets_received":1,"retransmits":0,"connections_opened":0,"connections_closed":0,"connections_failed":{},"rtt_us":null,"rtt_variance_us":null,"bandwidth_bps":0.0}"#;

    /// A stand-in for flowtel: a shell script. (Not a file: writing an
    /// executable while other test threads fork makes exec fail with ETXTBSY.)
    fn fake_agent(script: &str) -> Agent {
        let mut command = Command::new("sh");
        command.arg("-c").arg(script);
        Agent::launch(command, Duration::from_millis(200))
    }

    #[test]
    fn collects_records_and_sums_after_one_more_poll() {
        let mut agent = fake_agent(&format!(
            "echo 'flowtel: watching' >&2\necho '{POLL}'\necho '{{\"record\":\"health\"}}'\n\
             sleep 0.3\necho '{POLL}'\nexec sleep 30"
        ));
        let udp = FlowFilter::any().udp().pid(7).source_port(53);
        let totals = agent.wait_for_totals(&udp, |t| t.bytes_sent >= 20);
        assert_eq!((totals.bytes_sent, totals.records), (20, 2));
        assert_eq!(agent.sum_by_flow(&udp).len(), 1);
        assert_eq!(agent.poll_flows(&udp.clone().destination_port(4001)), []);
        assert_eq!(agent.records().len(), 3);
        assert_eq!(agent.stderr(), ["flowtel: watching"]);
    }

    #[test]
    #[should_panic(expected = "no BTF here")]
    fn an_agent_that_exits_early_fails_with_its_stderr() {
        fake_agent("echo 'flowtel: error: no BTF here' >&2\nexit 1");
    }

    #[test]
    #[should_panic(expected = "not a record")]
    fn a_line_that_is_not_a_record_fails_the_wait() {
        let mut agent =
            fake_agent("echo 'flowtel: watching' >&2\necho 'src -> dst 10 B'\nexec sleep 30");
        agent.wait_until("nothing", |_| false);
    }
}
