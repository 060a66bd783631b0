//! Kubernetes names for both ends, from a real agent watching a mock API
//! server (kmock's emulator, `integration/kmock/api_server.py`) while the
//! test creates, changes and deletes pods, services and nodes, drops the
//! watches and answers 410 Gone: the window series of real loopback
//! connections, whose bytes are exact, carry the names that hold at the
//! time, and lose a deleted object's once the staleness bound has passed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use integration::agent::Agent;
use integration::kmock::ApiServer;
use integration::nat::{dnat, pair};
use integration::privilege;
use integration::record::{Flow, FlowFilter, Record};
use integration::traffic::tcp::{self, Transfer};
use serde_json::{json, Value};

const POLL: Duration = Duration::from_millis(200);
/// Polls past a change, for the watch event to reach the agent first.
const SETTLE_POLLS: usize = 2;
/// Polls past the staleness bound (one 1s window) and a window's close.
const STALE_POLLS: usize = 12;

/// The four watchers: pods, services, nodes, replica sets.
const WATCHES: u32 = 4;

fn dir(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("flowtel-kubernetes-{tag}-{}", std::process::id()))
}

/// A configuration with 1s windows and `processor.kubernetes` at `api`.
fn config(dir: &Path, api: &ApiServer) -> PathBuf {
    let path = dir.join("flowtel.yaml");
    let text = format!(
        "processor:\n  interval: 1s\n  kubernetes:\n    kubeconfig: {}\n    node_name: test-node\n",
        api.kubeconfig.display()
    );
    std::fs::write(&path, text).expect("write the configuration");
    path
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn service(name: &str, cluster_ip: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop"}, "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip]}})
}

fn pod(name: &str, uid: &str, pod_ip: &str, owner: (&str, &str)) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "shop", "uid": uid,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1, "uid": "x", "controller": true}]},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Running", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}
    })
}

fn node(name: &str, internal_ip: &str) -> Value {
    json!({"metadata": {"name": name}, "status": {"addresses": [
        {"type": "Hostname", "address": name}, {"type": "InternalIP", "address": internal_ip}]}})
}

/// The window records so far of the flows `filter` matches.
fn windows_of(agent: &Agent, filter: &FlowFilter) -> Vec<Flow> {
    agent
        .records()
        .iter()
        .filter_map(|r| match r {
            Record::Window(flow) if filter.matches(&flow.attributes) => Some(flow.clone()),
            _ => None,
        })
        .collect()
}

/// Waits until the windows of the client's flow (`filter`) hold all of
/// `truth`'s client bytes, asserts they are exact, and returns them.
fn counted_windows(agent: &mut Agent, filter: &FlowFilter, truth: &Transfer) -> Vec<Flow> {
    let mut windows;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        windows = windows_of(agent, filter);
        let sent: u64 = windows.iter().map(|w| w.bytes_sent).sum();
        if sent >= truth.client_sent {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client's windows never added up: {windows:#?}"
        );
        agent.wait_polls(1);
    }
    let sent: u64 = windows.iter().map(|w| w.bytes_sent).sum();
    let received: u64 = windows.iter().map(|w| w.bytes_received).sum();
    assert_eq!((sent, received), (truth.client_sent, truth.client_received));
    for window in &windows {
        eprintln!("{}", Record::Window(window.clone()).summary());
    }
    windows
}

/// Moves a transfer to `server`, and returns its client's windows once
/// they hold all of its bytes, exact.
fn counted_transfer(agent: &mut Agent, server: &str) -> Vec<Flow> {
    let truth = tcp::transfer(ip(server), 123_457, 4_321);
    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(truth.server_port);
    counted_windows(agent, &client, &truth)
}

