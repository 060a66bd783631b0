//! The configuration file end to end: the example passes `config check`,
//! bad files exit 2 naming file, line and column, secrets never show, and a
//! running agent keys its windows by the attributes and mappings the file
//! gives, with every byte kept when series overflow.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use integration::agent::Agent;
use integration::privilege;
use integration::record::Record;
use integration::traffic::tcp;
use serde_json::Value;

const FLOWTEL: &str = env!("CARGO_BIN_EXE_flowtel");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("otel-config/flowtel.yaml")
}

/// A file of `text` in a fresh temporary directory, removed on drop.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let dir =
            std::env::temp_dir().join(format!("flowtel-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("flowtel.yaml");
        std::fs::write(&path, text).expect("write config");
        TempFile { dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().expect("UTF-8 temp path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config_check(path: &str, env: &[(&str, &str)]) -> Output {
    Command::new(FLOWTEL)
        .args(["config", "check", path])
        .envs(env.iter().copied())
        .output()
        .expect("run flowtel config check")
}

/// `flowtel ARGS` with `env`: its exit code and stderr.
fn flowtel(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(FLOWTEL)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run flowtel");
    (out.status.code(), text(&out.stderr))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_example_config_passes_check_and_prints_the_effective_config() {
    let out = config_check(example().to_str().unwrap(), &[]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}{stdout}", text(&out.stderr));
    assert!(
        stdout.contains(": valid; the effective configuration:"),
        "{stdout}"
    );
    // Defaults are filled in, ${VAR:-default} expanded.
    assert!(stdout.contains("ring_buffer_bytes: 4194304"), "{stdout}");
    assert!(stdout.contains("deployment.environment: dev"), "{stdout}");
}

#[test]
fn bad_files_exit_2_with_file_line_column_and_a_hint() {
    let cases = [
        (
            "unknown-key",
            "processor:\n  intervl: 5m\n",
            ":2:3: unknown field `intervl`, expected one of interval, attributes, max_series, mappings",
        ),
        (
            "bad-duration",
            "processor:\n  interval: 5 parsecs\n",
            ":2:13: `5 parsecs` is not a duration (",
        ),
        (
            "bad-cidr",
            "processor:\n  mappings:\n    cidrs:\n      10.0.0.0/40: {service: x}\n",
            ":4:7: `10.0.0.0/40` is not a CIDR: write ADDRESS/PREFIX",
        ),
        (
            "bad-regex",
            "processor:\n  mappings:\n    processes:\n      - {match: '[web', service: web}\n",
            ":4:17: `[web` is not a valid regular expression: unclosed character class",
        ),
        (
            "unset-variable",
            "exporters:\n  otlp:\n    endpoint: ${FLOWTEL_TEST_UNSET_ENDPOINT}\n",
            ":3:15: the environment variable FLOWTEL_TEST_UNSET_ENDPOINT is not set: export it, or give a default with ${FLOWTEL_TEST_UNSET_ENDPOINT:-value}",
        ),
        (
            "unknown-attribute",
            "processor:\n  attributes: [source.proces.name]\n",
            ":2:3: processor.attributes: `source.proces.name` is never set: it is not one of flowtel's own attributes and no mapping gives it; did you mean `source.process.name`?",
        ),
    ];
    for (name, yaml, expected) in cases {
        let file = TempFile::new(name, yaml);
        let out = config_check(file.path(), &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        let line = stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "{name}: one line: {stderr}");
        let want = format!("flowtel: error: {}{expected}", file.path());
        assert!(
            line.starts_with(&want),
            "{name}:\n got: {line}\nwant: {want}"
        );
        assert!(out.stdout.is_empty(), "{name}: nothing on stdout");
    }

    // `run --config` refuses the same way, before touching the kernel.
    let file = TempFile::new("run-unknown-key", "recever: {}\n");
    let out = Command::new(FLOWTEL)
        .args(["run", "--config", file.path()])
        .output()
        .expect("run flowtel");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr).trim_end(),
        format!(
            "flowtel: error: {}:1:1: unknown field `recever`, expected one of receiver, processor, exporters",
            file.path()
        )
    );
}

#[test]
fn secrets_never_appear_in_check_output_or_errors() {
    const KEY: &str = "dd-test-key-7f3a9c";
    const TOKEN: &str = "Bearer otlp-test-token-51b2";
    let file = TempFile::new(
        "secrets",
        "exporters:\n  datadog:\n    api_key: ${FLOWTEL_TEST_DD_KEY}\n  otlp:\n    endpoint: http://127.0.0.1:4318\n    headers:\n      authorization: ${FLOWTEL_TEST_TOKEN}\n",
    );
    let env = [("FLOWTEL_TEST_DD_KEY", KEY), ("FLOWTEL_TEST_TOKEN", TOKEN)];
    let out = config_check(file.path(), &env);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("<redacted>"), "{all}");
    assert!(
        !all.contains(KEY) && !all.contains("otlp-test-token"),
        "{all}"
    );

    // An invalid file holding the key: the error names the problem only.
    let bad = TempFile::new(
        "secrets-bad",
        "exporters:\n  datadog:\n    api_key: ${FLOWTEL_TEST_DD_KEY}\n    temporality: cumulative\n",
    );
    let out = config_check(bad.path(), &env);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(!all.contains(KEY), "{all}");
}

#[test]
fn a_password_in_the_endpoint_never_shows_and_loopback_is_read_from_the_host() {
    const PASSWORD: &str = "pw-test-93c1e";
    let env = [("FLOWTEL_TEST_PASSWORD", PASSWORD)];
    let endpoint = |host: &str| {
        format!("exporters:\n  otlp:\n    endpoint: http://admin:${{FLOWTEL_TEST_PASSWORD}}@{host}:4318/v1/metrics\n")
    };
    // On this host: cleartext is allowed, the user and password redacted.
    let local = TempFile::new("userinfo-local", &endpoint("127.0.0.1"));
    let out = config_check(local.path(), &env);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("endpoint: http://<redacted>@127.0.0.1:4318/v1/metrics"),
        "{all}"
    );
    assert!(!all.contains(PASSWORD), "{all}");
    // Another host: refused by check and by run, in one line without it.
    let remote = TempFile::new("userinfo-remote", &endpoint("collector"));
    for args in [
        &["config", "check", remote.path()][..],
        &["run", "--config", remote.path()],
    ] {
        let (code, stderr) = flowtel(args, &env);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("<redacted>@collector:4318"), "{stderr}");
        assert!(!stderr.contains(PASSWORD), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn a_header_value_run_would_refuse_is_refused_by_check() {
    let file = TempFile::new(
        "header-crlf",
        "exporters:\n  otlp:\n    endpoint: http://127.0.0.1:4318/v1/metrics\n",
    );
    let env = [(
        "OTEL_EXPORTER_OTLP_HEADERS",
        "authorization=Bearer%0D%0AX-Evil: 1",
    )];
    for args in [
        &["config", "check", file.path()][..],
        &["run", "--config", file.path()],
    ] {
        let (code, stderr) = flowtel(args, &env);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(
                "the value of otlp header \"authorization\" is not a valid HTTP header value"
            ),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("X-Evil"), "{stderr}");
    }
}

/// `flowtel ARGS`: its exit code, stdout, stderr and peak RSS in KiB (from
/// wait4, this child's own).
fn flowtel_rusage(args: &[&str]) -> (Option<i32>, String, String, i64) {
    let mut child = Command::new(FLOWTEL)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run flowtel");
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                pipe.read_to_string(&mut text).unwrap();
            }
            text
        })
    };
    let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
    let mut status = 0;
    // SAFETY: rusage is a plain C struct, zeroed is a valid value; wait4
    // writes into the two locals only, for our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    // Reaped by wait4 already: this only tells the Child so (ECHILD).
    let _ = child.wait();
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    (code, stdout, stderr, usage.ru_maxrss)
}

