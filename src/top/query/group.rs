//! `--group-by`: the attributes `top`'s rows are keyed by, and the value a
//! row shows for each.

use std::fmt;

use processor::Attributes;

use super::attribute_name;

/// The group-by of `flowtel top` when none is given.
pub const DEFAULT_GROUP_BY: &str = "source.process.name,destination.service";

/// What a row shows for an attribute a flow does not have, when there is
/// no fallback for it.
pub const NO_VALUE: &str = "-";

/// Attributes shown in place of a missing one: a flow whose destination no
/// mapping names is shown by its address, and so is one whose address no
/// DNS answer named.
const FALLBACKS: [(&str, &str); 3] = [
    ("destination.service", "destination.address"),
    ("source.service", "source.address"),
    ("destination.domain", "destination.address"),
];

/// `--group-by`: the attributes a row is keyed by, in column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBy(Vec<String>);

impl GroupBy {
    /// Parses `attr,attr,...`; the error is one line naming the bad part.
    pub fn parse(text: &str) -> Result<GroupBy, String> {
        let mut names: Vec<String> = Vec::new();
        for part in text.split(',') {
            let name = part.trim();
            if name.is_empty() {
                return Err(format!(
                    "empty attribute name in {text:?}: names are joined by single commas"
                ));
            }
            let name = attribute_name(name, name)?;
            if names.contains(&name) {
                return Err(format!("{name:?} is named twice in {text:?}"));
            }
            names.push(name);
        }
        Ok(GroupBy(names))
    }

    /// The attribute names, in column order.
    pub fn names(&self) -> &[String] {
        &self.0
    }

    /// The group-bys the `g` key cycles through: this one, then by
    /// destination address and port, then by process name alone (each once).
    pub fn presets(&self) -> Vec<GroupBy> {
        let mut presets = vec![self.clone()];
        for preset in [
            "destination.address,destination.port",
            "source.process.name",
        ] {
            let preset = GroupBy::parse(preset).expect("the presets are valid");
            if !presets.contains(&preset) {
                presets.push(preset);
            }
        }
        presets
    }

    /// A flow's row key: the value of each attribute, with the fallbacks.
    pub fn key(&self, attributes: &Attributes) -> Vec<String> {
        self.0.iter().map(|name| value(attributes, name)).collect()
    }
}

impl Default for GroupBy {
    fn default() -> GroupBy {
        GroupBy::parse(DEFAULT_GROUP_BY).expect("the default group-by is valid")
    }
}

impl fmt::Display for GroupBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// The value a row shows for `name`: the flow's own, else its fallback's
/// (`destination.service` -> `destination.address`, `source.service` ->
/// `source.address`), else [`NO_VALUE`].
pub fn value(attributes: &Attributes, name: &str) -> String {
    let fallback = FALLBACKS
        .iter()
        .find(|(missing, _)| *missing == name)
        .map(|(_, instead)| *instead);
    attributes
        .get(name)
        .or_else(|| fallback.and_then(|instead| attributes.get(instead)))
        .map_or_else(|| NO_VALUE.to_owned(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::query::test_flows::attrs;

    #[test]
    fn group_by_parses_names_in_order() {
        let g = GroupBy::parse("destination.port, source.process.name").unwrap();
        assert_eq!(g.names(), ["destination.port", "source.process.name"]);
        assert_eq!(g.to_string(), "destination.port,source.process.name");
        assert_eq!(GroupBy::default().to_string(), DEFAULT_GROUP_BY);
    }

    #[test]
    fn bad_group_by_says_which_part_is_wrong() {
        assert_eq!(
            GroupBy::parse("a,,b").unwrap_err(),
            "empty attribute name in \"a,,b\": names are joined by single commas"
        );
        assert_eq!(
            GroupBy::parse("a,a").unwrap_err(),
            "\"a\" is named twice in \"a,a\""
        );
        assert_eq!(
            GroupBy::parse("a=b").unwrap_err(),
            "attribute name \"a=b\" in \"a=b\" may only have letters, digits, '.', '_' and '-'"
        );
    }

    #[test]
    fn presets_start_with_the_given_group_by_and_never_repeat() {
        let given = GroupBy::default();
        let presets: Vec<String> = given.presets().iter().map(ToString::to_string).collect();
        assert_eq!(
            presets,
            [
                DEFAULT_GROUP_BY,
                "destination.address,destination.port",
                "source.process.name"
            ]
        );
        let by_process = GroupBy::parse("source.process.name").unwrap();
        assert_eq!(by_process.presets().len(), 2);
    }

    #[test]
    fn a_missing_service_falls_back_to_the_address() {
        let named = attrs(&[
            ("destination.service", "postgres"),
            ("destination.address", "10.0.0.5"),
            ("source.address", "10.0.0.1"),
        ]);
        let unnamed = attrs(&[
            ("destination.address", "10.0.0.6"),
            ("source.address", "10.0.0.1"),
        ]);
        assert_eq!(value(&named, "destination.service"), "postgres");
        assert_eq!(value(&unnamed, "destination.service"), "10.0.0.6");
        assert_eq!(value(&unnamed, "source.service"), "10.0.0.1");
        let looked_up = attrs(&[
            ("destination.domain", "db.example.com"),
            ("destination.address", "10.0.0.5"),
        ]);
        assert_eq!(value(&looked_up, "destination.domain"), "db.example.com");
        assert_eq!(value(&unnamed, "destination.domain"), "10.0.0.6");
        // No fallback for other attributes.
        assert_eq!(value(&unnamed, "destination.port"), NO_VALUE);
        assert_eq!(value(&unnamed, "source.process.name"), NO_VALUE);
    }
}
