//! The containers known, by id: what the processor looks names up in.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::Image;

/// What a runtime says of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFacts {
    /// The container's name, without Docker's leading `/`.
    pub name: String,
    /// The image it was made from.
    pub image: Image,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
}

/// The containers known, by id; cheap to clone (one shared table). Lookups
/// take a read lock the watcher holds only to insert or remove one entry.
#[derive(Debug, Clone)]
pub struct ContainerIndex {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    known: RwLock<HashMap<String, Known>>,
    limit: usize,
    runtime_errors: AtomicU64,
}

#[derive(Debug)]
struct Known {
    facts: Arc<ContainerFacts>,
    /// Who told it: a runtime's fresh list speaks only for its own.
    runtime: Runtime,
    removed_at: Option<Instant>,
}

/// A runtime whose API names containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// The Docker Engine API.
    Docker,
    /// containerd's gRPC API.
    Containerd,
}

impl ContainerIndex {
    /// An empty index holding at most `limit` containers.
    pub fn new(limit: usize) -> ContainerIndex {
        ContainerIndex {
            inner: Arc::new(Inner {
                known: RwLock::default(),
                limit,
                runtime_errors: AtomicU64::new(0),
            }),
        }
    }

    /// The container `id` (the full 64-hex-digit id), if known.
    pub fn get(&self, id: &str) -> Option<Arc<ContainerFacts>> {
        let known = self.inner.known.read().unwrap_or_else(|e| e.into_inner());
        known.get(id).map(|k| Arc::clone(&k.facts))
    }

    /// Adds or replaces container `id` (a renamed one, say), as `runtime`
    /// tells it; a full index counts a runtime error and leaves a new
    /// container out.
    pub fn insert(&self, runtime: Runtime, id: String, facts: ContainerFacts) {
        let mut known = self.inner.known.write().unwrap_or_else(|e| e.into_inner());
        if known.len() >= self.inner.limit && !known.contains_key(&id) {
            drop(known);
            self.count_error();
            return;
        }
        let facts = Arc::new(facts);
        known.insert(
            id,
            Known {
                facts,
                runtime,
                removed_at: None,
            },
        );
    }

    /// Container `id` was removed at `at`: it stays known until
    /// [`forget_removed`](Self::forget_removed) says it is old enough.
    pub fn removed(&self, id: &str, at: Instant) {
        let mut known = self.inner.known.write().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = known.get_mut(id) {
            entry.removed_at.get_or_insert(at);
        }
    }

    /// Forgets, every 30 s until the task is dropped, the containers
    /// removed more than `keep` ago: one sweeper for every runtime, which
    /// goes on while a runtime is down.
    pub async fn sweep(self, keep: Duration) {
        let mut every = tokio::time::interval(Duration::from_secs(30));
        loop {
            every.tick().await;
            self.forget_removed(Instant::now(), keep);
        }
    }

    /// Forgets the containers removed more than `keep` before `now`.
    pub fn forget_removed(&self, now: Instant, keep: Duration) {
        let mut known = self.inner.known.write().unwrap_or_else(|e| e.into_inner());
        known.retain(|_, k| k.removed_at.is_none_or(|at| now.duration_since(at) <= keep));
    }

    /// After a fresh list of every container of `runtime`: its known ones
    /// not in it were removed while no events came; they are removed as of
    /// `at`.
    pub fn listed(&self, runtime: Runtime, alive: &[String], at: Instant) {
        let alive: std::collections::HashSet<&String> = alive.iter().collect();
        let mut known = self.inner.known.write().unwrap_or_else(|e| e.into_inner());
        for (id, entry) in known.iter_mut() {
            if entry.runtime == runtime && !alive.contains(id) {
                entry.removed_at.get_or_insert(at);
            }
        }
    }

    /// Containers known now, removed ones included.
    pub fn len(&self) -> usize {
        self.inner
            .known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Whether no container is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts one failure to ask the runtime (missing socket, timeout, an
    /// error status, garbage) or a container left out of the full index.
    pub fn count_error(&self) {
        self.inner.runtime_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The failures counted so far.
    pub fn runtime_errors(&self) -> u64 {
        self.inner.runtime_errors.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str) -> ContainerFacts {
        ContainerFacts {
            name: name.into(),
            ..ContainerFacts::default()
        }
    }

    #[test]
    fn a_removed_container_is_named_until_it_is_old_enough() {
        let index = ContainerIndex::new(10);
        let t0 = Instant::now();
        index.insert(Runtime::Docker, "a".into(), facts("web"));
        index.removed("a", t0);
        index.forget_removed(t0 + Duration::from_secs(60), Duration::from_secs(600));
        assert_eq!(index.get("a").unwrap().name, "web");
        index.forget_removed(t0 + Duration::from_secs(601), Duration::from_secs(600));
        assert!(index.get("a").is_none());
    }

    #[test]
    fn containers_missing_from_a_fresh_list_are_removed() {
        let index = ContainerIndex::new(10);
        let t0 = Instant::now();
        index.insert(Runtime::Docker, "a".into(), facts("web"));
        index.insert(Runtime::Docker, "b".into(), facts("db"));
        index.insert(Runtime::Containerd, "c".into(), facts("cri"));
        index.listed(Runtime::Docker, &["b".to_owned()], t0);
        index.forget_removed(t0 + Duration::from_secs(2), Duration::from_secs(1));
        assert!(index.get("a").is_none());
        assert_eq!(index.get("b").unwrap().name, "db");
        assert_eq!(index.get("c").unwrap().name, "cri", "another runtime's");
    }

    #[test]
    fn a_full_index_counts_what_it_leaves_out() {
        let index = ContainerIndex::new(1);
        index.insert(Runtime::Docker, "a".into(), facts("web"));
        index.insert(Runtime::Docker, "b".into(), facts("db"));
        index.insert(Runtime::Docker, "a".into(), facts("web2"));
        assert!(index.get("b").is_none());
        assert_eq!(index.get("a").unwrap().name, "web2");
        assert_eq!(index.runtime_errors(), 1);
    }
}
