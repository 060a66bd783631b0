//! The `processor.containers` section.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where container names come from.
///
/// ```yaml
/// processor:
///   containers:
///     docker_socket: /var/run/docker.sock
///     containerd_socket: /run/containerd/containerd.sock
///     containerd_namespaces: [k8s.io, default]
///     keep_removed: 10m
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Ask the Docker Engine API for container names, images and labels.
    /// By default, on: a host without Docker logs one line and goes on.
    pub docker: bool,
    /// The Docker Engine API's socket. By default, `/var/run/docker.sock`.
    pub docker_socket: PathBuf,
    /// Ask containerd's API for the containers Docker does not make
    /// (Kubernetes' CRI, nerdctl). By default, on.
    pub containerd: bool,
    /// containerd's socket. By default, `/run/containerd/containerd.sock`.
    pub containerd_socket: PathBuf,
    /// The containerd namespaces whose containers are named. By default,
    /// `k8s.io` (the CRI's) and `default` (nerdctl's); Docker's `moby`
    /// holds neither names nor images.
    pub containerd_namespaces: Vec<String>,
    /// How long a removed container stays known, so that the window its
    /// last connections fall in is still named: at least the processor's
    /// interval. By default, 10 minutes (two 5-minute windows).
    #[serde(with = "receiver::duration_serde")]
    pub keep_removed: Duration,
    /// Containers held at most; more are counted in the runtime errors and
    /// left unnamed. By default, 10,000.
    pub max_containers: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            docker: true,
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            containerd: true,
            containerd_socket: PathBuf::from("/run/containerd/containerd.sock"),
            containerd_namespaces: vec!["k8s.io".to_owned(), "default".to_owned()],
            keep_removed: Duration::from_secs(600),
            max_containers: 10_000,
        }
    }
}
