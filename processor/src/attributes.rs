//! Attribute sets: what a series is keyed by, after the mappings resolved
//! names and the selection summed away what is not grouped by.

use std::fmt;
use std::sync::Arc;

/// One attribute's value. Ports and pids are integers, as the OpenTelemetry
/// semantic conventions type them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttributeValue {
    /// A string.
    String(Arc<str>),
    /// An integer.
    Int(i64),
    /// A boolean (`flowtel.overflow`).
    Bool(bool),
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttributeValue::String(s) => f.write_str(s),
            AttributeValue::Int(n) => write!(f, "{n}"),
            AttributeValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for AttributeValue {
    fn from(s: &str) -> Self {
        AttributeValue::String(s.into())
    }
}

impl From<Arc<str>> for AttributeValue {
    fn from(s: Arc<str>) -> Self {
        AttributeValue::String(s)
    }
}

impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::String(s.into())
    }
}

/// A set of attributes, at most one value per name, kept sorted by name so
/// that equal sets compare and hash equal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Attributes(Vec<(Arc<str>, AttributeValue)>);

impl Attributes {
    /// The empty set.
    pub fn new() -> Attributes {
        Attributes(Vec::new())
    }

    /// Sets `name` to `value`, replacing an earlier value.
    pub fn set(&mut self, name: impl Into<Arc<str>>, value: impl Into<AttributeValue>) {
        let name = name.into();
        let value = value.into();
        match self.0.binary_search_by(|(n, _)| n.as_ref().cmp(&name)) {
            Ok(at) => self.0[at].1 = value,
            Err(at) => self.0.insert(at, (name, value)),
        }
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&AttributeValue> {
        self.0
            .binary_search_by(|(n, _)| n.as_ref().cmp(name))
            .ok()
            .map(|at| &self.0[at].1)
    }

    /// Keeps only the attributes `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(name, _)| keep(name));
    }

    /// Name and value of each attribute, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AttributeValue)> {
        self.0.iter().map(|(name, value)| (name.as_ref(), value))
    }

    /// How many attributes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<Arc<str>>, V: Into<AttributeValue>> FromIterator<(K, V)> for Attributes {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let mut attributes = Attributes::new();
        for (name, value) in pairs {
            attributes.set(name, value);
        }
        attributes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_of_setting_does_not_matter() {
        let a: Attributes = [("b", "2"), ("a", "1")].into_iter().collect();
        let b: Attributes = [("a", "1"), ("b", "2")].into_iter().collect();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(|(n, _)| n).collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn a_later_value_replaces_an_earlier_one() {
        let mut a = Attributes::new();
        a.set("source.service", "from-cidr");
        a.set("source.service", "from-process");
        assert_eq!(a.len(), 1);
        assert_eq!(
            a.get("source.service"),
            Some(&AttributeValue::from("from-process"))
        );
        a.retain(|n| n != "source.service");
        assert!(a.is_empty());
    }
}
