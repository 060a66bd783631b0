//! The `processor.mappings` section: rules that name the ends of a flow.
//!
//! ```yaml
//! mappings:
//!   cidrs:                       # address -> attributes of that end
//!     10.1.0.0/16: {service: consul}
//!   ports:                       # port -> `<end>.port.name`
//!     5432: postgresql
//!   processes:                   # local process name -> source attributes
//!     - {match: '^(nginx|envoy)$', service: web}
//!   containers:                  # local container -> source attributes
//!     - {match: '^3f2a', attributes: {service: billing, team: payments}}
//!     - {on: name, match: '^billing-', service: billing}
//!     - {on: image, match: '^registry:5000/shop/', attributes: {team: shop}}
//!     - {on: label.team, match: '^payments$', service: payments}
//!   domains:                     # remote end's destination.domain -> destination attributes
//!     - {match: '\.amazonaws\.com$', service: aws}
//!   names:                       # a name another source gave an end -> that end's attributes
//!     - {on: destination.k8s.service.name, match: '^db$', service: postgres}
//!     - {on: source.k8s.deployment.name, match: '^cart', attributes: {team: shop}}
//! ```

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Every mapping rule of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mappings {
    /// Address ranges and the attributes of an end whose address lies in
    /// them: `source.<name>` when the end is local, `destination.<name>`
    /// when remote. The longest matching prefix wins.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub cidrs: BTreeMap<Cidr, AttributeMap>,
    /// Port numbers and their names, as `source.port.name` or
    /// `destination.port.name` for the end with that port.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<Port, String>,
    /// Rules on the local process name (the kernel's 15-character `comm`);
    /// the first that matches gives `source.*` attributes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub processes: Vec<Rule>,
    /// Rules on the local container (its id, or by `on` its name, image or
    /// a label); the first that matches gives `source.*` attributes, over
    /// those of the process rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerRule>,
    /// Rules on the remote end's `destination.domain` (the name a DNS
    /// lookup gave its address); the first that matches gives
    /// `destination.*` attributes, over those of the CIDRs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<Rule>,
    /// Rules on a name another source gave an end (the container runtime,
    /// Kubernetes, DNS), by its whole attribute name in `on`; the first that
    /// matches for an end gives that end's attributes, over every other
    /// rule's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<NameRuleOn>,
}

impl Mappings {
    /// The names (without the `source.`/`destination.` prefix) the rules
    /// can give the source end and the destination end.
    pub fn names(&self) -> (Vec<&str>, Vec<&str>) {
        let mut both: Vec<&str> = self
            .cidrs
            .values()
            .flat_map(|attributes| attributes.0.keys().map(String::as_str))
            .collect();
        if !self.ports.is_empty() {
            both.push("port.name");
        }
        let mut source = both.clone();
        for rule in &self.processes {
            source.extend(rule.attributes().map(|(name, _)| name));
        }
        for rule in &self.containers {
            source.extend(rule.rule.attributes().map(|(name, _)| name));
        }
        for rule in &self.domains {
            both.extend(rule.attributes().map(|(name, _)| name));
        }
        for rule in &self.names {
            let end = if rule.on.destination {
                &mut both
            } else {
                &mut source
            };
            end.extend(rule.rule.attributes().map(|(name, _)| name));
        }
        for names in [&mut source, &mut both] {
            names.sort_unstable();
            names.dedup();
        }
        (source, both)
    }
}

/// An address range, `ADDRESS/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr(pub IpNet);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Cidr).map_err(|_| {
            serde::de::Error::custom(format!(
                "`{text}` is not a CIDR: write ADDRESS/PREFIX, like 10.1.0.0/16 or fd00::/8 (a prefix of at most 32 bits for IPv4, 128 for IPv6)"
            ))
        })
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A port number, 1 to 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(Port(port)),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not a port: use a number from 1 to 65535"
            ))),
        }
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

/// Attributes a rule gives, by name without the end's prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AttributeMap(pub BTreeMap<String, String>);

impl<'de> Deserialize<'de> for AttributeMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(d)?;
        for name in map.keys() {
            check_attribute_name(name).map_err(serde::de::Error::custom)?;
        }
        Ok(AttributeMap(map))
    }
}

