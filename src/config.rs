//! The configuration file: each stage's section, composed into one YAML
//! document. Every key is optional; what is missing takes the stage's
//! default. `${VAR}` in a plain (unquoted) scalar is replaced by the
//! environment variable `VAR` (`${VAR:-default}` gives a default).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// The kernel side.
    pub receiver: receiver::Config,
    /// Deltas, attributes, windows.
    pub processor: processor::Config,
    /// Where windows go.
    pub exporters: exporter::Config,
}

/// A configuration file that cannot be used. Its message is one line:
/// `FILE:LINE:COLUMN: what is wrong` where the position is known.
#[derive(Debug)]
pub struct ConfigError {
    path: PathBuf,
    position: Option<(usize, usize)>,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, column)) = self.position {
            write!(f, ":{line}:{column}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

impl FileConfig {
    /// Reads, expands and checks the file at `path` against the process
    /// environment.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            position: None,
            message: format!("cannot read the configuration file: {e}"),
        })?;
        FileConfig::parse(path, &text, std::env::vars().collect())
    }

    /// Parses `text` (read from `path`) with `env` for `${VAR}`, then runs
    /// the checks that need more than one key.
    pub fn parse(
        path: &Path,
        text: &str,
        env: HashMap<String, String>,
    ) -> Result<FileConfig, ConfigError> {
        let error = |position, message| ConfigError {
            path: path.to_owned(),
            position,
            message,
        };
        let max_nodes = match env.get(MAX_NODES_VAR) {
            None => DEFAULT_MAX_NODES,
            Some(v) => v.trim().parse().map_err(|_| {
                error(
                    None,
                    format!("{MAX_NODES_VAR}={v:?} is not a number of YAML nodes, e.g. 4000000"),
                )
            })?,
        };
        // A file of comments only is an empty document: all defaults.
        let config: FileConfig = if is_blank_yaml(text) {
            FileConfig::default()
        } else {
            let options = serde_saphyr::options! {
                budget: serde_saphyr::budget! {
                    max_nodes: max_nodes,
                    max_events: max_nodes.saturating_mul(4),
                },
            }
            .with_properties(env);
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                let position = e
                    .location()
                    .map(|l| (l.line() as usize, l.column() as usize));
                error(
                    position,
                    limit_message(&e, max_nodes).unwrap_or_else(|| bare_message(&e)),
                )
            })?
        };
        config
            .receiver
            .validate()
            .map_err(|e| error(None, format!("receiver: {e}")))?;
        config
            .exporters
            .validate()
            .map_err(|e| error(None, format!("exporters: {e}")))?;
        Ok(config)
    }

    /// The effective configuration as YAML, every default filled in and
    /// secrets replaced by `<redacted>`. It parses back to the same
    /// configuration: when the text holds `$$` or `${`, which a plain scalar
    /// would expand, every string is printed quoted (quoted scalars never
    /// expand). A lone `$`, as in a regular expression, reads back as is.
    pub fn to_yaml(&self) -> String {
        let print = |options| {
            serde_saphyr::to_string_with_options(self, options)
                .unwrap_or_else(|e| format!("# cannot print: {e}\n"))
        };
        let plain = print(serde_saphyr::ser_options! {});
        if plain.contains("$$") || plain.contains("${") {
            print(serde_saphyr::ser_options! { quote_all: true })
        } else {
            plain
        }
    }
}

/// How many YAML nodes (scalars, lists, maps) a configuration file may
/// hold: a guard against runaway files, about 4 MB of mapping rules.
pub const DEFAULT_MAX_NODES: usize = 1_000_000;

/// The environment variable that raises [`DEFAULT_MAX_NODES`].
pub const MAX_NODES_VAR: &str = "FLOWTEL_CONFIG_MAX_NODES";

/// The parser's size limits, said with the limit and what to do (its own
/// text is Rust debug output).
fn limit_message(error: &serde_saphyr::Error, max_nodes: usize) -> Option<String> {
    let text = error.without_snippet().to_string();
    if !text.contains("budget breached: Nodes") && !text.contains("budget breached: Events") {
        return None;
    }
    Some(format!(
        "the file is larger than the configuration parser's limit of {max_nodes} YAML nodes (scalars, lists and maps): raise it with {MAX_NODES_VAR}, or make the file smaller (one mapping rule can match many names, e.g. match: '^(api|web|worker)$')"
    ))
}

