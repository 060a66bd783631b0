//! The watchers: one kube-runtime watcher per kind, each on its own task,
//! feeding the [`Index`]. The watcher lists, then watches from the list's
//! resource version; a watch that ends is resumed, one answered 410 Gone (or
//! whose resource version is lost) lists again, and errors are retried with
//! a backoff. All pods of the cluster are watched, not only this node's:
//! the remote end of a flow is any pod's IP.

use std::fmt::Debug;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::Api;

use crate::config::Config;
use crate::index::{Index, Kind};
use crate::objects::{Node, Pod, ReplicaSet, Seen, Service, Wire};

/// Why the API server could not be reached or configured.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read.
    #[error(
        "could not read the kubeconfig {path}: {source}; check processor.kubernetes.kubeconfig"
    )]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No in-cluster service account and no kubeconfig.
    #[error("could not find the Kubernetes API server: {0}; run in a pod with a service account, or set processor.kubernetes.kubeconfig or KUBECONFIG")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be made (a bad certificate, a bad URL).
    #[error("could not make a client for the Kubernetes API server: {0}")]
    Client(#[source] kube::Error),
    /// The API server did not answer.
    #[error("the Kubernetes API server at {url} did not answer: {source}")]
    Unanswered {
        /// Where it was asked.
        url: String,
        /// Why.
        source: kube::Error,
    },
}

/// A client of the API server `config` names.
pub async fn client(config: &Config) -> Result<(kube::Client, String), Error> {
    let client_config = match &config.kubeconfig {
        Some(path) => {
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?;
            let options = kube::config::KubeConfigOptions::default();
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|source| Error::Kubeconfig {
                    path: path.display().to_string(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    let url = client_config.cluster_url.to_string();
    let client = kube::Client::try_from(client_config).map_err(Error::Client)?;
    Ok((client, url))
}

/// Asks the API server its version: `"v1.31.2 at https://10.96.0.1/"`.
pub async fn probe(config: &Config) -> Result<String, Error> {
    let (client, url) = client(config).await?;
    match client.apiserver_version().await {
        Ok(info) => Ok(format!("{} at {url}", info.git_version)),
        Err(source) => Err(Error::Unanswered { url, source }),
    }
}

impl Index {
    /// Starts watching the API server `config` names, on the current tokio
    /// runtime, and returns the index at once: it fills as the lists
    /// arrive. Deleted objects answer for `keep_deleted`. Fails only when
    /// no client can be made; an API server that does not answer is
    /// retried, counted and logged.
    pub async fn start(config: &Config, keep_deleted: Duration) -> Result<Index, Error> {
        let (client, url) = client(config).await?;
        let index = Index::new(keep_deleted);
        tracing::info!("flowtel: watching pods, services, nodes and replica sets at {url}");
        spawn::<Pod>(
            &client,
            &index,
            Kind::Pod,
            |index, pod| match pod.facts() {
                Some(facts) => {
                    index.apply_pod(facts);
                    true
                }
                None => false,
            },
            |index, pod| pod.uid().map(|uid| index.delete_pod(uid)).is_some(),
        );
        spawn::<Service>(
            &client,
            &index,
            Kind::Service,
            |index, service| match service.facts() {
                Some(facts) => {
                    index.apply_service(facts);
                    true
                }
                None => false,
            },
            |index, service| {
                (service.metadata.namespace_name())
                    .map(|(namespace, name)| index.delete_service(namespace, name))
                    .is_some()
            },
        );
        spawn::<Node>(
            &client,
            &index,
            Kind::Node,
            |index, node| match node.facts() {
                Some(facts) => {
                    index.apply_node(facts);
                    true
                }
                None => false,
            },
            |index, node| node.facts().map(|n| index.delete_node(&n.name)).is_some(),
        );
        spawn::<ReplicaSet>(
            &client,
            &index,
            Kind::ReplicaSet,
            |index, rs| {
                (rs.metadata.namespace_name())
                    .map(|(namespace, name)| {
                        index.apply_replica_set(namespace, name, rs.deployment())
                    })
                    .is_some()
            },
            |index, rs| {
                (rs.metadata.namespace_name())
                    .map(|(namespace, name)| index.delete_replica_set(namespace, name))
                    .is_some()
            },
        );
        let sweeper = index.clone();
        let every = (keep_deleted / 2).max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                ticks.tick().await;
                sweeper.sweep();
            }
        });
        Ok(index)
    }
}

/// Starts the watcher of `W`'s objects; `apply` and `delete` return false
/// for an object they could not read.
fn spawn<W: Wire>(
    client: &kube::Client,
    index: &Index,
    kind: Kind,
    apply: fn(&Index, &W) -> bool,
    delete: fn(&Index, &W) -> bool,
) where
    Seen<W>: Debug,
{
    let api: Api<Seen<W>> = Api::all(client.clone());
    let index = index.clone();
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        let mut lists = 0_u64;
        let mut failing = false;
        while let Some(event) = events.next().await {
            let health = index.health();
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    health.api_error();
                    if !failing {
                        tracing::warn!(
                            "flowtel: watching Kubernetes {}: {error}; retrying with a backoff, names from it may be missing or stale meanwhile",
                            W::PLURAL
                        );
                    }
                    failing = true;
                    continue;
                }
            };
            if failing {
                tracing::info!("flowtel: watching Kubernetes {} again", W::PLURAL);
                failing = false;
            }
            let read = match event {
                Event::Init => {
                    lists += 1;
                    if lists > 1 {
                        health.relisted();
                    }
                    index.list_started(kind);
                    true
                }
                Event::InitDone => {
                    index.list_done(kind);
                    true
                }
                Event::InitApply(seen) | Event::Apply(seen) => {
                    seen.object.as_ref().is_some_and(|o| apply(&index, o))
                }
                Event::Delete(seen) => seen.object.as_ref().is_some_and(|o| delete(&index, o)),
            };
            if !read {
                health.malformed();
                tracing::debug!(
                    "flowtel: skipped a malformed Kubernetes object of {}",
                    W::PLURAL
                );
            }
        }
    });
}
