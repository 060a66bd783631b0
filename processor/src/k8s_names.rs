//! Names of both ends from the Kubernetes API (`processor.kubernetes`):
//! the local end by the pod UID of its process's cgroup, the remote end by
//! its IP, each one lookup in the [`kubernetes::Index`].

use std::sync::Arc;

use kubernetes::{Index, PodFacts, Remote, ServiceFacts, Workload};
use receiver::ProcessInfo;

use crate::{Attributes, EndNames, RemoteEnd};

/// [`EndNames`] over a [`kubernetes::Index`].
#[derive(Debug, Clone)]
pub struct KubernetesNames {
    index: Index,
    node: Option<Arc<str>>,
}

impl KubernetesNames {
    /// Names from `index`; `node`, this node's name, names the local end's
    /// node (else the local pod's `spec.nodeName` does).
    pub fn new(index: Index, node: Option<String>) -> KubernetesNames {
        KubernetesNames {
            index,
            node: node.map(Arc::from),
        }
    }
}

impl EndNames for KubernetesNames {
    fn name_local(&self, process: &ProcessInfo, attributes: &mut Attributes) {
        let pod = process
            .pod_uid
            .as_deref()
            .and_then(|uid| self.index.pod(uid));
        if let Some(pod) = &pod {
            let workload = self.index.workload(pod);
            set_pod(attributes, "source.", pod, workload.as_ref());
        }
        if let Some(node) = self
            .node
            .as_ref()
            .or(pod.as_ref().and_then(|p| p.node.as_ref()))
        {
            attributes.set("source.k8s.node.name", Arc::clone(node));
        }
    }

    fn name_remote(&self, remote: RemoteEnd, attributes: &mut Attributes) {
        // Through a Service address the pod that served it names the end,
        // and the Service keeps its name.
        if remote.dialled != remote.real {
            if let Some(Remote::Service(service)) = self.index.remote(remote.dialled) {
                set_service(attributes, &service);
            }
        }
        match self.index.remote(remote.real) {
            Some(Remote::Pod(pod, workload)) => {
                set_pod(attributes, "destination.", &pod, workload.as_ref());
                if let Some(node) = &pod.node {
                    attributes.set("destination.k8s.node.name", Arc::clone(node));
                }
            }
            Some(Remote::Service(service)) => set_service(attributes, &service),
            Some(Remote::Node(node)) => {
                attributes.set("destination.k8s.node.name", Arc::clone(&node.name));
            }
            None => {}
        }
    }
}

fn set_service(attributes: &mut Attributes, service: &ServiceFacts) {
    attributes.set("destination.k8s.service.name", Arc::clone(&service.name));
    let namespace = Arc::clone(&service.namespace);
    attributes.set("destination.k8s.namespace.name", namespace);
}

/// The pod's own attributes, under `end` (`source.` or `destination.`).
fn set_pod(attributes: &mut Attributes, end: &str, pod: &PodFacts, workload: Option<&Workload>) {
    attributes.set(
        format!("{end}k8s.namespace.name"),
        Arc::clone(&pod.namespace),
    );
    attributes.set(format!("{end}k8s.pod.name"), Arc::clone(&pod.name));
    attributes.set(format!("{end}k8s.pod.uid"), Arc::clone(&pod.uid));
    if let Some((name, value)) = workload.and_then(Workload::attribute) {
        attributes.set(format!("{end}{name}"), Arc::clone(value));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::NAMED_ATTRIBUTES;

    fn names() -> KubernetesNames {
        let index = Index::new(Duration::from_secs(60));
        index.apply_pod(PodFacts {
            uid: "u1".into(),
            namespace: "shop".into(),
            name: "cart-7d-x".into(),
            node: Some("node-b".into()),
            owner: Some(Workload::ReplicaSet("cart-7d".into())),
            host_network: false,
            ips: vec!["10.1.0.7".parse().unwrap()],
        });
        index.apply_replica_set("shop", "cart-7d", Some("cart"));
        index.apply_service(kubernetes::ServiceFacts {
            namespace: "shop".into(),
            name: "db".into(),
            ips: vec!["10.96.0.10".parse().unwrap()],
        });
        KubernetesNames::new(index, Some("node-a".into()))
    }

    fn direct(address: &str) -> RemoteEnd {
        RemoteEnd::direct(address.parse().unwrap())
    }

    fn pairs(a: &Attributes) -> Vec<(String, String)> {
        a.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_the_local_pod_by_uid_and_this_node() {
        let mut a = Attributes::new();
        let process = ProcessInfo {
            pid: 7,
            name: "cart".into(),
            container_id: None,
            pod_uid: Some("u1".into()),
        };
        names().name_local(&process, &mut a);
        let want = [
            ("source.k8s.deployment.name", "cart"),
            ("source.k8s.namespace.name", "shop"),
            ("source.k8s.node.name", "node-a"),
            ("source.k8s.pod.name", "cart-7d-x"),
            ("source.k8s.pod.uid", "u1"),
        ];
        assert_eq!(pairs(&a), want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    }

    #[test]
    fn names_a_remote_pod_or_service_by_address() {
        let names = names();
        let mut pod = Attributes::new();
        names.name_remote(direct("10.1.0.7"), &mut pod);
        assert_eq!(
            pod.get("destination.k8s.pod.name").unwrap().to_string(),
            "cart-7d-x"
        );
        assert_eq!(
            pod.get("destination.k8s.node.name").unwrap().to_string(),
            "node-b"
        );
        let mut service = Attributes::new();
        names.name_remote(direct("10.96.0.10"), &mut service);
        assert_eq!(pairs(&service).len(), 2);
        assert_eq!(
            service
                .get("destination.k8s.service.name")
                .unwrap()
                .to_string(),
            "db"
        );
        let mut none = Attributes::new();
        names.name_remote(direct("192.0.2.1"), &mut none);
        assert!(none.is_empty());
        for (name, _) in pairs(&pod).iter().chain(&pairs(&service)) {
            assert!(
                NAMED_ATTRIBUTES.contains(&name.as_str()),
                "{name} is known to config"
            );
        }
    }

    #[test]
    fn through_a_service_address_names_the_pod_that_served_it_and_the_service() {
        let mut a = Attributes::new();
        let remote = RemoteEnd {
            dialled: "10.96.0.10".parse().unwrap(),
            real: "10.1.0.7".parse().unwrap(),
        };
        names().name_remote(remote, &mut a);
        let want = [
            ("destination.k8s.deployment.name", "cart"),
            ("destination.k8s.namespace.name", "shop"),
            ("destination.k8s.node.name", "node-b"),
            ("destination.k8s.pod.name", "cart-7d-x"),
            ("destination.k8s.pod.uid", "u1"),
            ("destination.k8s.service.name", "db"),
        ];
        assert_eq!(pairs(&a), want.map(|(k, v)| (k.to_owned(), v.to_owned())));
    }
}
