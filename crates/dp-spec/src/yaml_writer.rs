//! Writing specs as YAML, for the files dp-models generates (downloader imports).
//!
//! The output is block-style YAML that this crate's reader (and PyYAML) read back as the
//! same JSON value: strings are left plain only when no YAML 1.1 or 1.2 resolver could
//! read them as anything else, and are otherwise written as JSON strings, which are valid
//! YAML double-quoted scalars.

use serde_json::Value;

/// Renders a JSON value (a mapping, for a spec) as a YAML document.
///
/// ```
/// let value = serde_json::json!({"model_name": "m", "shape": [-1, 384], "flag": true, "opset": "1.0", "n": 1});
/// let text = dp_spec::to_yaml(&value);
/// assert_eq!(text, "model_name: m\nshape: [-1, 384]\nflag: true\nopset: \"1.0\"\n\"n\": 1\n");
/// let back = dp_spec::SourceDocument::parse_str("x.yaml", &text, dp_spec::SourceFormat::Yaml)?;
/// assert_eq!(back.value, value);
/// # Ok::<(), dp_spec::DocumentError>(())
/// ```
#[must_use]
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(map, 0, &mut out),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn write_mapping(map: &serde_json::Map<String, Value>, indent: usize, out: &mut String) {
    for (key, value) in map {
        out.push_str(&" ".repeat(indent));
        write_key(key, indent, out);
        write_value_after_key(value, indent, out);
    }
}

/// YAML caps an implicit key at 1024 characters (YAML 1.2, 7.4.2); the quotes count too.
const IMPLICIT_KEY_MAX: usize = 1024;

/// Writes `key:` at the current position (already indented to `indent`); a key too long to
/// be implicit becomes explicit (`? key` then `:` on the next line, at `indent`).
fn write_key(key: &str, indent: usize, out: &mut String) {
    let rendered = scalar_string(key);
    if rendered.chars().count() < IMPLICIT_KEY_MAX {
        out.push_str(&rendered);
    } else {
        out.push_str("? ");
        out.push_str(&rendered);
        out.push('\n');
        out.push_str(&" ".repeat(indent));
    }
    out.push(':');
}

fn write_value_after_key(value: &Value, indent: usize, out: &mut String) {
    match value {
        Value::Object(inner) if !inner.is_empty() => {
            out.push('\n');
            write_mapping(inner, indent + 2, out);
        }
        Value::Array(items)
            if items.iter().any(is_collection) || inline(value).len() > FLOW_WIDTH =>
        {
            out.push('\n');
            write_sequence(items, indent + 2, out);
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

/// Lists of scalars up to this width stay on one line (`shape: [-1, 384]`); longer ones
/// are written one item per line, as people write them.
const FLOW_WIDTH: usize = 60;

fn write_sequence(items: &[Value], indent: usize, out: &mut String) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first member shares the dash's line; the rest align under it.
                let mut first = true;
                for (key, value) in map {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        out.push_str(&" ".repeat(indent + 2));
                    }
                    write_key(key, indent + 2, out);
                    write_value_after_key(value, indent + 2, out);
                }
            }
            Value::Array(inner) if inner.iter().any(is_collection) => {
                out.push('\n');
                write_sequence(inner, indent + 2, out);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

fn is_collection(value: &Value) -> bool {
    matches!(value, Value::Object(m) if !m.is_empty())
        || matches!(value, Value::Array(a) if !a.is_empty())
}

/// A value on one line: scalars, and flow collections of scalars.
fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar_string(s),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(inline).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Object(map) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar_string(k), inline(v)))
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
    }
}

/// A string as a plain scalar when that is unambiguous, else as a JSON string.
fn scalar_string(s: &str) -> String {
    if is_plain_safe(s) {
        s.to_owned()
    } else {
        serde_json::Value::String(s.to_owned()).to_string()
    }
}

/// Plain only for `[A-Za-z_][A-Za-z0-9_./-]*` (plus `:` not followed by a space, for
/// digests), and never a word that YAML 1.1 or 1.2 resolves to a bool, null or number.
fn is_plain_safe(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ':'))
        || s.ends_with(':')
    {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    !matches!(
        lower.as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "nan" | "inf"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::{SourceDocument, SourceFormat};

    #[test]
    fn every_sample_spec_round_trips() {
        let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/catalog");
        let mut checked = 0;
        for entry in walkdir::WalkDir::new(catalog) {
            let entry = entry.expect("walkable");
            if entry.path().extension().is_some_and(|e| e == "yaml") {
                let doc = SourceDocument::read(entry.path(), crate::ParseLimits::default())
                    .expect("readable");
                let text = to_yaml(&doc.value);
                let back = SourceDocument::parse_str("x.yaml", &text, SourceFormat::Yaml)
                    .unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(back.value, doc.value, "{}\n{text}", entry.path().display());
                checked += 1;
            }
        }
        assert!(checked >= 18);
    }

    #[test]
    fn keys_too_long_to_be_implicit_are_written_as_explicit_keys() {
        // Found by the spec_yaml fuzzer: a 1,300-character key made unreadable output.
        for len in [1020, 1022, 1023, 1024, 1300] {
            let long = "k".repeat(len);
            let quoted = format!("\u{18}{}", "x".repeat(len));
            let value = serde_json::json!({
                long.clone(): 1,
                "list": [{ "a": 1, quoted.clone(): { long.clone(): [1, 2] } }],
                quoted: "v",
            });
            let text = to_yaml(&value);
            let back = SourceDocument::parse_str("x.yaml", &text, SourceFormat::Yaml)
                .unwrap_or_else(|e| panic!("{len}: {e}\n{text}"));
            assert_eq!(back.value, value, "{len}");
        }
    }

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "yes", "No", "1.0", "0x10", "", " lead", "a: b", "#c", "- x", "null", "x:",
        ] {
            assert!(scalar_string(s).starts_with('"'), "{s:?}");
        }
        for s in ["cpu", "sha256:00ff", "all-minilm-l6-v2/model.onnx", "fp32"] {
            assert_eq!(scalar_string(s), s);
        }
    }
}
