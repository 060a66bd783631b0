//! The container and pod of each cgroup a connection's process ran in.

pub mod path;

pub use path::ContainerPath;
