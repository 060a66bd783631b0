//! flowtel's view of a Kubernetes cluster: which pod a pod UID is (its
//! namespace, name, node and workload) and what an IP address is (a pod, a
//! Service's ClusterIP, a node), kept up to date from the API server's
//! watches of Pods, Services, Nodes and ReplicaSets.
//!
//! [`Index::start`] starts the watchers on the current tokio runtime; the
//! [`Index`] answers lookups at once from memory, never waiting on the API
//! server. Only what is looked up is kept of each object (converted as it
//! arrives, one object at a time), so a cluster of 50,000 pods costs a few
//! hundred bytes each.
//!
//! ```
//! use kubernetes::{Index, PodFacts, Workload};
//! use std::time::Duration;
//!
//! let index = Index::new(Duration::from_secs(300));
//! index.apply_pod(PodFacts {
//!     uid: "0b6a1c3e".into(),
//!     namespace: "shop".into(),
//!     name: "cart-7d9f-x2".into(),
//!     node: Some("node-a".into()),
//!     owner: Some(Workload::ReplicaSet("cart-7d9f".into())),
//!     host_network: false,
//!     ips: vec!["10.1.0.7".parse().unwrap()],
//! });
//! assert_eq!(&*index.pod("0b6a1c3e").unwrap().name, "cart-7d9f-x2");
//! ```

#![deny(missing_docs)]

mod config;
mod facts;
mod health;
mod index;
mod objects;
mod watch;

pub use config::Config;
pub use facts::{NodeFacts, PodFacts, Remote, ServiceFacts, Workload};
pub use health::{Health, HealthCounts};
pub use index::Index;
pub use watch::{client, probe, Error};
