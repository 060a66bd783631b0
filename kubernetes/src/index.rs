//! The index: pods by UID and remote ends by IP, in memory, each lookup one
//! hash map read under a read lock.
//!
//! A deleted object is not forgotten at once: it is marked gone and still
//! answers for `keep_deleted`, so that the window a short-lived pod was seen
//! in still gets its names. After that it answers nothing, whether or not
//! it was swept from memory yet; an address a new object claims is the new
//! object's at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use crate::facts::{NodeFacts, PodFacts, Remote, ServiceFacts, Workload};
use crate::health::Health;

type Map<K, V> = HashMap<K, V, RandomState>;
/// A namespaced object's key: namespace, name.
type Named = (Arc<str>, Arc<str>);

/// Pods by UID, and what each IP address is; cheap to clone, shared by the
/// watchers (writers) and the processor (reader).
#[derive(Debug, Clone)]
pub struct Index {
    state: Arc<RwLock<State>>,
    keep_deleted: Duration,
    health: Health,
}

/// One of the four kinds the index follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Pod = 0,
    Service = 1,
    Node = 2,
    ReplicaSet = 3,
}

#[derive(Debug, Default)]
struct State {
    pods: Map<Arc<str>, Entry<Arc<PodFacts>>>,
    /// ReplicaSet -> the Deployment that owns it, if one does.
    replica_sets: Map<Named, Entry<Option<Arc<str>>>>,
    services: Map<Named, Entry<Arc<ServiceFacts>>>,
    nodes: Map<Arc<str>, Entry<Arc<NodeFacts>>>,
    ips: Map<IpAddr, Entry<Claim>>,
    /// Each kind's list generation: an object not seen by the newest list
    /// is gone.
    generations: [u64; 4],
}

#[derive(Debug, Clone)]
struct Entry<T> {
    value: T,
    /// The list generation that last saw it.
    seen: u64,
    /// When it was deleted.
    gone: Option<Instant>,
}

/// Whose an IP address is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    Pod(Arc<str>),
    Service(Named),
    Node(Arc<str>),
}

impl<T> Entry<T> {
    fn live(&self, now: Instant, keep: Duration) -> Option<&T> {
        match self.gone {
            Some(gone) if now.saturating_duration_since(gone) >= keep => None,
            _ => Some(&self.value),
        }
    }
}

impl Index {
    /// An empty index whose deleted objects answer for `keep_deleted`.
    pub fn new(keep_deleted: Duration) -> Index {
        Index {
            state: Arc::default(),
            keep_deleted,
            health: Health::default(),
        }
    }

    /// The watchers' health counters.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// How long deleted objects still answer.
    pub fn keep_deleted(&self) -> Duration {
        self.keep_deleted
    }

    /// The pod with UID `uid`.
    pub fn pod(&self, uid: &str) -> Option<Arc<PodFacts>> {
        self.pod_at(uid, Instant::now())
    }

    /// `pod`'s workload: its owner, a ReplicaSet resolved to the Deployment
    /// that owns it.
    pub fn workload(&self, pod: &PodFacts) -> Option<Workload> {
        let state = self.read();
        state.workload(pod, Instant::now(), self.keep_deleted)
    }

    /// What `address` is: a pod's IP, a Service's ClusterIP or a node's
    /// InternalIP.
    pub fn remote(&self, address: IpAddr) -> Option<Remote> {
        self.remote_at(address, Instant::now())
    }

