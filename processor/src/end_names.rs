//! Names a flow's ends get from outside the flow: a container runtime
//! knows a container's name and image, the Kubernetes API a pod's name and
//! workload. Looked up when a window's series are made, so each source
//! keeps what it knew for at least a window after the thing is gone.

use std::fmt;
use std::net::IpAddr;

use receiver::ProcessInfo;

use crate::Attributes;

/// A source of names for the ends of flows. Lookups never block: a source
/// that is behind or down adds nothing (and counts that itself).
pub trait EndNames: Send + Sync + fmt::Debug {
    /// Adds what it knows of the local end, the process `process`, as
    /// `source.*` attributes.
    fn name_local(&self, process: &ProcessInfo, attributes: &mut Attributes);

    /// Adds what it knows of the remote end, as `destination.*` attributes.
    fn name_remote(&self, remote: RemoteEnd, attributes: &mut Attributes);
}

/// A flow's remote end: the address its socket used, and the one its bytes
/// really reached. They differ where NAT rewrote the destination (a
/// Kubernetes Service address and the pod that served it). Both canonical:
/// IPv4 is never IPv4-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteEnd {
    /// The address the local socket used.
    pub dialled: IpAddr,
    /// The address that took the bytes: `dialled` unless NAT rewrote it.
    pub real: IpAddr,
}

impl RemoteEnd {
    /// An end no NAT rewrote.
    pub fn direct(address: IpAddr) -> RemoteEnd {
        RemoteEnd {
            dialled: address,
            real: address,
        }
    }
}

/// The attributes [`EndNames`] sources may give, for either end: what
/// `processor.attributes` and mappings may name besides the
/// [`BUILT_IN_ATTRIBUTES`](crate::BUILT_IN_ATTRIBUTES).
pub const NAMED_ATTRIBUTES: [&str; 20] = [
    "source.container.name",
    "source.container.image.name",
    "source.container.image.tag",
    // Kubernetes (`processor.kubernetes`): the local end by its pod UID,
    // the remote end by its IP.
    "source.k8s.namespace.name",
    "source.k8s.pod.name",
    "source.k8s.pod.uid",
    "source.k8s.deployment.name",
    "source.k8s.statefulset.name",
    "source.k8s.daemonset.name",
    "source.k8s.job.name",
    "source.k8s.node.name",
    "destination.k8s.namespace.name",
    "destination.k8s.pod.name",
    "destination.k8s.pod.uid",
    "destination.k8s.deployment.name",
    "destination.k8s.statefulset.name",
    "destination.k8s.daemonset.name",
    "destination.k8s.job.name",
    "destination.k8s.node.name",
    "destination.k8s.service.name",
];
