use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::*;

const KEEP: Duration = Duration::from_secs(60);

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn pod(uid: &str, name: &str, owner: Option<Workload>, ips: &[&str]) -> PodFacts {
    PodFacts {
        uid: uid.into(),
        namespace: "shop".into(),
        name: name.into(),
        node: Some("node-a".into()),
        owner,
        host_network: false,
        ips: ips.iter().map(|i| ip(i)).collect(),
    }
}

fn pod_name(remote: Option<Remote>) -> Option<String> {
    match remote? {
        Remote::Pod(pod, _) => Some(pod.name.to_string()),
        _ => None,
    }
}

#[test]
fn resolves_a_pods_workload_through_its_replica_set() {
    let index = Index::new(KEEP);
    let cart = pod(
        "u1",
        "cart-7d-x",
        Some(Workload::ReplicaSet("cart-7d".into())),
        &["10.1.0.7"],
    );
    index.apply_pod(cart.clone());
    // The ReplicaSet may come after its pods: resolved at lookup.
    assert_eq!(
        index.workload(&cart),
        Some(Workload::ReplicaSet("cart-7d".into()))
    );
    index.apply_replica_set("shop", "cart-7d", Some("cart"));
    assert_eq!(
        index.workload(&cart),
        Some(Workload::Deployment("cart".into()))
    );
    match index.remote(ip("10.1.0.7")) {
        Some(Remote::Pod(p, workload)) => {
            assert_eq!(&*p.name, "cart-7d-x");
            assert_eq!(workload, Some(Workload::Deployment("cart".into())));
        }
        other => panic!("{other:?}"),
    }
    // A ReplicaSet of the same name in another namespace is another one.
    index.apply_replica_set("other", "db-1", Some("db"));
    let db = PodFacts {
        namespace: "shop".into(),
        ..pod(
            "u2",
            "db-1-y",
            Some(Workload::ReplicaSet("db-1".into())),
            &[],
        )
    };
    assert_eq!(
        index.workload(&db),
        Some(Workload::ReplicaSet("db-1".into()))
    );
    let web = pod(
        "u3",
        "web-0",
        Some(Workload::StatefulSet("web".into())),
        &[],
    );
    assert_eq!(
        index.workload(&web),
        Some(Workload::StatefulSet("web".into()))
    );
}

#[test]
fn host_network_pods_leave_the_node_its_address() {
    let index = Index::new(KEEP);
    index.apply_node(NodeFacts {
        name: "node-a".into(),
        ips: vec![ip("192.168.1.5")],
    });
    // As objects.rs reads it: a hostNetwork pod claims no address.
    index.apply_pod(PodFacts {
        host_network: true,
        ..pod(
            "u1",
            "kube-proxy-x",
            Some(Workload::DaemonSet("kube-proxy".into())),
            &[],
        )
    });
    match index.remote(ip("192.168.1.5")) {
        Some(Remote::Node(node)) => assert_eq!(&*node.name, "node-a"),
        other => panic!("{other:?}"),
    }
    assert!(
        index.pod("u1").is_some(),
        "the local end still finds it by UID"
    );
}

#[test]
fn a_deleted_pod_answers_until_the_staleness_bound() {
    let index = Index::new(KEEP);
    let t0 = Instant::now();
    index.apply_pod_at(
        pod(
            "u1",
            "job-x",
            Some(Workload::Job("job".into())),
            &["10.1.0.9"],
        ),
        t0,
    );
    index.delete_pod_at("u1", t0);
    assert!(index.pod_at("u1", t0 + KEEP / 2).is_some());
    assert_eq!(
        pod_name(index.remote_at(ip("10.1.0.9"), t0 + KEEP / 2)).as_deref(),
        Some("job-x")
    );
    assert!(index.pod_at("u1", t0 + KEEP).is_none());
    assert!(index.remote_at(ip("10.1.0.9"), t0 + KEEP).is_none());
}

#[test]
fn a_reused_address_is_the_new_pods_at_once() {
    let index = Index::new(KEEP);
    index.apply_pod(pod("old", "a", None, &["10.1.0.9"]));
    index.delete_pod("old");
    index.apply_pod(pod("new", "b", None, &["10.1.0.9"]));
    assert_eq!(pod_name(index.remote(ip("10.1.0.9"))).as_deref(), Some("b"));
    // A late update of the old pod that gives the address back changes nothing.
    index.apply_pod(pod("old", "a", None, &[]));
    assert_eq!(pod_name(index.remote(ip("10.1.0.9"))).as_deref(), Some("b"));
    // A pod that moves to another address leaves the old one.
    index.apply_pod(pod("new", "b", None, &["10.1.0.10"]));
    assert_eq!(
        pod_name(index.remote(ip("10.1.0.10"))).as_deref(),
        Some("b")
    );
    assert!(index
        .remote_at(ip("10.1.0.9"), Instant::now() + KEEP)
        .is_none());
}

#[test]
fn services_are_named_by_cluster_ip_and_forgotten_after_deletion() {
    let index = Index::new(Duration::ZERO);
    index.apply_service(ServiceFacts {
        namespace: "shop".into(),
        name: "db".into(),
        ips: vec![ip("10.96.0.10")],
    });
    match index.remote(ip("10.96.0.10")) {
        Some(Remote::Service(s)) => assert_eq!((&*s.namespace, &*s.name), ("shop", "db")),
        other => panic!("{other:?}"),
    }
    index.delete_service("shop", "db");
    assert!(index.remote(ip("10.96.0.10")).is_none());
    index.sweep();
    assert!(index.is_empty(), "swept");
}

#[test]
fn a_relist_deletes_what_it_no_longer_lists() {
    let index = Index::new(Duration::ZERO);
    index.list_started(Kind::Pod);
    index.apply_pod(pod("u1", "a", None, &["10.1.0.1"]));
    index.apply_pod(pod("u2", "b", None, &["10.1.0.2"]));
    index.list_done(Kind::Pod);
    // The watch was lost and u1 deleted meanwhile: the new list lacks it.
    index.list_started(Kind::Pod);
    index.apply_pod(pod("u2", "b", None, &["10.1.0.2"]));
    index.list_done(Kind::Pod);
    assert!(index.pod("u1").is_none());
    assert!(index.remote(ip("10.1.0.1")).is_none());
    assert!(index.pod("u2").is_some());
}

#[test]
fn a_lookup_is_a_map_read_with_ten_thousand_pods() {
    let index = Index::new(KEEP);
    for n in 0..10_000_u32 {
        let [_, _, a, b] = n.to_be_bytes();
        let address = format!("10.2.{a}.{b}");
        index.apply_pod(pod(
            &format!("uid-{n}"),
            &format!("p-{n}"),
            None,
            &[&address],
        ));
    }
    assert_eq!(
        pod_name(index.remote(ip("10.2.39.15"))).as_deref(),
        Some("p-9999")
    );
    assert_eq!(&*index.pod("uid-1234").unwrap().name, "p-1234");
}
