//! The `processor` section of the configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::dns::DnsConfig;
use crate::end_names::NAMED_ATTRIBUTES;
use crate::flow::BUILT_IN_ATTRIBUTES;
use crate::mapping::Mappings;
use crate::Error;

/// Settings of the processor.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default, try_from = "Raw")]
pub struct Config {
    /// Length of one window. Windows are aligned to wall-clock multiples of
    /// it (counted from the Unix epoch), so that every host's windows line
    /// up: 5-minute windows start at :00, :05, :10 ... At least 1s.
    /// Default: 5m.
    #[serde(serialize_with = "receiver::duration_serde::serialize")]
    pub interval: Duration,
    /// The attributes that key a window's series, like a query's group-by;
    /// the others are summed away. `None` (the default): every attribute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<String>>,
    /// The most series one window holds; beyond it the smallest series are
    /// summed into one series marked `flowtel.overflow=true`. Default: 10000.
    pub max_series: usize,
    /// Rules that name the ends of flows.
    pub mappings: Mappings,
    /// Where container names, images and labels come from.
    pub containers: containers::Config,
    /// Names from the Kubernetes API for both ends (`source.k8s.*` by the
    /// local pod's UID, `destination.k8s.*` by the remote IP). Default:
    /// none, the API is not asked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<kubernetes::Config>,
    /// How DNS lookups are matched and names kept.
    pub dns: DnsConfig,
}

impl Config {
    /// The shortest window length accepted.
    pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

