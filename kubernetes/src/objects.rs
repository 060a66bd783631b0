//! The objects as they come over the wire, read leniently and only in the
//! fields the index keeps: the rest of each object is skipped as it is
//! parsed, so a list of 50,000 pods never holds 50,000 `Pod`s, and one
//! malformed object is skipped (and counted) instead of failing its list.

use std::borrow::Cow;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::facts::{NodeFacts, PodFacts, ServiceFacts, Workload};

/// A kind flowtel watches: its API coordinates and what is read of it.
pub(crate) trait Wire: DeserializeOwned + Clone + std::fmt::Debug + Send + 'static {
    const KIND: &'static str;
    const GROUP: &'static str;
    const VERSION: &'static str;
    const PLURAL: &'static str;
    /// `k8s_openapi`'s scope type (namespaced or cluster).
    type Scope;
}

/// One object of kind `W`: its resource version (which the watcher resumes
/// from), and its fields if they could be read.
#[derive(Debug, Clone)]
pub(crate) struct Seen<W> {
    meta: ObjectMeta,
    /// `None`: the object was malformed.
    pub(crate) object: Option<W>,
}

impl<'de, W: Wire> Deserialize<'de> for Seen<W> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // One object at a time: its whole form lives only while it is read.
        let value = serde_json::Value::deserialize(d)?;
        let resource_version = value
            .pointer("/metadata/resourceVersion")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let object = W::deserialize(&value).ok();
        Ok(Seen {
            meta: ObjectMeta {
                resource_version,
                ..ObjectMeta::default()
            },
            object,
        })
    }
}