#[test]
fn a_large_mapping_file_takes_memory_in_proportion_and_its_limit_is_one_line() {
    const RULES: usize = 40_000;
    let mut rules = "processor:\n  mappings:\n    processes:\n".to_owned();
    for n in 0..RULES {
        rules.push_str(&format!(
            "      - {{match: '^svc{n:05}$', service: service-{n:05}}}\n"
        ));
    }
    let big = TempFile::new("mapping-40k", &rules);
    let small = TempFile::new("mapping-none", "processor:\n  interval: 1m\n");
    let (code, _, stderr, baseline) = flowtel_rusage(&["config", "check", small.path()]);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stdout, stderr, peak) = flowtel_rusage(&["config", "check", big.path()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.matches("match: ^svc").count(),
        RULES,
        "every rule printed"
    );
    let file_kib = (rules.len() / 1024) as i64;
    println!(
        "config check of {RULES} process rules ({file_kib} KiB): {peak} KiB peak RSS, {baseline} KiB for an empty file"
    );
    assert!(
        peak - baseline < 10 * file_kib,
        "{} KiB more than an empty file for a {file_kib} KiB file",
        peak - baseline
    );

    // Over the parser's limit: one line with the limit and what to do.
    let out = Command::new(FLOWTEL)
        .args(["config", "check", big.path()])
        .env("FLOWTEL_CONFIG_MAX_NODES", "100000")
        .output()
        .expect("run flowtel");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("the file is larger than the configuration parser's limit of 100000 YAML nodes (scalars, lists and maps): raise it with FLOWTEL_CONFIG_MAX_NODES"),
        "{stderr}"
    );
}

