//! The deployment bundle, `otel-config/`, for the tests that check it: its
//! files, their text and YAML, and the alerting rules they hold.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The bundle's directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("otel-config")
}

/// The text of the bundle's file `relative` (to [`dir`]); panics if it
/// cannot be read.
pub fn read(relative: &str) -> String {
    let path = dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every document of the bundle's YAML file `relative` (empty ones
/// skipped), as JSON values; panics if it does not parse.
pub fn yaml_documents(relative: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(relative))
        .unwrap_or_else(|e| panic!("otel-config/{relative}: {e}"))
}

/// Every file below the bundle's directory `relative`, as paths relative
/// to [`dir`], sorted.
pub fn files(relative: &str) -> Vec<PathBuf> {
    fn walk(path: &Path, found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, found);
            } else {
                found.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(&dir().join(relative), &mut found);
    let mut found: Vec<PathBuf> = found
        .into_iter()
        .map(|p| p.strip_prefix(dir()).unwrap().to_path_buf())
        .collect();
    found.sort();
    found
}

/// The files of the bundle's directory `relative` (not below) whose name
/// ends with `suffix`, as paths relative to [`dir`] (text), sorted.
pub fn files_ending(relative: &str, suffix: &str) -> Vec<String> {
    files(relative)
        .into_iter()
        .filter(|p| p.parent() == Some(Path::new(relative)))
        .map(|p| p.display().to_string())
        .filter(|p| p.ends_with(suffix))
        .collect()
}

/// One alerting rule of `otel-config/alerts/*.rules.yml`.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// Its file, relative to [`dir`].
    pub file: String,
    /// Its group's name.
    pub group: String,
    /// The rule as written (`alert`, `expr`, `for`, `labels`,
    /// `annotations`).
    pub rule: Value,
}

impl AlertRule {
    /// The alert's name.
    pub fn name(&self) -> &str {
        self.rule["alert"].as_str().unwrap_or_default()
    }

    /// The PromQL expression.
    pub fn expr(&self) -> &str {
        self.rule["expr"].as_str().unwrap_or_default()
    }
}

/// Every rule of every group of `otel-config/alerts/*.rules.yml`, in file
/// and group order.
pub fn alert_rules() -> Vec<AlertRule> {
    let mut rules = Vec::new();
    for file in files_ending("alerts", ".rules.yml") {
        for document in yaml_documents(&file) {
            let groups = document["groups"]
                .as_array()
                .unwrap_or_else(|| panic!("{file}: no groups"));
            for group in groups {
                let name = group["name"].as_str().unwrap_or_default().to_owned();
                for rule in group["rules"].as_array().into_iter().flatten() {
                    rules.push(AlertRule {
                        file: file.clone(),
                        group: name.clone(),
                        rule: rule.clone(),
                    });
                }
            }
        }
    }
    rules
}