/// A rule on a name: when `match` matches, the end gets `service` (as
/// `service`) and `attributes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The pattern, a regular expression searched in the name (anchor it
    /// with `^...$` to match the whole name).
    #[serde(rename = "match")]
    pub pattern: Pattern,
    /// Shorthand for `attributes: {service: ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Attributes by name (without the `source.` prefix).
    #[serde(default, skip_serializing_if = "attribute_map_is_empty")]
    pub attributes: AttributeMap,
}

/// A [`Rule`] whose pattern matches what `on` names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(
    try_from = "RawOnRule",
    into = "RawOnRule",
    bound = "F: RuleField + Clone"
)]
pub struct OnRule<F> {
    /// What the pattern is matched against.
    pub on: F,
    /// The pattern and what the rule gives.
    pub rule: Rule,
}

/// A rule on the local container (`on`: its id by default).
pub type ContainerRule = OnRule<ContainerField>;

/// A rule on a name another source gave one end (`on:
/// destination.k8s.service.name`); it gives that end's attributes.
pub type NameRuleOn = OnRule<EndAttribute>;

/// What an [`OnRule`]'s `on` may say.
pub trait RuleField: std::str::FromStr<Err = String> + fmt::Display + PartialEq + Sized {
    /// The field when `on` is left out; `None`: `on` is required.
    fn implied() -> Option<Self>;
}

/// What of a container a rule matches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum ContainerField {
    /// The 64-hex-digit id (`on: id`, the default).
    #[default]
    Id,
    /// The name (`on: name`), from the runtime.
    Name,
    /// The image name without its tag (`on: image`), from the runtime.
    Image,
    /// The value of one label (`on: label.KEY`), from the runtime.
    Label(String),
}

impl ContainerField {
    /// The source attribute holding this field, for all but the id.
    pub fn attribute(&self) -> Option<String> {
        match self {
            ContainerField::Id => None,
            ContainerField::Name => Some("source.container.name".to_owned()),
            ContainerField::Image => Some("source.container.image.name".to_owned()),
            ContainerField::Label(key) => {
                Some(format!("{}{key}", crate::container_names::LABEL_PREFIX))
            }
        }
    }
}

impl RuleField for ContainerField {
    fn implied() -> Option<Self> {
        Some(ContainerField::Id)
    }
}

impl std::str::FromStr for ContainerField {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "id" => Ok(ContainerField::Id),
            "name" => Ok(ContainerField::Name),
            "image" => Ok(ContainerField::Image),
            _ => match text.strip_prefix("label.") {
                Some(key) if !key.is_empty() => Ok(ContainerField::Label(key.to_owned())),
                _ => Err(format!(
                    "`on: {text}` is not a container field: use id, name, image or label.KEY"
                )),
            },
        }
    }
}

impl fmt::Display for ContainerField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerField::Id => f.write_str("id"),
            ContainerField::Name => f.write_str("name"),
            ContainerField::Image => f.write_str("image"),
            ContainerField::Label(key) => write!(f, "label.{key}"),
        }
    }
}

/// One end's attribute by its whole name (`source.k8s.deployment.name`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EndAttribute {
    /// The whole name, with its end's prefix.
    pub name: String,
    /// Whether it is the remote end's (`destination.`).
    pub destination: bool,
}

impl RuleField for EndAttribute {
    fn implied() -> Option<Self> {
        None
    }
}

impl std::str::FromStr for EndAttribute {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let destination = match text.split_once('.') {
            Some(("source", rest)) if !rest.is_empty() => false,
            Some(("destination", rest)) if !rest.is_empty() => true,
            _ => {
                return Err(format!(
                    "`on: {text}` is not an end's attribute: name it whole, like source.k8s.deployment.name or destination.k8s.service.name"
                ))
            }
        };
        Ok(EndAttribute {
            name: text.to_owned(),
            destination,
        })
    }
}

impl fmt::Display for EndAttribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// An [`OnRule`] as written: a [`Rule`] with `on`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawOnRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on: Option<String>,
    #[serde(rename = "match")]
    pattern: Pattern,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "attribute_map_is_empty")]
    attributes: AttributeMap,
}

impl<F: RuleField> TryFrom<RawOnRule> for OnRule<F> {
    type Error = String;

