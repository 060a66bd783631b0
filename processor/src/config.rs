//! The `processor` section of the configuration.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::Error;

/// Settings of the processor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Length of one window. Windows are aligned to wall-clock multiples of
    /// it (counted from the Unix epoch), so that every host's windows line
    /// up: 5-minute windows start at :00, :05, :10 ... At least 1s.
    /// Default: 5m.
    #[serde(deserialize_with = "human_duration")]
    pub interval: Duration,
}

impl Config {
    /// The shortest window length accepted.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

    /// Checks what serde cannot: that the interval is at least
    /// [`Config::MIN_INTERVAL`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.interval < Self::MIN_INTERVAL {
            return Err(Error::IntervalTooShort {
                interval: self.interval,
            });
        }
        Ok(())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(5 * 60),
        }
    }
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_interval_is_five_minutes() {
        assert_eq!(Config::default().interval, Duration::from_secs(300));
        assert!(Config::default().validate().is_ok());
    }

    #[test]
    fn rejects_interval_under_one_second() {
        let config = Config {
            interval: Duration::from_millis(999),
        };
        let err = config.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the window interval 999ms is shorter than the minimum of 1s"
        );
        assert!(Config {
            interval: Duration::from_secs(1)
        }
        .validate()
        .is_ok());
    }
}
