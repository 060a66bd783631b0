//! Starting `flowtel run` and waiting until it watches.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStderr, Command, Stdio};

/// Starts `command` (a `flowtel run ...`) with its log at debug level
/// (the poll lines), waits for its readiness line and returns it with the
/// rest of its log; `seen` gets each line before the readiness one.
pub fn start_watching(
    command: &mut Command,
    mut seen: impl FnMut(&str),
) -> (Child, Lines<BufReader<ChildStderr>>) {
    let mut child = command
        .env("RUST_LOG", "info,flowtel=debug,receiver=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flowtel");
    let stderr = child.stderr.take().expect("piped");
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref() {
        let line = line.expect("stderr");
        seen(&line);
        if line.contains("flowtel: watching") {
            break;
        }
    }
    (child, lines)
}