    fn try_from(raw: RawOnRule) -> Result<Self, String> {
        let on = match raw.on {
            Some(text) => text.parse()?,
            None => F::implied().ok_or("this rule needs `on:`, the attribute it matches")?,
        };
        let rule = Rule {
            pattern: raw.pattern,
            service: raw.service,
            attributes: raw.attributes,
        };
        Ok(OnRule { on, rule })
    }
}

impl<F: RuleField> From<OnRule<F>> for RawOnRule {
    fn from(rule: OnRule<F>) -> Self {
        RawOnRule {
            on: (F::implied().as_ref() != Some(&rule.on)).then(|| rule.on.to_string()),
            pattern: rule.rule.pattern,
            service: rule.rule.service,
            attributes: rule.rule.attributes,
        }
    }
}

fn attribute_map_is_empty(map: &AttributeMap) -> bool {
    map.0.is_empty()
}

impl Rule {
    /// What the rule gives, `service` first.
    pub fn attributes(&self) -> impl Iterator<Item = (&str, &str)> + Clone {
        self.service
            .as_deref()
            .map(|service| ("service", service))
            .into_iter()
            .chain(
                self.attributes
                    .0
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
    }
}

/// A regular expression from the configuration; compares by its text. A
/// pattern that is only a literal, anchored or not (`^nginx$`, `^web`,
/// `worker$`, `api`), is matched as a string: a compiled regular expression
/// takes kilobytes, which a file of tens of thousands of rules multiplies.
#[derive(Clone)]
pub struct Pattern {
    text: String,
    matcher: Matcher,
}

#[derive(Clone)]
enum Matcher {
    /// The literal, and whether it is anchored at the start and the end.
    Literal {
        literal: String,
        start: bool,
        end: bool,
    },
    Regex(regex::Regex),
}

impl Pattern {
    /// Compiles `text` (unless it is a literal); the error is one line.
    pub fn new(text: &str) -> Result<Pattern, String> {
        let invalid = |why: String| format!("`{text}` is not a valid regular expression: {why}");
        let hir = regex_syntax::Parser::new()
            .parse(text)
            .map_err(|e| invalid(one_line(&e)))?;
        let matcher = match literal(&hir) {
            Some((literal, start, end)) => Matcher::Literal {
                literal,
                start,
                end,
            },
            None => regex::Regex::new(text)
                .map(Matcher::Regex)
                .map_err(|e| invalid(one_line(&e)))?,
        };
        Ok(Pattern {
            text: text.to_owned(),
            matcher,
        })
    }

    /// True when the pattern matches somewhere in `text`.
    pub fn is_match(&self, text: &str) -> bool {
        match &self.matcher {
            Matcher::Literal {
                literal,
                start: true,
                end: true,
            } => text == literal,
            Matcher::Literal {
                literal,
                start: true,
                end: false,
            } => text.starts_with(literal.as_str()),
            Matcher::Literal {
                literal,
                start: false,
                end: true,
            } => text.ends_with(literal.as_str()),
            Matcher::Literal { literal, .. } => text.contains(literal.as_str()),
            Matcher::Regex(regex) => regex.is_match(text),
        }
    }

