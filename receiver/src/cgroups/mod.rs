//! The container and pod of each cgroup a connection's process ran in.

pub mod path;
pub mod table;

pub use path::ContainerPath;
pub use table::CgroupTable;