    /// How many pods, Services, nodes and ReplicaSets the index holds
    /// (deleted ones not yet swept included).
    pub fn len(&self) -> usize {
        let s = self.read();
        s.pods.len() + s.services.len() + s.nodes.len() + s.replica_sets.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or replaces a pod.
    pub fn apply_pod(&self, pod: PodFacts) {
        self.apply_pod_at(pod, Instant::now());
    }

    /// Marks a pod deleted.
    pub fn delete_pod(&self, uid: &str) {
        self.delete_pod_at(uid, Instant::now());
    }

    /// Adds or replaces a ReplicaSet and the Deployment that owns it.
    pub fn apply_replica_set(&self, namespace: &str, name: &str, deployment: Option<&str>) {
        let mut state = self.write();
        let seen = state.generations[Kind::ReplicaSet as usize];
        state.replica_sets.insert(
            (namespace.into(), name.into()),
            Entry {
                value: deployment.map(Arc::from),
                seen,
                gone: None,
            },
        );
    }

    /// Marks a ReplicaSet deleted.
    pub fn delete_replica_set(&self, namespace: &str, name: &str) {
        let now = Instant::now();
        let mut state = self.write();
        let key: Named = (namespace.into(), name.into());
        if let Some(entry) = state.replica_sets.get_mut(&key) {
            entry.gone.get_or_insert(now);
        }
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&self, service: ServiceFacts) {
        let now = Instant::now();
        let mut state = self.write();
        let key: Named = (Arc::clone(&service.namespace), Arc::clone(&service.name));
        let service = Arc::new(service);
        let seen = state.generations[Kind::Service as usize];
        let old_ips = replace(&mut state.services, key.clone(), &service, seen)
            .map(|o| o.ips.clone())
            .unwrap_or_default();
        state.claim(&old_ips, &service.ips, Claim::Service(key), now);
    }

    /// Marks a Service deleted.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        let now = Instant::now();
        let mut state = self.write();
        let key: Named = (namespace.into(), name.into());
        let Some(entry) = state.services.get_mut(&key) else {
            return;
        };
        entry.gone.get_or_insert(now);
        let ips = entry.value.ips.clone();
        state.release(&ips, &Claim::Service(key), now);
    }

    /// Adds or replaces a node.
    pub fn apply_node(&self, node: NodeFacts) {
        let now = Instant::now();
        let mut state = self.write();
        let node = Arc::new(node);
        let seen = state.generations[Kind::Node as usize];
        let old_ips = replace(&mut state.nodes, Arc::clone(&node.name), &node, seen)
            .map(|o| o.ips.clone())
            .unwrap_or_default();
        state.claim(
            &old_ips,
            &node.ips,
            Claim::Node(Arc::clone(&node.name)),
            now,
        );
    }

    /// Marks a node deleted.
    pub fn delete_node(&self, name: &str) {
        let now = Instant::now();
        let mut state = self.write();
        let Some(entry) = state.nodes.get_mut(name) else {
            return;
        };
        entry.gone.get_or_insert(now);
        let ips = entry.value.ips.clone();
        let claim = Claim::Node(Arc::clone(&entry.value.name));
        state.release(&ips, &claim, now);
    }

    /// A new list of `kind` starts: what it does not list is gone when it
    /// ends.
    pub(crate) fn list_started(&self, kind: Kind) {
        self.write().generations[kind as usize] += 1;
    }

    /// A list of `kind` ended: every object of that kind it did not list is
    /// marked deleted.
    pub(crate) fn list_done(&self, kind: Kind) {
        let now = Instant::now();
        let mut state = self.write();
        let generation = state.generations[kind as usize];
        let unlisted = |seen: u64, gone: Option<Instant>| seen < generation && gone.is_none();
        match kind {
            Kind::Pod => {
                let uids: Vec<Arc<str>> = (state.pods.iter())
                    .filter(|(_, e)| unlisted(e.seen, e.gone))
                    .map(|(uid, _)| Arc::clone(uid))
                    .collect();
                for uid in uids {
                    state.delete_pod(&uid, now);
                }
            }
            Kind::Service => {
                let keys: Vec<Named> = (state.services.iter())
                    .filter(|(_, e)| unlisted(e.seen, e.gone))
                    .map(|(k, _)| k.clone())
                    .collect();
                drop(state);
                for (namespace, name) in keys {
                    self.delete_service(&namespace, &name);
                }
            }
            Kind::Node => {
                let names: Vec<Arc<str>> = (state.nodes.iter())
                    .filter(|(_, e)| unlisted(e.seen, e.gone))
                    .map(|(k, _)| Arc::clone(k))
                    .collect();
                drop(state);
                for name in names {
                    self.delete_node(&name);
                }
            }
            Kind::ReplicaSet => {
                for entry in state.replica_sets.values_mut() {
                    if unlisted(entry.seen, entry.gone) {
                        entry.gone = Some(now);
                    }
                }
            }
        }
    }

