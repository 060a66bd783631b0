//! Durations in the configuration are human strings (`10s`, `500ms`,
//! `1h30m`), for every stage's section: `#[serde(with =
//! "receiver::duration_serde")]`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Reads `"10s"`, `"1m 30s"`, `"500ms"`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}): write it like 500ms, 10s, 5m or 1h30m"
        ))
    })
}

/// Writes the form [`deserialize`] reads.
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*value).to_string())
}