impl<W: Wire> kube::Resource for Seen<W> {
    type DynamicType = ();
    type Scope = W::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        W::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        W::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        W::VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        W::PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// `Wire` for a kind: its type, kind, group, version, plural and scope.
macro_rules! wire {
    ($($type:ident: $kind:literal, $group:literal, $version:literal, $plural:literal, $scope:ident;)*) => {$(
        impl Wire for $type {
            const KIND: &'static str = $kind;
            const GROUP: &'static str = $group;
            const VERSION: &'static str = $version;
            const PLURAL: &'static str = $plural;
            type Scope = k8s_openapi::$scope;
        }
    )*};
}

wire! {
    Pod: "Pod", "", "v1", "pods", NamespaceResourceScope;
    Service: "Service", "", "v1", "services", NamespaceResourceScope;
    Node: "Node", "", "v1", "nodes", ClusterResourceScope;
    ReplicaSet: "ReplicaSet", "apps", "v1", "replicasets", NamespaceResourceScope;
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct OwnerReference {
    kind: String,
    name: String,
    controller: Option<bool>,
}

impl Meta {
    fn controller(&self) -> Option<&OwnerReference> {
        self.owner_references
            .iter()
            .find(|o| o.controller == Some(true))
    }

    pub(crate) fn namespace_name(&self) -> Option<(&str, &str)> {
        Some((self.namespace.as_deref()?, self.name.as_deref()?))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct Ip {
    ip: Option<String>,
}

/// A pod as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Pod {
    pub(crate) metadata: Meta,
    spec: PodSpec,
    status: PodStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodSpec {
    node_name: Option<String>,
    host_network: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodStatus {
    phase: Option<String>,
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pod_ips: Vec<Ip>,
}

/// Parses addresses, all or nothing: an address that is not one makes the
/// object malformed.
fn addresses<'a>(texts: impl Iterator<Item = &'a str>) -> Option<Vec<IpAddr>> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for text in texts.filter(|t| !t.is_empty() && *t != "None") {
        let ip: IpAddr = text.parse().ok()?;
        let ip = ip.to_canonical();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    Some(ips)
}

impl Pod {
    /// What the index keeps; `None` when the pod has no UID, name or
    /// namespace, or an address that is not one.
    pub(crate) fn facts(&self) -> Option<PodFacts> {
        let (namespace, name) = self.metadata.namespace_name()?;
        let uid = self.metadata.uid.as_deref().filter(|u| !u.is_empty())?;
        let host_network = self.spec.host_network == Some(true);
        let finished = matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed"));
        let texts = (self.status.pod_ip.iter().map(String::as_str))
            .chain(self.status.pod_ips.iter().filter_map(|i| i.ip.as_deref()));
        let ips = addresses(texts)?;
        Some(PodFacts {
            uid: uid.into(),
            namespace: namespace.into(),
            name: name.into(),
            node: self.spec.node_name.as_deref().map(Into::into),
            owner: (self.metadata.controller()).and_then(|o| Workload::of(&o.kind, &o.name)),
            host_network,
            ips: if host_network || finished {
                Vec::new()
            } else {
                ips
            },
        })
    }

    /// The UID, for a deletion.
    pub(crate) fn uid(&self) -> Option<&str> {
        self.metadata.uid.as_deref()
    }
}

/// A Service as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Service {
    pub(crate) metadata: Meta,
    spec: ServiceSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct ServiceSpec {
    #[serde(rename = "clusterIP")]
    cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    cluster_ips: Vec<String>,
}

impl Service {
    /// What the index keeps; `None` when malformed.
    pub(crate) fn facts(&self) -> Option<ServiceFacts> {
        let (namespace, name) = self.metadata.namespace_name()?;
        let texts = (self.spec.cluster_ip.iter())
            .chain(&self.spec.cluster_ips)
            .map(String::as_str);
        Some(ServiceFacts {
            namespace: namespace.into(),
            name: name.into(),
            ips: addresses(texts)?,
        })
    }
}

/// A node as read.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Node {
    pub(crate) metadata: Meta,
    status: NodeStatus,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct NodeStatus {
    addresses: Vec<NodeAddress>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct NodeAddress {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

impl Node {
    /// What the index keeps; `None` when malformed.
    pub(crate) fn facts(&self) -> Option<NodeFacts> {
        let name = self.metadata.name.as_deref().filter(|n| !n.is_empty())?;
        let texts = (self.status.addresses.iter())
            .filter(|a| a.kind == "InternalIP")
            .map(|a| a.address.as_str());
        Some(NodeFacts {
            name: name.into(),
            ips: addresses(texts)?,
        })
    }
}

/// A ReplicaSet as read: only who owns it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ReplicaSet {
    pub(crate) metadata: Meta,
}

impl ReplicaSet {
    /// The Deployment that owns it, if one does.
    pub(crate) fn deployment(&self) -> Option<&str> {
        (self.metadata.controller())
            .filter(|o| o.kind == "Deployment")
            .map(|o| o.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen<W: Wire>(json: &str) -> Seen<W> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn reads_a_pod_and_its_owner() {
        let pod = seen::<Pod>(
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"cart-1","namespace":"shop",
            "uid":"u1","resourceVersion":"42","labels":{"a":"b"},
            "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"cart-7d","uid":"r","controller":true}]},
            "spec":{"nodeName":"node-a","containers":[{"name":"c","image":"i"}]},
            "status":{"phase":"Running","podIP":"10.1.0.7","podIPs":[{"ip":"10.1.0.7"},{"ip":"fd00::7"}]}}"#,
        );
        assert_eq!(
            kube::Resource::meta(&pod).resource_version.as_deref(),
            Some("42")
        );
        let facts = pod.object.unwrap().facts().unwrap();
        assert_eq!(&*facts.name, "cart-1");
        assert_eq!(facts.owner, Some(Workload::ReplicaSet("cart-7d".into())));
        assert_eq!(facts.ips.len(), 2);
    }

    #[test]
    fn a_malformed_object_is_seen_but_not_read() {
        let pod = seen::<Pod>(r#"{"metadata":{"name":5,"resourceVersion":"7"}}"#);
        assert!(pod.object.is_none());
        assert_eq!(
            kube::Resource::meta(&pod).resource_version.as_deref(),
            Some("7")
        );
        let no_uid = seen::<Pod>(r#"{"metadata":{"name":"p","namespace":"n"}}"#);
        assert!(no_uid.object.unwrap().facts().is_none());
        let bad_ip = seen::<Service>(
            r#"{"metadata":{"name":"s","namespace":"n"},"spec":{"clusterIP":"not-an-ip"}}"#,
        );
        assert!(bad_ip.object.unwrap().facts().is_none());
    }

    #[test]
    fn finished_and_host_network_pods_claim_no_address() {
        for extra in [r#""spec":{"hostNetwork":true}"#, r#""spec":{}"#] {
            let phase = if extra.contains("host") {
                "Running"
            } else {
                "Succeeded"
            };
            let json = format!(
                r#"{{"metadata":{{"name":"p","namespace":"n","uid":"u"}},{extra},
                "status":{{"phase":"{phase}","podIP":"10.0.0.1"}}}}"#
            );
            assert!(seen::<Pod>(&json)
                .object
                .unwrap()
                .facts()
                .unwrap()
                .ips
                .is_empty());
        }
    }

    #[test]
    fn reads_services_nodes_and_replica_sets() {
        let service = seen::<Service>(
            r#"{"metadata":{"name":"db","namespace":"shop"},"spec":{"clusterIP":"10.96.0.10","clusterIPs":["10.96.0.10"]}}"#,
        );
        assert_eq!(service.object.unwrap().facts().unwrap().ips.len(), 1);
        let headless = seen::<Service>(
            r#"{"metadata":{"name":"h","namespace":"n"},"spec":{"clusterIP":"None"}}"#,
        );
        assert!(headless.object.unwrap().facts().unwrap().ips.is_empty());
        let node = seen::<Node>(
            r#"{"metadata":{"name":"node-a"},"status":{"addresses":[{"type":"Hostname","address":"a"},{"type":"InternalIP","address":"192.168.1.5"}]}}"#,
        );
        assert_eq!(
            node.object.unwrap().facts().unwrap().ips,
            ["192.168.1.5".parse::<IpAddr>().unwrap()]
        );
        let rs = seen::<ReplicaSet>(
            r#"{"metadata":{"name":"cart-7d","namespace":"shop","ownerReferences":[{"kind":"Deployment","name":"cart","controller":true}]}}"#,
        );
        assert_eq!(rs.object.unwrap().deployment(), Some("cart"));
    }
}
