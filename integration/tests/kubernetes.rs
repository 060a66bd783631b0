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

/// The window records so far of the client's flow of `truth`.
fn client_windows(agent: &Agent, truth: &Transfer) -> Vec<Flow> {
    let client = FlowFilter::this_process()
        .tcp()
        .outgoing()
        .destination_port(truth.server_port);
    agent
        .records()
        .iter()
        .filter_map(|r| match r {
            Record::Window(flow) if client.matches(&flow.attributes) => Some(flow.clone()),
            _ => None,
        })
        .collect()
}

/// Moves a transfer to `server`, waits until the windows hold all of its
/// client's bytes, asserts they are exact, and returns those windows.
fn counted_transfer(agent: &mut Agent, server: &str) -> Vec<Flow> {
    let truth = tcp::transfer(ip(server), 123_457, 4_321);
    let mut windows;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        windows = client_windows(agent, &truth);
        let sent: u64 = windows.iter().map(|w| w.bytes_sent).sum();
        if sent >= truth.client_sent {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the windows of the transfer to {server} never added up: {windows:#?}"
        );
        agent.wait_polls(1);
    }
    let sent: u64 = windows.iter().map(|w| w.bytes_sent).sum();
    let received: u64 = windows.iter().map(|w| w.bytes_received).sum();
    assert_eq!((sent, received), (truth.client_sent, truth.client_received));
    windows
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