    /// Checks what the field types cannot. Runs when the section is read,
    /// so a bad file is refused with the section's position.
    pub fn validate(&self) -> Result<(), Error> {
        if self.interval < Self::MIN_INTERVAL {
            return Err(Error::IntervalTooShort {
                interval: self.interval,
            });
        }
        if self.max_series == 0 {
            return Err(Error::NoSeries);
        }
        if let Some(problem) = self.dns.problem() {
            return Err(Error::Dns(problem));
        }
        if let Some(selected) = &self.attributes {
            let known = self.known_attributes();
            for name in selected {
                if !known.contains(name) && !is_label_attribute(name) {
                    return Err(Error::UnknownAttribute {
                        name: name.clone(),
                        hint: hint(name, &known),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every attribute a series can have with these mappings.
    pub fn known_attributes(&self) -> Vec<String> {
        let (source, destination) = self.mappings.names();
        let mut known: Vec<String> = BUILT_IN_ATTRIBUTES
            .iter()
            .chain(&NAMED_ATTRIBUTES)
            .map(|&n| n.to_owned())
            .collect();
        known.extend(source.iter().map(|n| format!("source.{n}")));
        known.extend(destination.iter().map(|n| format!("destination.{n}")));
        known.sort_unstable();
        known.dedup();
        known
    }
}

/// `source.container.label.KEY`: one attribute per label a container has.
fn is_label_attribute(name: &str) -> bool {
    name.strip_prefix(crate::container_names::LABEL_PREFIX)
        .is_some_and(|key| !key.is_empty())
}

/// The closest known name, or the list of them.
fn hint(name: &str, known: &[String]) -> String {
    let closest = known
        .iter()
        .map(|k| (strsim::levenshtein(name, k), k))
        .min_by_key(|(distance, _)| *distance);
    match closest {
        Some((distance, k)) if distance <= 3 => format!("did you mean `{k}`?"),
        _ => format!("known here: {}", known.join(", ")),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval: Duration::from_secs(5 * 60),
            attributes: None,
            max_series: 10_000,
            mappings: Mappings::default(),
            containers: containers::Config::default(),
            kubernetes: None,
            dns: DnsConfig::default(),
        }
    }
}

/// The section as written, before [`Config::validate`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    #[serde(deserialize_with = "receiver::duration_serde::deserialize")]
    interval: Duration,
    attributes: Option<Vec<String>>,
    max_series: usize,
    mappings: Mappings,
    containers: containers::Config,
    kubernetes: Option<kubernetes::Config>,
    dns: DnsConfig,
}

impl Default for Raw {
    fn default() -> Self {
        let Config {
            interval,
            attributes,
            max_series,
            mappings,
            containers,
            kubernetes,
            dns,
        } = Config::default();
        Raw {
            interval,
            attributes,
            max_series,
            mappings,
            containers,
            kubernetes,
            dns,
        }
    }
}

impl TryFrom<Raw> for Config {
    type Error = Error;

    fn try_from(raw: Raw) -> Result<Config, Error> {
        let config = Config {
            interval: raw.interval,
            attributes: raw.attributes,
            max_series: raw.max_series,
            mappings: raw.mappings,
            containers: raw.containers,
            kubernetes: raw.kubernetes,
            dns: raw.dns,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Config, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn default_interval_is_five_minutes() {
        assert_eq!(Config::default().interval, Duration::from_secs(300));
        assert_eq!(Config::default().max_series, 10_000);
        assert!(Config::default().validate().is_ok());
        assert_eq!(parse("{}").unwrap(), Config::default());
    }

    #[test]
    fn rejects_interval_under_one_second() {
        let config = Config {
            interval: Duration::from_millis(999),
            ..Config::default()
        };
        let err = config.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "the window interval 999ms is shorter than the minimum of 1s"
        );
        assert!(parse(r#"{"interval": "1s"}"#).is_ok());
    }

    #[test]
    fn rejects_a_bad_duration_with_a_hint() {
        let err = parse(r#"{"interval": "5 minutes please"}"#).unwrap_err();
        assert!(
            err.starts_with("`5 minutes please` is not a duration ("),
            "{err}"
        );
        assert!(err.contains("5m or 1h30m"), "{err}");
    }

    #[test]
    fn the_kubernetes_section_is_opt_in_and_its_names_are_known() {
        assert_eq!(Config::default().kubernetes, None);
        let config = parse(
            r#"{"kubernetes": {"node_name": "node-a"},
                "attributes": ["source.k8s.pod.name", "destination.k8s.service.name"]}"#,
        )
        .unwrap();
        let kubernetes = config.kubernetes.unwrap();
        assert_eq!(kubernetes.node_name.as_deref(), Some("node-a"));
        let err = parse(r#"{"kubernetes": {"node": "a"}}"#).unwrap_err();
        assert!(err.contains("unknown field `node`"), "{err}");
    }

    #[test]
    fn a_name_rule_needs_the_attribute_it_matches() {
        let err =
            parse(r#"{"mappings": {"names": [{"match": "^db$", "service": "pg"}]}}"#).unwrap_err();
        assert!(err.contains("this rule needs `on:`"), "{err}");
        let err = parse(r#"{"mappings": {"names": [{"on": "k8s.pod.name", "match": "x"}]}}"#)
            .unwrap_err();
        assert!(
            err.contains("name it whole, like source.k8s.deployment.name"),
            "{err}"
        );
        let ok = parse(
            r#"{"mappings": {"names": [{"on": "destination.k8s.service.name", "match": "^db$", "service": "pg"}]}, "attributes": ["destination.service"]}"#,
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn selected_attributes_must_be_known() {
        let err = parse(r#"{"attributes": ["destination.servce"]}"#).unwrap_err();
        assert!(
            err.starts_with("processor.attributes: `destination.servce` is never set"),
            "{err}"
        );
        assert!(err.contains("known here: "), "{err}");
        let with_mapping = r#"{"attributes": ["source.process.name", "destination.servce"],
            "mappings": {"cidrs": {"10.0.0.0/8": {"service": "consul"}}}}"#;
        let err = parse(with_mapping).unwrap_err();
        assert!(err.contains("did you mean `destination.service`?"), "{err}");
        let ok = r#"{"attributes": ["source.process.name", "destination.service"],
            "mappings": {"cidrs": {"10.0.0.0/8": {"service": "consul"}}}}"#;
        assert!(parse(ok).is_ok());
    }

    #[test]
    fn zero_series_is_refused() {
        let err = parse(r#"{"max_series": 0}"#).unwrap_err();
        assert!(err.starts_with("processor.max_series"), "{err}");
    }

    #[test]
    fn prints_back_what_it_reads() {
        let text = r#"{"interval":"1m","attributes":["source.service"],"max_series":5,
            "mappings":{"processes":[{"match":"^web$","service":"web"}]}}"#;
        let config = parse(text).unwrap();
        let printed = serde_json::to_string(&config).unwrap();
        assert_eq!(parse(&printed).unwrap(), config);
        assert!(printed.contains(r#""interval":"1m""#), "{printed}");
    }
}
