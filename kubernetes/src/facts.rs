//! What the index keeps of each object: plain data, only the fields that
//! name a flow's end.

use std::net::IpAddr;
use std::sync::Arc;

/// A pod's owner, as its controller reference names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// A ReplicaSet; the index resolves it to its Deployment when it has one.
    ReplicaSet(Arc<str>),
    /// A Deployment (through its ReplicaSet).
    Deployment(Arc<str>),
    /// A StatefulSet.
    StatefulSet(Arc<str>),
    /// A DaemonSet.
    DaemonSet(Arc<str>),
    /// A Job.
    Job(Arc<str>),
}

impl Workload {
    /// The owner named by a controller reference's kind, if it is a kind
    /// flowtel names.
    pub fn of(kind: &str, name: &str) -> Option<Workload> {
        let name: Arc<str> = name.into();
        Some(match kind {
            "ReplicaSet" => Workload::ReplicaSet(name),
            "Deployment" => Workload::Deployment(name),
            "StatefulSet" => Workload::StatefulSet(name),
            "DaemonSet" => Workload::DaemonSet(name),
            "Job" => Workload::Job(name),
            _ => return None,
        })
    }

    /// The attribute that names it, after `source.`/`destination.`
    /// (OpenTelemetry's semantic conventions), and its value; `None` for a
    /// ReplicaSet that no Deployment owns (no such convention is named).
    pub fn attribute(&self) -> Option<(&'static str, &Arc<str>)> {
        match self {
            Workload::ReplicaSet(_) => None,
            Workload::Deployment(n) => Some(("k8s.deployment.name", n)),
            Workload::StatefulSet(n) => Some(("k8s.statefulset.name", n)),
            Workload::DaemonSet(n) => Some(("k8s.daemonset.name", n)),
            Workload::Job(n) => Some(("k8s.job.name", n)),
        }
    }
}

/// A pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.uid`, as the pod's cgroup path holds it.
    pub uid: Arc<str>,
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `spec.nodeName`, once scheduled.
    pub node: Option<Arc<str>>,
    /// The controller among `metadata.ownerReferences`.
    pub owner: Option<Workload>,
    /// `spec.hostNetwork`: such a pod has its node's IP, which stays the
    /// node's.
    pub host_network: bool,
    /// `status.podIPs` of a pod that is not finished (a pod that succeeded
    /// or failed has given its IPs back, to be reused); empty for a
    /// hostNetwork pod.
    pub ips: Vec<IpAddr>,
}

/// A Service with a ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `spec.clusterIPs` (none for a headless Service).
    pub ips: Vec<IpAddr>,
}

/// A node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    /// `metadata.name`.
    pub name: Arc<str>,
    /// Its `InternalIP` addresses.
    pub ips: Vec<IpAddr>,
}

/// What a remote address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A pod's IP, with the pod's workload resolved.
    Pod(Arc<PodFacts>, Option<Workload>),
    /// A Service's ClusterIP.
    Service(Arc<ServiceFacts>),
    /// A node's InternalIP.
    Node(Arc<NodeFacts>),
}
