//! A Kubernetes API server for the tests: `kmock`'s emulator
//! (`integration/kmock/api_server.py`), steered from the test, with a
//! kubeconfig that points at it. Ended on drop.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{json, Value};

/// A running mock API server.
pub struct ApiServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Its URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A kubeconfig file that points at it.
    pub kubeconfig: PathBuf,
}

/// The Python that has kmock: `FLOWTEL_PYTHON`, else the virtual
/// environment `.ci/run` makes (`target/ci-python`), else `python3`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("FLOWTEL_PYTHON") {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ci-python/bin/python3");
    if venv.exists() {
        return venv;
    }
    "python3".into()
}

impl ApiServer {
    /// Starts one, its kubeconfig written in `dir`. Panics, saying what to
    /// install, when kmock is missing.
    pub fn start(dir: &Path) -> ApiServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kmock/api_server.py");
        let python = python();
        let mut child = Command::new(&python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {python:?}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut url = String::new();
        stdout
            .read_line(&mut url)
            .expect("the mock API server's URL");
        let url = url.trim().to_owned();
        assert!(
            url.starts_with("http://"),
            "the mock API server did not start ({python:?} {script:?}); install kmock: \
             {python:?} -m pip install -r integration/kmock/requirements.txt (.ci/run does)"
        );
        std::fs::create_dir_all(dir).expect("kubeconfig dir");
        let kubeconfig = dir.join("kubeconfig.yaml");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: kmock\n\
                 clusters:\n- name: kmock\n  cluster:\n    server: {url}\n\
                 users:\n- name: test\n  user: {{}}\n\
                 contexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: test\n"
            ),
        )
        .expect("write the kubeconfig");
        ApiServer {
            child,
            stdin,
            stdout,
            url,
            kubeconfig,
        }
    }

    /// Sends one command (see the script) and returns what follows "ok".
    /// Panics on an error.
    pub fn send(&mut self, command: Value) -> String {
        writeln!(self.stdin, "{command}").expect("write to the mock API server");
        let mut answer = String::new();
        self.stdout
            .read_line(&mut answer)
            .expect("the mock API server's answer");
        let answer = answer.trim();
        match answer.strip_prefix("ok") {
            Some(rest) => rest.trim().to_owned(),
            None => panic!("the mock API server refused {command}: {answer:?}"),
        }
    }

    /// Creates `object` at `path` (`/api/v1/namespaces/shop/pods`).
    pub fn create(&mut self, path: &str, object: Value) {
        self.send(json!({"op": "create", "path": path, "object": object}));
    }

    /// Merges `object` into the object at `path`.
    pub fn patch(&mut self, path: &str, object: Value) {
        self.send(json!({"op": "patch", "path": path, "object": object}));
    }

    /// Deletes the object at `path`.
    pub fn delete(&mut self, path: &str) {
        self.send(json!({"op": "delete", "path": path}));
    }

    /// Ends every open watch.
    pub fn drop_watches(&mut self) {
        self.send(json!({"op": "drop"}));
    }

    /// The next `count` watches are answered 410 Gone.
    pub fn answer_gone(&mut self, count: u32) {
        self.send(json!({"op": "gone", "count": count}));
    }

    /// Waits until `count` watches are open (and no 410 is pending): each
    /// watcher has listed and applied its list.
    pub fn wait_watching(&mut self, count: u32) {
        self.send(json!({"op": "watching", "count": count}));
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
