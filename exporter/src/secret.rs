//! A value that must never be printed: API keys and header values.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A secret string. `Debug`, `Display` and `Serialize` print `<redacted>`;
/// only [`Secret::expose`] gives the value, to put it on the wire.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

/// What a secret prints as.
pub const REDACTED: &str = "<redacted>";

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the request that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let key = Secret::new("abc123");
        assert_eq!(format!("{key} {key:?}"), "<redacted> <redacted>");
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"<redacted>\"");
        assert_eq!(key.expose(), "abc123");
    }
}
