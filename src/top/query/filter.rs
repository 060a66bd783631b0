//! `--where`: which flows `top` shows, by conditions on their attributes.

use std::fmt;

use processor::Attributes;
use regex::Regex;

use super::attribute_name;

/// One `--where` condition's comparison.
#[derive(Debug, Clone)]
enum Test {
    /// `attr=value`: the attribute has exactly this value.
    Equals(String),
    /// `attr!=value`: the attribute has another value, or none.
    NotEquals(String),
    /// `attr=~regex`: the attribute has a value the regex finds a match in.
    Matches(Regex),
}

/// One `--where` condition.
#[derive(Debug, Clone)]
struct Condition {
    attribute: String,
    test: Test,
}

impl Condition {
    fn matches(&self, attributes: &Attributes) -> bool {
        let value = attributes.get(&self.attribute).map(ToString::to_string);
        match (&self.test, value) {
            (Test::Equals(wanted), Some(value)) => *wanted == value,
            (Test::NotEquals(unwanted), Some(value)) => *unwanted != value,
            (Test::Matches(regex), Some(value)) => regex.is_match(&value),
            // An attribute the flow does not have has no value: it equals
            // nothing, matches no regex and differs from every value.
            (Test::Equals(_) | Test::Matches(_), None) => false,
            (Test::NotEquals(_), None) => true,
        }
    }
}

/// `--where`: conditions joined with commas, all of which a flow must meet.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    conditions: Vec<Condition>,
    text: String,
}

impl Filter {
    /// Parses `attr=value,attr!=value,attr=~regex`. The error is one line
    /// naming the condition that is wrong.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let conditions = text
            .split(',')
            .map(|part| parse_condition(part, text))
            .collect::<Result<_, _>>()?;
        Ok(Filter {
            conditions,
            text: text.to_owned(),
        })
    }

    /// True when the flow with these attributes meets every condition (and
    /// for a filter with none).
    pub fn matches(&self, attributes: &Attributes) -> bool {
        self.conditions.iter().all(|c| c.matches(attributes))
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.conditions.is_empty() {
            f.write_str("all flows")
        } else {
            f.write_str(&self.text)
        }
    }
}

fn parse_condition(part: &str, whole: &str) -> Result<Condition, String> {
    let part = part.trim();
    if part.is_empty() {
        return Err(format!(
            "empty condition in {whole:?}: conditions are joined by single commas"
        ));
    }
    let Some(at) = part.find('=') else {
        return Err(format!(
            "{part:?} has no operator: use attr=value, attr!=value or attr=~regex"
        ));
    };
    let (name, test) = match (part[..at].strip_suffix('!'), &part[at + 1..]) {
        (Some(name), value) => (name, Test::NotEquals(value.to_owned())),
        (None, rest) => match rest.strip_prefix('~') {
            Some(pattern) => {
                let regex = Regex::new(pattern)
                    .map_err(|e| format!("{part:?} has an invalid regex: {}", regex_problem(&e)))?;
                (&part[..at], Test::Matches(regex))
            }
            None => (&part[..at], Test::Equals(rest.to_owned())),
        },
    };
    Ok(Condition {
        attribute: attribute_name(name.trim(), part)?,
        test,
    })
}

/// The one line of a regex error that says what is wrong (its Display
/// repeats the pattern over several lines).
fn regex_problem(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find_map(|line| line.trim().strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or_default())
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use processor::AttributeValue;

    use super::*;
    use crate::top::query::test_flows::attrs;

    fn parse_error(text: &str) -> String {
        Filter::parse(text).unwrap_err()
    }

    #[test]
    fn where_takes_equals_not_equals_and_regex() {
        let filter = Filter::parse(
            "destination.port=5432,source.process.name!=sshd,destination.service=~^pg",
        )
        .unwrap();
        let mut a = Attributes::new();
        a.set("destination.port", AttributeValue::Int(5432));
        a.set("source.process.name", "psql");
        a.set("destination.service", "pg-main");
        assert!(filter.matches(&a));
        a.set("source.process.name", "sshd");
        assert!(!filter.matches(&a));
        a.set("source.process.name", "psql");
        a.set("destination.service", "main-pg");
        assert!(!filter.matches(&a));
        assert_eq!(
            filter.to_string(),
            "destination.port=5432,source.process.name!=sshd,destination.service=~^pg"
        );
    }

    #[test]
    fn where_trims_spaces_and_keeps_empty_values() {
        let filter = Filter::parse(" source.service = ").unwrap();
        assert!(filter.matches(&attrs(&[("source.service", "")])));
        assert!(!filter.matches(&attrs(&[("source.service", "web")])));
    }

    #[test]
    fn an_unknown_attribute_has_no_value() {
        let flow = attrs(&[("source.process.name", "curl")]);
        assert!(!Filter::parse("pod=web").unwrap().matches(&flow));
        assert!(!Filter::parse("pod=~.*").unwrap().matches(&flow));
        assert!(Filter::parse("pod!=web").unwrap().matches(&flow));
    }

    #[test]
    fn no_filter_matches_everything() {
        let filter = Filter::default();
        assert!(filter.matches(&Attributes::new()));
        assert_eq!(filter.to_string(), "all flows");
    }

    #[test]
    fn bad_where_says_which_part_is_wrong() {
        assert_eq!(
            parse_error("destination.port=53,sshd"),
            "\"sshd\" has no operator: use attr=value, attr!=value or attr=~regex"
        );
        assert_eq!(parse_error("=5432"), "\"=5432\" has no attribute name");
        assert_eq!(parse_error("!=5432"), "\"!=5432\" has no attribute name");
        assert_eq!(
            parse_error("a=1,,b=2"),
            "empty condition in \"a=1,,b=2\": conditions are joined by single commas"
        );
        assert_eq!(
            parse_error(""),
            "empty condition in \"\": conditions are joined by single commas"
        );
        assert_eq!(
            parse_error("destination.service=~(pg"),
            "\"destination.service=~(pg\" has an invalid regex: unclosed group"
        );
        assert_eq!(
            parse_error("dest port=1"),
            "attribute name \"dest port\" in \"dest port=1\" may only have letters, digits, '.', '_' and '-'"
        );
        for text in ["a", "a=~(", "a=1,,", "b c=1"] {
            assert!(!parse_error(text).contains('\n'), "{text}");
        }
    }
}
