//! Without privileges the agent stops at once with one line that names the
//! capabilities it needs, and a non-zero exit.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use integration::privilege;

#[test]
fn an_unprivileged_agent_names_the_missing_capabilities_and_exits_1() {
    // Root is needed to become the unprivileged user.
    privilege::require_root();
    // A copy nobody can run: the checkout may sit under a private home.
    let dir = std::env::temp_dir().join(format!("flowtel-privileges-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary directory");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let binary = dir.join("flowtel");
    std::fs::copy(env!("CARGO_BIN_EXE_flowtel"), &binary).expect("copy the binary");
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&binary)
        .args(["run", "--poll-interval", "1s"])
        .output()
        .expect("setpriv (util-linux) runs flowtel as nobody");
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "nothing on stdout");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("flowtel: error: "), "{line}");
    for capability in ["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"] {
        assert!(line.contains(capability), "{capability} not named: {line}");
    }
}