/// True when `text` holds no YAML node: only blank lines and comments.
fn is_blank_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---"
    })
}

/// The parser's message without its snippet and without the position it
/// appends (the position leads the line instead), on one line.
fn bare_message(error: &serde_saphyr::Error) -> String {
    let text = error.without_snippet().to_string();
    let text = match (error.location(), text.rfind(" at line ")) {
        (Some(_), Some(at)) => &text[..at],
        _ => text.as_str(),
    };
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let mut message = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some(name) = message.strip_prefix("missing property ") {
        let name = name.trim_matches('`').to_owned();
        message = format!(
            "the environment variable {name} is not set: export it, or give a default with ${{{name}:-value}}"
        );
    }
    message
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<FileConfig, String> {
        parse_with(text, &[])
    }

    #[test]
    fn a_file_over_the_parsers_limit_says_the_limit_and_how_to_raise_it() {
        let mut text = "processor:\n  mappings:\n    ports:\n".to_owned();
        for port in 1..=40 {
            text.push_str(&format!("      {port}: p{port}\n"));
        }
        let error = parse_with(&text, &[(MAX_NODES_VAR, "50")]).unwrap_err();
        assert!(
            error.contains(
                "the file is larger than the configuration parser's limit of 50 YAML nodes (scalars, lists and maps): raise it with FLOWTEL_CONFIG_MAX_NODES, or make the file smaller"
            ),
            "{error}"
        );
        assert!(!error.contains("budget breached"), "{error}");
        assert_eq!(error.lines().count(), 1);
        assert!(parse_with(&text, &[(MAX_NODES_VAR, "500")]).is_ok());
        assert!(parse(&text).is_ok(), "the default holds far more");
        let bad = parse_with(&text, &[(MAX_NODES_VAR, "many")]).unwrap_err();
        assert!(bad.contains("is not a number of YAML nodes"), "{bad}");
    }

    fn parse_with(text: &str, env: &[(&str, &str)]) -> Result<FileConfig, String> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FileConfig::parse(Path::new("flowtel.yaml"), text, env).map_err(|e| e.to_string())
    }

    #[test]
    fn an_empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), FileConfig::default());
        assert_eq!(
            parse("# nothing here\n\n---\n").unwrap(),
            FileConfig::default()
        );
    }

    #[test]
    fn each_section_goes_to_its_stage() {
        let config = parse(
            "receiver:\n  poll_interval: 2s\nprocessor:\n  interval: 1m\n  max_series: 50\n\
             exporters:\n  console: {format: json}\n",
        )
        .unwrap();
        assert_eq!(config.receiver.poll_interval, Duration::from_secs(2));
        assert_eq!(config.processor.interval, Duration::from_secs(60));
        assert_eq!(config.processor.max_series, 50);
        assert!(config.exporters.console.is_some());
    }

    #[test]
    fn an_unknown_key_names_its_place_and_the_known_ones() {
        assert_eq!(
            parse("processor:\n  intervl: 5m\n").unwrap_err(),
            "flowtel.yaml:2:3: unknown field `intervl`, expected one of interval, attributes, max_series, mappings, containers, kubernetes, dns"
        );
        assert_eq!(
            parse("recever: {}\n").unwrap_err(),
            "flowtel.yaml:1:1: unknown field `recever`, expected one of receiver, processor, exporters"
        );
    }

    #[test]
    fn a_bad_duration_says_how_to_write_one() {
        let err = parse("processor:\n  interval: five minutes\n").unwrap_err();
        assert!(
            err.starts_with("flowtel.yaml:2:13: `five minutes` is not a duration ("),
            "{err}"
        );
        assert!(err.ends_with("5m or 1h30m"), "{err}");
        let err = parse("receiver:\n  poll_interval: soon\n").unwrap_err();
        assert!(
            err.starts_with("flowtel.yaml:2:18: `soon` is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_cidr_is_refused_where_it_is() {
        let err = parse("processor:\n  mappings:\n    cidrs:\n      10.1.0.0/33: {service: x}\n")
            .unwrap_err();
        assert_eq!(
            err,
            "flowtel.yaml:4:7: `10.1.0.0/33` is not a CIDR: write ADDRESS/PREFIX, like 10.1.0.0/16 or fd00::/8 (a prefix of at most 32 bits for IPv4, 128 for IPv6)"
        );
    }

    #[test]
    fn a_bad_regex_is_refused_where_it_is() {
        let err = parse(
            "processor:\n  mappings:\n    processes:\n      - match: '(nginx'\n        service: web\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "flowtel.yaml:4:16: `(nginx` is not a valid regular expression: unclosed group"
        );
    }

    #[test]
    fn variables_are_expanded_in_plain_scalars() {
        let text = "exporters:\n  datadog:\n    api_key: ${DD_API_KEY}\n    site: ${DD_SITE:-datadoghq.eu}\n";
        let config = parse_with(text, &[("DD_API_KEY", "s3cr3t-key")]).unwrap();
        let datadog = config.exporters.datadog.as_ref().unwrap();
        assert_eq!(datadog.api_key.expose(), "s3cr3t-key");
        let printed = config.to_yaml();
        assert!(!printed.contains("s3cr3t-key"), "{printed}");
        assert!(printed.contains("datadoghq.eu"), "{printed}");
    }

    #[test]
    fn an_unset_variable_is_an_error_at_its_place() {
        let err = parse("exporters:\n  datadog:\n    api_key: ${DD_API_KEY}\n").unwrap_err();
        assert_eq!(
            err,
            "flowtel.yaml:3:14: the environment variable DD_API_KEY is not set: export it, or give a default with ${DD_API_KEY:-value}"
        );
    }

    #[test]
    fn a_bad_port_and_a_bad_attribute_name_are_refused_where_they_are() {
        assert_eq!(
            parse("processor:\n  mappings:\n    ports:\n      99999: x\n").unwrap_err(),
            "flowtel.yaml:4:7: `99999` is not a port: use a number from 1 to 65535"
        );
        assert_eq!(
            parse("processor:\n  mappings:\n    cidrs:\n      10.0.0.0/8: {Service: x}\n")
                .unwrap_err(),
            "flowtel.yaml:4:19: attribute `Service` is not a valid name: use lowercase letters, digits and `_`, in words joined by `.` (like `service` or `k8s.pod.name`)"
        );
    }

    #[test]
    fn broken_yaml_and_checks_across_keys_are_refused() {
        assert_eq!(
            parse("processor: [\n").unwrap_err(),
            "flowtel.yaml:1:12: expected mapping start"
        );
        assert_eq!(
            parse("processor:\n  max_series: 0\n").unwrap_err(),
            "flowtel.yaml:2:3: processor.max_series must be at least 1 (the default is 10000)"
        );
        assert_eq!(
            parse("receiver:\n  poll_interval: 10ms\n").unwrap_err(),
            "flowtel.yaml: receiver: invalid receiver setting: poll_interval 10ms is too short: use at least 100ms"
        );
    }

    #[test]
    fn an_unknown_selected_attribute_gets_a_hint() {
        let err = parse(
            "processor:\n  attributes: [source.process.name, destination.servce]\n  mappings:\n    cidrs:\n      10.0.0.0/8: {service: consul}\n",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "flowtel.yaml:2:3: processor.attributes: `destination.servce` is never set: it is not one of flowtel's own attributes and no mapping gives it; did you mean `destination.service`?"
        );
    }

    #[test]
    fn what_it_prints_reads_back_the_same() {
        let text = "processor:\n  interval: 1m\n  attributes: [source.process.name, destination.service]\n  mappings:\n    cidrs:\n      10.0.0.0/8: {service: consul}\n    ports:\n      5432: postgresql\n";
        let config = parse(text).unwrap();
        let printed = config.to_yaml();
        assert_eq!(parse(&printed).unwrap(), config, "{printed}");
    }

    #[test]
    fn a_dollar_in_a_value_prints_so_that_it_reads_back_the_same() {
        // `$$` is a literal `$`; printed plain, `$:` and `$$` would read back
        // differently (found by the config fuzz target).
        let text =
            "exporters:\n  resource_attributes:\n    deployment.environment: a$$$$:$$@$dev\n";
        let config = parse(text).unwrap();
        let printed = config.to_yaml();
        let again = parse(&printed).unwrap();
        assert_eq!(again, config, "{printed}");
        assert_eq!(again.to_yaml(), printed);
    }
}