    /// Forgets what was deleted longer than `keep_deleted` ago.
    pub fn sweep(&self) {
        let now = Instant::now();
        let keep = self.keep_deleted;
        let expired =
            |gone: Option<Instant>| gone.is_some_and(|g| now.saturating_duration_since(g) >= keep);
        let mut state = self.write();
        state.pods.retain(|_, e| !expired(e.gone));
        state.replica_sets.retain(|_, e| !expired(e.gone));
        state.services.retain(|_, e| !expired(e.gone));
        state.nodes.retain(|_, e| !expired(e.gone));
        state.ips.retain(|_, e| !expired(e.gone));
    }

    pub(crate) fn pod_at(&self, uid: &str, now: Instant) -> Option<Arc<PodFacts>> {
        let state = self.read();
        state.pods.get(uid)?.live(now, self.keep_deleted).cloned()
    }

    pub(crate) fn remote_at(&self, address: IpAddr, now: Instant) -> Option<Remote> {
        let keep = self.keep_deleted;
        let state = self.read();
        Some(match state.ips.get(&address)?.live(now, keep)? {
            Claim::Pod(uid) => {
                let pod = state.pods.get(uid)?.value.clone();
                let workload = state.workload(&pod, now, keep);
                Remote::Pod(pod, workload)
            }
            Claim::Service(key) => Remote::Service(Arc::clone(&state.services.get(key)?.value)),
            Claim::Node(name) => Remote::Node(Arc::clone(&state.nodes.get(name)?.value)),
        })
    }

    pub(crate) fn apply_pod_at(&self, pod: PodFacts, now: Instant) {
        let mut state = self.write();
        let pod = Arc::new(pod);
        let seen = state.generations[Kind::Pod as usize];
        let old_ips = replace(&mut state.pods, Arc::clone(&pod.uid), &pod, seen)
            .map(|o| o.ips.clone())
            .unwrap_or_default();
        state.claim(&old_ips, &pod.ips, Claim::Pod(Arc::clone(&pod.uid)), now);
    }

    pub(crate) fn delete_pod_at(&self, uid: &str, now: Instant) {
        self.write().delete_pod(uid, now);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Puts `value` live at `key`, seen by list `seen`; returns what was there.
fn replace<K: std::hash::Hash + Eq, T>(
    map: &mut Map<K, Entry<Arc<T>>>,
    key: K,
    value: &Arc<T>,
    seen: u64,
) -> Option<Arc<T>> {
    let entry = Entry {
        value: Arc::clone(value),
        seen,
        gone: None,
    };
    map.insert(key, entry).map(|old| old.value)
}

impl State {
    fn workload(&self, pod: &PodFacts, now: Instant, keep: Duration) -> Option<Workload> {
        match &pod.owner {
            Some(Workload::ReplicaSet(name)) => {
                let key = (Arc::clone(&pod.namespace), Arc::clone(name));
                match self.replica_sets.get(&key).and_then(|e| e.live(now, keep)) {
                    Some(Some(deployment)) => Some(Workload::Deployment(Arc::clone(deployment))),
                    _ => Some(Workload::ReplicaSet(Arc::clone(name))),
                }
            }
            owner => owner.clone(),
        }
    }

    fn delete_pod(&mut self, uid: &str, now: Instant) {
        let Some(entry) = self.pods.get_mut(uid) else {
            return;
        };
        entry.gone.get_or_insert(now);
        let ips = entry.value.ips.clone();
        let claim = Claim::Pod(Arc::clone(&entry.value.uid));
        self.release(&ips, &claim, now);
    }

    /// `claim` now holds `new` instead of `old`: the addresses it left are
    /// released, the new ones are its own (a reused address changes hands
    /// at once).
    fn claim(&mut self, old: &[IpAddr], new: &[IpAddr], claim: Claim, now: Instant) {
        let left: Vec<IpAddr> = old.iter().filter(|ip| !new.contains(ip)).copied().collect();
        self.release(&left, &claim, now);
        for ip in new {
            self.ips.insert(
                *ip,
                Entry {
                    value: claim.clone(),
                    seen: 0,
                    gone: None,
                },
            );
        }
    }

    /// Marks `claim`'s hold on `ips` gone, where it still holds them.
    fn release(&mut self, ips: &[IpAddr], claim: &Claim, now: Instant) {
        for ip in ips {
            if let Some(entry) = self.ips.get_mut(ip) {
                if entry.value == *claim {
                    entry.gone.get_or_insert(now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