    /// The whole text this pattern matches, when that is all it matches
    /// (`^nginx$`): for an index of such rules.
    pub fn exact(&self) -> Option<&str> {
        match &self.matcher {
            Matcher::Literal {
                literal,
                start: true,
                end: true,
            } => Some(literal),
            _ => None,
        }
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A pattern that is a literal between optional `^` and `$`: the literal
/// and whether each anchor is there.
fn literal(hir: &regex_syntax::hir::Hir) -> Option<(String, bool, bool)> {
    use regex_syntax::hir::{HirKind, Look};
    let text = |hir: &regex_syntax::hir::Hir| match hir.kind() {
        HirKind::Literal(literal) => std::str::from_utf8(&literal.0).ok().map(str::to_owned),
        _ => None,
    };
    let parts = match hir.kind() {
        HirKind::Literal(_) => return text(hir).map(|t| (t, false, false)),
        HirKind::Concat(parts) => parts.as_slice(),
        _ => return None,
    };
    let is =
        |hir: &regex_syntax::hir::Hir, look| matches!(hir.kind(), HirKind::Look(l) if *l == look);
    let (start, parts) = match parts.split_first() {
        Some((first, rest)) if is(first, Look::Start) => (true, rest),
        _ => (false, parts),
    };
    let (end, parts) = match parts.split_last() {
        Some((last, rest)) if is(last, Look::End) => (true, rest),
        _ => (false, parts),
    };
    match parts {
        [only] => text(only).map(|t| (t, start, end)),
        _ => None,
    }
}

/// regex's syntax errors draw a caret under the pattern over several lines;
/// the last line says what is wrong.
fn one_line(error: &impl fmt::Display) -> String {
    let text = error.to_string();
    let last = text.lines().rev().find(|line| !line.trim().is_empty());
    last.unwrap_or(&text)
        .trim()
        .trim_start_matches("error: ")
        .to_owned()
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.as_str())
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Pattern::new(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Attribute names given by rules: lowercase words joined by `.` or `_`,
/// without the end's prefix (flowtel adds it).
fn check_attribute_name(name: &str) -> Result<(), String> {
    if name.starts_with("source.") || name.starts_with("destination.") {
        return Err(format!(
            "attribute `{name}`: leave out the `source.`/`destination.` prefix, flowtel adds the right one for each end"
        ));
    }
    let word_ok = |w: &str| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    if !name.split('.').all(word_ok) {
        return Err(format!(
            "attribute `{name}` is not a valid name: use lowercase letters, digits and `_`, in words joined by `.` (like `service` or `k8s.pod.name`)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_regex_is_one_line_naming_the_problem() {
        let error = Pattern::new("(nginx").unwrap_err();
        assert_eq!(
            error,
            "`(nginx` is not a valid regular expression: unclosed group"
        );
    }

    #[test]
    fn a_literal_pattern_matches_as_its_regular_expression_would() {
        let names = ["nginx", "nginx-worker", "my-nginx", "web", "", "NGINX"];
        for text in [
            "^nginx$",
            "^nginx",
            "nginx$",
            "nginx",
            "^ngi.x$",
            "^(nginx|web)$",
            "(?i)^nginx$",
            "^$",
            "^",
            "ng\\x69nx",
            "^nginx\\$",
        ] {
            let pattern = Pattern::new(text).unwrap();
            let regex = regex::Regex::new(text).unwrap();
            for name in names {
                assert_eq!(
                    pattern.is_match(name),
                    regex.is_match(name),
                    "{text} on {name:?}"
                );
            }
            assert_eq!(pattern.as_str(), text);
        }
        assert_eq!(Pattern::new("^nginx$").unwrap().exact(), Some("nginx"));
        assert!(matches!(
            Pattern::new("^nginx").unwrap().matcher,
            Matcher::Literal {
                start: true,
                end: false,
                ..
            }
        ));
        assert_eq!(Pattern::new("^ngi.x$").unwrap().exact(), None);
        assert!(matches!(
            Pattern::new("^ngi.x$").unwrap().matcher,
            Matcher::Regex(_)
        ));
    }

    #[test]
    fn attribute_names_are_checked() {
        assert!(check_attribute_name("service").is_ok());
        assert!(check_attribute_name("k8s.pod.name").is_ok());
        assert!(check_attribute_name("source.service")
            .unwrap_err()
            .contains("leave out"));
        assert!(check_attribute_name("Service").is_err());
        assert!(check_attribute_name("a..b").is_err());
    }

    #[test]
    fn names_lists_what_the_rules_give_each_end() {
        let mut mappings = Mappings::default();
        mappings.cidrs.insert(
            Cidr("10.0.0.0/8".parse().unwrap()),
            AttributeMap([("service".to_owned(), "consul".to_owned())].into()),
        );
        mappings.ports.insert(Port(5432), "postgresql".to_owned());
        mappings.processes.push(Rule {
            pattern: Pattern::new("^nginx$").unwrap(),
            service: Some("web".to_owned()),
            attributes: AttributeMap([("team".to_owned(), "edge".to_owned())].into()),
        });
        let (source, destination) = mappings.names();
        assert_eq!(source, vec!["port.name", "service", "team"]);
        assert_eq!(destination, vec!["port.name", "service"]);
    }
}
