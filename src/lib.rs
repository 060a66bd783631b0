//! The parts of the `flowtel` binary that other crates use: the
//! configuration file (for the fuzz targets and the bundle test).

pub mod config;
