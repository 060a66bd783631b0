//! flowtel's container names: the name, image and labels of the container
//! a connection's process runs in, from its runtime's API, by container id
//! (the id comes from the process's cgroup, see `receiver::ContainerPath`).
//!
//! [`ContainerIndex`] is what the processor looks names up in: a map that
//! never blocks the lookup. [`docker::watch`] keeps it up to date from the
//! Docker Engine API, [`containerd::watch`] from containerd's (Kubernetes'
//! CRI, nerdctl): a list at start, then the container events; a
//! runtime that is missing, hangs or answers garbage leaves the names
//! absent, logs one line and counts it ([`ContainerIndex::runtime_errors`]).
//!
//! ```
//! use containers::{ContainerFacts, ContainerIndex, Image, Runtime};
//! let index = ContainerIndex::new(100);
//! index.insert(Runtime::Docker, "3f4a".into(), ContainerFacts {
//!     name: "billing".into(),
//!     image: Image::parse("registry:5000/shop/billing:1.2"),
//!     labels: Default::default(),
//! });
//! let facts = index.get("3f4a").unwrap();
//! assert_eq!(facts.image.name, "registry:5000/shop/billing");
//! assert_eq!(facts.image.tag.as_deref(), Some("1.2"));
//! ```

#![deny(missing_docs)]

mod config;
pub mod containerd;
pub mod docker;
mod image;
mod index;
mod retry;

pub use config::Config;
pub use image::Image;
pub use index::{ContainerFacts, ContainerIndex, Runtime};
