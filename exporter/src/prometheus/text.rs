//! The Prometheus text exposition format (version 0.0.4): quoting, label
//! sets and numbers as it writes them.
//!
//! The text is written here rather than with the `prometheus-client` crate:
//! that crate derives names itself from a base name and a unit (so it would
//! need the translated name split back apart), writes OpenMetrics with
//! `# UNIT` and `# EOF` lines, and keeps label sets as typed structs; the
//! 0.0.4 text format for counters and gauges is a few lines, and writing it
//! keeps the names exactly those of the specification and the output exact
//! for tests.

use std::fmt::Write as _;

use super::names::Labels;

/// The `Content-Type` of the exposition text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value as the exposition format quotes it: backslash, double
/// quote and newline escaped. With `quotes` false (for `# HELP` text), the
/// double quote is left alone.
pub fn escape(value: &str, quotes: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quotes => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn write_labels(out: &mut String, labels: &Labels) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (name, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{name}=\"{}\"", escape(value, true));
    }
    out.push('}');
}

/// A float as the exposition format writes it.
pub(super) fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd", true), "a\\\\b\\\"c\\nd");
        assert_eq!(escape("say \"hi\"\n", false), "say \"hi\"\\n");
    }
}
