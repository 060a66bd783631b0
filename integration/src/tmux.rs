//! A program in a real terminal: a detached tmux session of fixed size, on a
//! tmux server of the test's own (`tmux -L`), so that `capture-pane` shows
//! the screen a person would see and `send-keys` types on it. The screen
//! stays after the command exits. The session and its server go when the
//! [`Tmux`] is dropped, also when a test panics.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A command running in a detached tmux session. The command's exit status
/// and its stderr are written to files, read with [`Tmux::exit_status`] and
/// [`Tmux::stderr`].
pub struct Tmux {
    socket: String,
    name: String,
    exit_file: PathBuf,
    stderr_file: PathBuf,
    stty_file: PathBuf,
}

impl Tmux {
    /// Starts `program args...` in a new `width` x `height` session. The
    /// words are quoted for the shell tmux runs the command with.
    pub fn start(program: &str, args: &[&str], width: u16, height: u16) -> Tmux {
        static SESSIONS: AtomicUsize = AtomicUsize::new(0);
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        let name = format!("flowtel-test-{}-{n}", std::process::id());
        let file = |what: &str| std::env::temp_dir().join(format!("{name}.{what}"));
        let tmux = Tmux {
            exit_file: file("exit"),
            stderr_file: file("stderr"),
            stty_file: file("stty"),
            socket: name.clone(),
            name,
        };
        for path in [&tmux.exit_file, &tmux.stderr_file, &tmux.stty_file] {
            let _ = std::fs::remove_file(path);
        }
        let command = std::iter::once(program)
            .chain(args.iter().copied())
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ");
        // The terminal's settings right after the program exits say whether
        // it left raw mode.
        let script = format!(
            "{command} 2>{}; echo $? >{}; stty -a >{}",
            quote_path(&tmux.stderr_file),
            quote_path(&tmux.exit_file),
            quote_path(&tmux.stty_file),
        );
        let (width, height) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            &tmux.name,
            "-x",
            &width,
            "-y",
            &height,
            &script,
            // Keeps the screen after the command exits, to be read.
            ";",
            "set-option",
            "-w",
            "-t",
            &tmux.name,
            "remain-on-exit",
            "on",
        ]);
        tmux
    }

    /// The screen as text, one line per row, trailing blanks trimmed.
    pub fn capture(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", &self.name])
    }

    /// Types `key` (tmux key names: `q`, `Escape`, `C-c`).
    pub fn send_key(&self, key: &str) {
        self.run(&["send-keys", "-t", &self.name, key]);
    }

    /// Waits up to `timeout` until the screen satisfies `done`; returns the
    /// last screen and whether it did.
    pub fn wait_for_screen(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&str) -> bool,
    ) -> (String, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture();
            if done(&screen) {
                return (screen, true);
            }
            if Instant::now() > deadline || self.exit_status().is_some() {
                return (screen, false);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The command's exit status once it has exited.
    pub fn exit_status(&self) -> Option<i32> {
        let text = std::fs::read_to_string(&self.exit_file).ok()?;
        text.trim().parse().ok()
    }

    /// Waits up to `timeout` for the command to exit; its status.
    pub fn wait_for_exit(&self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exit_status() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// What the command wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_file).unwrap_or_default()
    }

    /// `stty -a` of the terminal right after the command exited (waits up
    /// to a second for it).
    pub fn stty_after_exit(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let text = std::fs::read_to_string(&self.stty_file).unwrap_or_default();
            if !text.is_empty() || Instant::now() > deadline {
                return text;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `tmux args...` on this test's server; its stdout.
    fn run(&self, args: &[&str]) -> String {
        crate::vm::run_ok(Command::new("tmux").arg("-L").arg(&self.socket).args(args))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        // The test's own server, with this one session. Not checked: it
        // may be gone already.
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
        for path in [&self.exit_file, &self.stderr_file, &self.stty_file] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `word` in single quotes for sh.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

fn quote_path(path: &std::path::Path) -> String {
    quote(&path.to_string_lossy())
}
