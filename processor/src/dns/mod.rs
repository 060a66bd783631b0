//! DNS: the receiver's messages matched into lookups ([`Lookups`]), the
//! names their answers give to addresses ([`NameCache`]), and a window's
//! lookups folded into `dns.*` series ([`DnsSeries`]).

mod config;
mod histogram;
mod lookups;
mod names;
mod series;

pub use config::DnsConfig;
pub use histogram::{LatencyHistogram, LATENCY_BOUNDS_SECS};
pub use lookups::{DnsLookup, Lookups, TIMEOUT};
pub use names::NameCache;
pub use series::{attributes, fold_dns, DnsHealth, DnsSeries, DnsStats, DNS_ATTRIBUTES};
