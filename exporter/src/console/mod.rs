//! The console exporters: flows on a terminal ([`Table`]) or as JSON lines
//! for other programs ([`JsonLines`]). [`exporter`] builds the one a
//! [`Format`] names.

mod dns;
mod format;
mod json;
mod table;
pub mod units;

pub use format::{exporter, Format, UnknownFormat};
pub use json::JsonLines;
pub use table::Table;
