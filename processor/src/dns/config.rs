//! The `processor.dns` section of the configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How lookups are matched and names kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// A query without an answer for this long counts as a lookup with
    /// `dns.response.code=timeout`. At least 100ms. Default: 15s.
    #[serde(
        deserialize_with = "receiver::duration_serde::deserialize",
        serialize_with = "receiver::duration_serde::serialize"
    )]
    pub timeout: Duration,
    /// The most queries awaiting their answer; queries beyond it are not
    /// matched, and counted (`flowtel.dns.pending.overflowed`). Default: 10000.
    pub max_pending: usize,
    /// The most names kept for addresses, all namespaces together; names
    /// beyond it are not kept, and counted (`flowtel.dns.names.dropped`).
    /// Default: 65536.
    pub max_names: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            timeout: Duration::from_secs(15),
            max_pending: 10_000,
            max_names: 65_536,
        }
    }
}

impl DnsConfig {
    /// What the types cannot check, as one sentence.
    pub fn problem(&self) -> Option<String> {
        if self.timeout < Duration::from_millis(100) {
            return Some(format!(
                "processor.dns.timeout {:?} is too short: use at least 100ms",
                self.timeout
            ));
        }
        if self.max_pending == 0 || self.max_names == 0 {
            return Some("processor.dns.max_pending and max_names must be at least 1".to_owned());
        }
        None
    }
}
