//! The `processor.kubernetes` section of the configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where the API server is, which node this is, and how long deleted
/// objects stay known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A kubeconfig file to reach the API server with. Default: none, the
    /// pod's service account when running in a cluster, else the file
    /// `KUBECONFIG` names, else `~/.kube/config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, given to the local end as `source.k8s.node.name`.
    /// Default: the `NODE_NAME` environment variable (the DaemonSet sets it
    /// from the downward API, `spec.nodeName`), else the local pod's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// How long a deleted pod, Service or node still names its UID and IPs,
    /// so that the window it was last seen in still gets its names. It is
    /// also the staleness bound: an address freed by a deleted object is
    /// named after it for at most this long (unless a new object claims it
    /// first). Default: one window (`processor.interval`).
    #[serde(
        default,
        deserialize_with = "human_duration",
        serialize_with = "human_duration_out",
        skip_serializing_if = "Option::is_none"
    )]
    pub keep_deleted: Option<Duration>,
}

impl Config {
    /// The node name: the configured one, else `NODE_NAME`.
    pub fn node_name(&self) -> Option<String> {
        self.node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
            .filter(|n| !n.is_empty())
    }
}

fn human_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a duration ({e}); write e.g. 5m or 30s"
        ))
    })
}

fn human_duration_out<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field() {
        let config: Config = serde_json::from_str(
            r#"{"kubeconfig":"/etc/kube.yaml","node_name":"node-a","keep_deleted":"2m"}"#,
        )
        .unwrap();
        assert_eq!(config.kubeconfig, Some(PathBuf::from("/etc/kube.yaml")));
        assert_eq!(config.node_name(), Some("node-a".to_owned()));
        assert_eq!(config.keep_deleted, Some(Duration::from_secs(120)));
    }

    #[test]
    fn refuses_unknown_fields_and_bad_durations() {
        assert!(serde_json::from_str::<Config>(r#"{"kubeconfg":"x"}"#).is_err());
        let error = serde_json::from_str::<Config>(r#"{"keep_deleted":"soon"}"#).unwrap_err();
        assert!(error.to_string().contains("not a duration"), "{error}");
    }
}