/// Records printed until the agent's last window summary, after `stop`.
fn stop_and_collect(agent: &mut Agent) -> Vec<Record> {
    let how = agent.stop();
    assert!(how.contains("exit status: 0"), "agent ended: {how}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let records = agent.records();
        let summary = records
            .iter()
            .any(|r| matches!(r, Record::Other(v) if v["record"] == "window_summary"));
        if summary || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until this thread's polled bytes reach `moved`, then stops the
/// agent and returns everything it printed.
fn collect_after(agent: &mut Agent, comm: &str, moved: u64) -> Vec<Record> {
    agent.wait_until("this thread's polls", |records| {
        let mine: u64 = records
            .iter()
            .filter_map(Record::as_poll)
            .filter(|f| f.attributes.process_name.as_deref() == Some(comm))
            .map(|f| f.bytes_sent)
            .sum();
        mine >= moved
    });
    stop_and_collect(agent)
}

/// The window records among `records`.
fn windows(records: &[Record]) -> Vec<&integration::record::Flow> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Window(flow) => Some(flow),
            _ => None,
        })
        .collect()
}

/// The kernel's name for this test's thread: what flowtel reports as
/// `source.process.name` for its sockets.
fn this_thread_comm() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .expect("read comm")
        .trim()
        .to_owned()
}

#[test]
fn windows_are_keyed_by_the_selected_and_mapped_attributes() {
    privilege::require_root();
    let comm = this_thread_comm();
    let file = TempFile::new(
        "grouped",
        &format!(
            "processor:\n  attributes: [source.process.name, source.service, destination.service]\n  \
             mappings:\n    cidrs:\n      127.0.0.0/8: {{service: loopback-peer}}\n    \
             processes:\n      - {{match: '^{comm}$', service: tester}}\n"
        ),
    );
    let mut agent = Agent::start_with(FLOWTEL, Duration::from_secs(1), &["--config", file.path()]);
    let truth = tcp::transfer("127.0.0.1".parse().unwrap(), 3 << 20, 5 << 10);
    // Both ends of the transfer are this thread's: they fold into one series.
    let moved = truth.client_sent + truth.server_sent;
    let records = collect_after(&mut agent, &comm, moved);
    let windows = windows(&records);
    let mine: Vec<_> = windows
        .iter()
        .filter(|w| w.attributes.process_name.as_deref() == Some(comm.as_str()))
        .collect();
    assert_eq!(mine.len(), 1, "one series for this thread: {windows:#?}");
    let series = mine[0];
    let mut names: Vec<&str> = ["source.process.name"].into();
    names.extend(series.attributes.other.keys().map(String::as_str));
    assert_eq!(
        names,
        [
            "source.process.name",
            "destination.service",
            "source.service"
        ],
        "only the selected attributes: {series:#?}"
    );
    assert_eq!(
        series.attributes.other["source.service"],
        Value::from("tester")
    );
    assert_eq!(
        series.attributes.other["destination.service"],
        Value::from("loopback-peer")
    );
    assert_eq!(series.attributes.destination_port, None);
    assert_eq!(series.bytes_sent, moved, "{series:#?}");
    assert_eq!(series.bytes_received, moved, "{series:#?}");
    assert_eq!(series.connections_opened, 2, "client and accepted socket");
}

#[test]
fn series_over_the_limit_overflow_into_one_marked_series_and_nothing_is_lost() {
    privilege::require_root();
    let file = TempFile::new(
        "overflow",
        "processor:\n  attributes: [source.process.name, destination.port]\n  max_series: 1\n",
    );
    let mut agent = Agent::start_with(FLOWTEL, Duration::from_secs(1), &["--config", file.path()]);
    // Two servers: at least three series (two client flows by port, the
    // servers' flows without one), one more than the limit allows.
    let a = tcp::transfer("127.0.0.1".parse().unwrap(), 1 << 20, 1 << 10);
    let b = tcp::transfer("127.0.0.1".parse().unwrap(), 64 << 10, 1 << 10);
    let moved = a.client_sent + a.server_sent + b.client_sent + b.server_sent;
    let comm = this_thread_comm();
    let records = collect_after(&mut agent, &comm, moved);
    let windows = windows(&records);
    assert_eq!(
        windows.len(),
        2,
        "one series and the overflow: {windows:#?}"
    );
    let overflow = windows
        .iter()
        .find(|w| w.attributes.other.get("flowtel.overflow") == Some(&Value::Bool(true)))
        .expect("an overflow series");
    assert_eq!(overflow.attributes.other.len(), 1, "{overflow:#?}");
    let summary = records
        .iter()
        .find_map(|r| match r {
            Record::Other(v) if v["record"] == "window_summary" => Some(v.clone()),
            _ => None,
        })
        .expect("a window summary");
    assert!(
        summary["overflowed_series"].as_u64().unwrap() >= 2,
        "{summary}"
    );

    // Every byte of every poll (flows are never capped) is in the window.
    let polled: u64 = records
        .iter()
        .filter_map(Record::as_poll)
        .map(|f| f.bytes_sent + f.bytes_received)
        .sum();
    let windowed: u64 = windows
        .iter()
        .map(|w| w.bytes_sent + w.bytes_received)
        .sum();
    assert_eq!(windowed, polled);
    assert!(windowed >= 2 * moved);
}