/// The values of `name` in the windows.
fn values(windows: &[Flow], name: &str) -> Vec<Option<String>> {
    let mut values: Vec<Option<String>> = windows
        .iter()
        .map(|w| {
            w.attributes
                .other
                .get(name)
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    values.dedup();
    values
}

fn assert_named(windows: &[Flow], name: &str, value: &str) {
    assert_eq!(
        values(windows, name),
        [Some(value.to_owned())],
        "{name} in {windows:#?}"
    );
}

fn health(agent: &Agent, field: &str) -> u64 {
    agent
        .records()
        .iter()
        .rev()
        .find_map(|r| match r {
            Record::Health(h) => h.get(field)?.as_u64(),
            _ => None,
        })
        .unwrap_or(0)
}

#[test]
fn remote_ends_are_named_by_ip_and_follow_every_change() {
    privilege::require_root();
    let dir = dir("remote");
    let mut api = ApiServer::start(&dir);
    api.create(
        "/api/v1/namespaces/shop/services",
        service("db", "127.0.0.51"),
    );
    api.create(
        "/apis/apps/v1/namespaces/shop/replicasets",
        json!({"metadata": {"name": "cart-7d", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart", "uid": "d", "controller": true}]}}),
    );
    api.create(
        "/api/v1/namespaces/shop/pods",
        pod(
            "cart-7d-x",
            "11111111-aaaa",
            "127.0.0.52",
            ("ReplicaSet", "cart-7d"),
        ),
    );
    api.create("/api/v1/nodes", node("node-a", "127.0.0.53"));
    let config = config(&dir, &api);

    let check = Command::new(env!("CARGO_BIN_EXE_flowtel"))
        .args(["check", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .output()
        .expect("run flowtel check");
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.lines()
            .any(|l| l.starts_with("kubernetes") && l.contains("the API server answers: v1.")),
        "{said}"
    );

    let mut agent = Agent::start_with_config(env!("CARGO_BIN_EXE_flowtel"), POLL, &config);
    api.wait_watching(WATCHES);

    // A Service's ClusterIP, a pod's IP (its Deployment through its
    // ReplicaSet), a node's InternalIP.
    let windows = counted_transfer(&mut agent, "127.0.0.51");
    assert_named(&windows, "destination.k8s.service.name", "db");
    assert_named(&windows, "destination.k8s.namespace.name", "shop");
    assert_named(&windows, "source.k8s.node.name", "test-node");
    let windows = counted_transfer(&mut agent, "127.0.0.52");
    assert_named(&windows, "destination.k8s.pod.name", "cart-7d-x");
    assert_named(&windows, "destination.k8s.pod.uid", "11111111-aaaa");
    assert_named(&windows, "destination.k8s.deployment.name", "cart");
    assert_named(&windows, "destination.k8s.node.name", "node-a");
    let windows = counted_transfer(&mut agent, "127.0.0.53");
    assert_named(&windows, "destination.k8s.node.name", "node-a");
    assert_eq!(values(&windows, "destination.k8s.pod.name"), [None]);

    // A change: the pod moves to a StatefulSet's name (a patch); a new
    // Service takes a deleted one's address at once.
    api.patch(
        "/api/v1/namespaces/shop/pods/cart-7d-x",
        json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "cart-db", "uid": "s", "controller": true}]}}),
    );
    api.delete("/api/v1/namespaces/shop/services/db");
    api.create(
        "/api/v1/namespaces/shop/services",
        service("db-v2", "127.0.0.51"),
    );
    agent.wait_polls(SETTLE_POLLS);
    let windows = counted_transfer(&mut agent, "127.0.0.52");
    assert_named(&windows, "destination.k8s.statefulset.name", "cart-db");
    assert_eq!(values(&windows, "destination.k8s.deployment.name"), [None]);
    let windows = counted_transfer(&mut agent, "127.0.0.51");
    assert_named(&windows, "destination.k8s.service.name", "db-v2");

    // Dropped watches are resumed: what comes after is seen.
    let asked = api
        .send(json!({"op": "watch_requests"}))
        .parse::<u64>()
        .unwrap();
    api.drop_watches();
    api.wait_watching(WATCHES);
    let again = api
        .send(json!({"op": "watch_requests"}))
        .parse::<u64>()
        .unwrap();
    assert!(again >= asked + u64::from(WATCHES), "{asked} then {again}");
    api.create(
        "/api/v1/namespaces/shop/pods",
        pod(
            "web-0",
            "22222222-bbbb",
            "127.0.0.54",
            ("StatefulSet", "web"),
        ),
    );
    agent.wait_polls(SETTLE_POLLS);
    let windows = counted_transfer(&mut agent, "127.0.0.54");
    assert_named(&windows, "destination.k8s.pod.name", "web-0");
    assert_named(&windows, "destination.k8s.statefulset.name", "web");

    // 410 Gone: the watchers list again, and the new list is the truth: a
    // node removed without a watch event (as while a watch was down) goes
    // once the staleness bound has passed.
    api.send(json!({"op": "forget", "resource": "v1/nodes", "namespace": null, "name": "node-a"}));
    api.answer_gone(WATCHES);
    api.drop_watches();
    api.wait_watching(WATCHES);
    agent.wait_polls(STALE_POLLS);
    let windows = counted_transfer(&mut agent, "127.0.0.53");
    assert_eq!(
        values(&windows, "destination.k8s.node.name"),
        [None],
        "{windows:#?}"
    );
    assert!(health(&agent, "kubernetes_relists") >= u64::from(WATCHES));

    // A deleted Service keeps its name for at most the staleness bound.
    api.delete("/api/v1/namespaces/shop/services/db-v2");
    agent.wait_polls(STALE_POLLS);
    let windows = counted_transfer(&mut agent, "127.0.0.51");
    assert_eq!(values(&windows, "destination.k8s.service.name"), [None]);
    assert_eq!(health(&agent, "kubernetes_objects_malformed"), 0);
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Service address that a DNAT sends on to a pod, as kube-proxy's rules
/// do (here in the client namespace's output chain): the client's windows
/// name the pod that served the bytes, and keep the Service's name.
#[test]
fn through_a_service_address_the_pod_that_served_it_is_named() {
    privilege::require_root();
    const SERVICE: &str = "10.253.9.9:80";
    const POD: &str = "10.253.21.2:8080";
    let dir = dir("service-nat");
    let mut api = ApiServer::start(&dir);
    api.create(
        "/api/v1/namespaces/shop/services",
        service("db", "10.253.9.9"),
    );
    api.create(
        "/api/v1/namespaces/shop/pods",
        pod(
            "db-0",
            "33333333-cccc",
            "10.253.21.2",
            ("StatefulSet", "db"),
        ),
    );
    let [client, server] = pair("k8snat", "10.253.21");
    dnat(&client, "output", "tcp", SERVICE, POD);
    let config = config(&dir, &api);
    let mut agent = Agent::start_with_config(env!("CARGO_BIN_EXE_flowtel"), POLL, &config);
    api.wait_watching(WATCHES);

    let truth = tcp::transfer_through(
        Some(&client),
        Some(&server),
        POD.parse().unwrap(),
        |_| SERVICE.parse().unwrap(),
        123_457,
        4_321,
    );
    let filter = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .namespace(client.inode())
        .destination_port(80);
    let windows = counted_windows(&mut agent, &filter, &truth);
    assert_named(&windows, "destination.translated.address", "10.253.21.2");
    assert_named(&windows, "destination.k8s.service.name", "db");
    assert_named(&windows, "destination.k8s.pod.name", "db-0");
    assert_named(&windows, "destination.k8s.statefulset.name", "db");
    assert_named(&windows, "destination.k8s.namespace.name", "shop");
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A cgroup shaped as the kubelet's cgroupfs driver makes a container's,
/// under the cgroup v2 root; removed on drop.
struct PodCgroup {
    made: Vec<PathBuf>,
    leaf: PathBuf,
}

impl PodCgroup {
    fn new(pod_uid: &str) -> PodCgroup {
        let root = receiver::cgroup_v2_root(None).expect("a cgroup v2 root");
        let container = "c0ffee".repeat(10) + "c0ff";
        let leaf = root.join(format!("kubepods/besteffort/pod{pod_uid}/{container}"));
        let mut made = Vec::new();
        for dir in leaf
            .ancestors()
            .take(4)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if !dir.exists() {
                std::fs::create_dir(dir).unwrap_or_else(|e| panic!("cannot make {dir:?}: {e}"));
                made.push(dir.to_owned());
            }
        }
        PodCgroup { made, leaf }
    }
}

impl Drop for PodCgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[test]
fn the_local_end_is_named_by_the_pod_uid_of_its_cgroup() {
    use std::io::Read as _;
    use std::os::unix::process::CommandExt as _;

    privilege::require_root();
    const UID: &str = "3f2a8c1e-5b6d-4e7f-8a9b-0c1d2e3f4a5b";
    const BYTES: usize = 98_765;
    let dir = dir("local");
    let mut api = ApiServer::start(&dir);
    api.create(
        "/apis/apps/v1/namespaces/shop/replicasets",
        json!({"metadata": {"name": "front-5c", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "front", "uid": "d", "controller": true}]}}),
    );
    api.create(
        "/api/v1/namespaces/shop/pods",
        pod("front-5c-q", UID, "10.9.0.1", ("ReplicaSet", "front-5c")),
    );
    let config = config(&dir, &api);
    let mut agent = Agent::start_with_config(env!("CARGO_BIN_EXE_flowtel"), POLL, &config);
    api.wait_watching(WATCHES);

    let cgroup = PodCgroup::new(UID);
    let procs = std::ffi::CString::new(
        cgroup
            .leaf
            .join("cgroup.procs")
            .into_os_string()
            .into_encoded_bytes(),
    )
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().unwrap().port();
    let client = format!(
        "import socket\ns = socket.create_connection(('127.0.0.1', {port}))\n\
         s.sendall(b'k' * {BYTES})\ns.shutdown(socket.SHUT_WR)\ns.recv(1)\n"
    );
    let mut command = Command::new("python3");
    command.args(["-c", &client]);
    // SAFETY: between fork and exec the child only calls open(2), write(2)
    // and close(2) on memory prepared before the fork: async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    let mut child = command.spawn().expect("run the client in the pod's cgroup");
    let (mut server, _) = listener.accept().expect("accept");
    let mut received = Vec::new();
    server.read_to_end(&mut received).expect("read");
    assert_eq!(received.len(), BYTES);
    // The client stays (in its cgroup) until a window has named it.
    let filter = FlowFilter::any()
        .pid(child.id())
        .tcp()
        .outgoing()
        .destination_port(port);
    let mut windows: Vec<Flow> = Vec::new();
    agent.wait_until("the client's windows add up", |records| {
        windows = records
            .iter()
            .filter_map(|r| match r {
                Record::Window(flow) if filter.matches(&flow.attributes) => Some(flow.clone()),
                _ => None,
            })
            .collect();
        windows.iter().map(|w| w.bytes_sent).sum::<u64>() >= BYTES as u64
    });
    drop(server);
    child.wait().expect("the client ends");
    assert_eq!(
        windows.iter().map(|w| w.bytes_sent).sum::<u64>(),
        BYTES as u64
    );
    let named: Vec<&Flow> = windows.iter().filter(|w| w.bytes_sent > 0).collect();
    let named: Vec<Flow> = named.into_iter().cloned().collect();
    assert_named(&named, "source.k8s.pod.name", "front-5c-q");
    assert_named(&named, "source.k8s.pod.uid", UID);
    assert_named(&named, "source.k8s.namespace.name", "shop");
    assert_named(&named, "source.k8s.deployment.name", "front");
    assert_named(&named, "source.k8s.node.name", "test-node");
    agent.stop();
    drop(cgroup);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_large_cluster_and_malformed_objects_are_counted_and_bytes_stay_exact() {
    privilege::require_root();
    let dir = dir("bad");
    let mut api = ApiServer::start(&dir);
    // 50,000 pods, each a whole pod object as a kubelet would write it.
    api.send(json!({"op": "bulk", "resource": "v1/pods", "objects": 50_000}));
    // Malformed: a UID that is a number, an address that is not one.
    api.create(
        "/api/v1/namespaces/shop/pods",
        json!({"metadata": {"name": "odd", "namespace": "shop", "uid": 12345}}),
    );
    api.create(
        "/api/v1/namespaces/shop/services",
        service("bad", "not-an-ip"),
    );
    api.create(
        "/api/v1/namespaces/shop/services",
        service("db", "127.0.0.61"),
    );
    let config = config(&dir, &api);
    let mut agent = Agent::start_with_config(env!("CARGO_BIN_EXE_flowtel"), POLL, &config);
    let before = agent.rss_kib();
    api.wait_watching(WATCHES);
    agent.wait_polls(SETTLE_POLLS);
    let windows = counted_transfer(&mut agent, "127.0.0.61");
    assert_named(&windows, "destination.k8s.service.name", "db");
    let after = agent.rss_kib();
    eprintln!("the agent's RSS: {before} KiB before the lists, {after} KiB with 50,000 pods");
    // Listed and then seen again by the watch: at least once each.
    assert!(health(&agent, "kubernetes_objects_malformed") >= 2);
    // And again through a relist.
    api.answer_gone(WATCHES);
    api.drop_watches();
    api.wait_watching(WATCHES);
    agent.wait_polls(SETTLE_POLLS);
    let windows = counted_transfer(&mut agent, "127.0.0.61");
    assert_named(&windows, "destination.k8s.service.name", "db");
    assert!(health(&agent, "kubernetes_relists") >= u64::from(WATCHES));
    assert!(health(&agent, "kubernetes_api_errors") >= u64::from(WATCHES));
    agent.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_groups_by_kubernetes_names() {
    use integration::tmux::Tmux;
    use integration::traffic::tcp::Steady;

    privilege::require_root();
    let dir = dir("top");
    let mut api = ApiServer::start(&dir);
    api.create(
        "/api/v1/namespaces/shop/services",
        service("checkout", "127.0.0.71"),
    );
    let config = config(&dir, &api);
    let top = Tmux::start(
        env!("CARGO_BIN_EXE_flowtel"),
        &[
            "top",
            "--config",
            config.to_str().unwrap(),
            "--poll-interval",
            "1s",
            "--group-by",
            "destination.k8s.service.name,source.k8s.node.name",
        ],
        160,
        40,
    );
    api.wait_watching(WATCHES);
    let timeout = Duration::from_secs(40);
    let (screen, polled) = top.wait_for_screen(timeout, |screen| screen.contains("poll at "));
    assert!(polled, "top did not poll: {}\n{screen}", top.stderr());
    let traffic = Steady::start(ip("127.0.0.71"), "top-k8s-client");
    let (screen, found) = top.wait_for_screen(timeout, |screen| {
        screen.lines().any(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words.starts_with(&["checkout", "test-node"])
        })
    });
    println!("flowtel top grouped by Kubernetes names:\n{screen}");
    assert!(
        found,
        "no row for checkout on test-node: {}\n{screen}",
        top.stderr()
    );
    assert!(screen.contains("DESTINATION.K8S.SERVICE.NAME"), "{screen}");
    let _ = traffic.stop();
    top.send_key("q");
    assert_eq!(top.wait_for_exit(Duration::from_secs(5)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
