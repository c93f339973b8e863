//! The encoding primitives of canonical strings: value escaping, canonical JSON and the
//! short hash. `docs/signatures.md` states these rules for readers in other languages; a
//! change here that alters any output is a new signature version (see
//! [`crate::SignatureVersion`]).

use std::collections::BTreeMap;

use serde_json::{Number, Value};
use sha2::{Digest, Sha256};

/// How an absent optional field is spelled. It cannot be confused with a value because the
/// encoder escapes a leading `-` ([`push_value`]).
pub(crate) const ABSENT: &str = "-";

/// Number of hexadecimal digits of SHA-256 kept by the short forms: 64 bits, enough to tell
/// apart the models of any realistic catalog while staying readable in logs.
const SHORT_HEX_DIGITS: usize = 16;

const UPPER_HEX: &[u8; 16] = b"0123456789ABCDEF";
const LOWER_HEX: &[u8; 16] = b"0123456789abcdef";

/// Builds `<prefix>:<key>=<value>;<key>=<value>…` with every value escaped.
pub(crate) struct FieldWriter {
    out: String,
    empty: bool,
}

impl FieldWriter {
    /// A writer whose output starts with `<prefix>:`.
    pub(crate) fn new(prefix: &str) -> Self {
        let mut out = String::with_capacity(320);
        out.push_str(prefix);
        out.push(':');
        Self { out, empty: true }
    }

    /// Appends one field; `None` is written as [`ABSENT`].
    pub(crate) fn field(&mut self, key: &str, value: Option<&str>) -> &mut Self {
        if !self.empty {
            self.out.push(';');
        }
        self.empty = false;
        self.out.push_str(key);
        self.out.push('=');
        match value {
            Some(value) => push_value(&mut self.out, value),
            None => self.out.push_str(ABSENT),
        }
        self
    }

    /// The finished string.
    pub(crate) fn finish(self) -> String {
        self.out
    }
}

/// Appends `value`, percent-encoding (`%XX`, uppercase hex, one per UTF-8 byte) every byte
/// outside printable ASCII `!`..`~`, the three bytes the format itself uses (`%`, `;`, `=`)
/// and a `-` in first position. After this, `;` only separates fields, the first `=` of a
/// field ends its key, and a value never reads as the absent marker `-`.
fn push_value(out: &mut String, value: &str) {
    for (index, byte) in value.bytes().enumerate() {
        let literal = (b'!'..=b'~').contains(&byte)
            && !matches!(byte, b'%' | b';' | b'=')
            && !(index == 0 && byte == b'-');
        if literal {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(UPPER_HEX[usize::from(byte >> 4)]));
            out.push(char::from(UPPER_HEX[usize::from(byte & 0x0F)]));
        }
    }
}

/// The canonical JSON text of a parameter map: an object whose keys, at every depth, are
/// sorted.
pub(crate) fn canonical_params(params: &BTreeMap<String, Value>) -> String {
    let mut out = String::new();
    // A BTreeMap already iterates in byte order of its keys, the order `push_json` sorts
    // nested objects into.
    push_object(&mut out, params.iter());
    out
}

/// Appends the canonical JSON text of `value`.
///
/// serde_json's own writer is not used on purpose: the workspace enables its
/// `preserve_order` feature (object keys keep the order of the file), and its number and
/// string formatting is the library's choice, not a documented contract of ours.
fn push_json(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => push_number(out, number),
        Value::String(text) => push_json_string(out, text),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                push_json(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // Byte order of the UTF-8 keys, which is also Unicode code point order.
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            push_object(out, entries.into_iter());
        }
    }
}

fn push_object<'a>(out: &mut String, entries: impl Iterator<Item = (&'a String, &'a Value)>) {
    out.push('{');
    for (index, (key, value)) in entries.enumerate() {
        if index > 0 {
            out.push(',');
        }
        push_json_string(out, key);
        out.push(':');
        push_json(out, value);
    }
    out.push('}');
}

/// Appends a number so that equal values are spelled alike, whichever way the file wrote
/// them: YAML `256`, `256.0` and `2.56e2` are one number.
///
/// - integers, and floats without a fractional part whose magnitude is below 2^64, print as
///   their exact decimal integer (`256`; `-0.0` prints `0`);
/// - any other float prints as the shortest decimal that reads back as the same `f64`,
///   without exponent (`0.5`, `0.000001`), which is what Rust's `Display` for `f64` writes.
fn push_number(out: &mut String, number: &Number) {
    if let Some(unsigned) = number.as_u64() {
        out.push_str(&unsigned.to_string());
    } else if let Some(signed) = number.as_i64() {
        out.push_str(&signed.to_string());
    } else if let Some(float) = number.as_f64() {
        // 2^64 as an f64: every integral float below it in magnitude converts to i128 exactly.
        const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
        if float == 0.0 {
            out.push('0');
        } else if float.fract() == 0.0 && float.abs() < TWO_POW_64 {
            // Exact, not saturating: the float is integral and within i128's range.
            let integral = float as i128;
            out.push_str(&integral.to_string());
        } else {
            out.push_str(&float.to_string());
        }
    }
}

/// Appends a JSON string literal: `"` and `\` are backslash-escaped, U+0008, U+0009,
/// U+000A, U+000C and U+000D use their short escapes (`\b \t \n \f \r`), the other
/// characters below U+0020 are written `\u00xx` (lowercase hex); everything else is written
/// as itself.
fn push_json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0C}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                // Below 0x20, so the cast keeps every bit.
                let code = c as u8;
                out.push_str("\\u00");
                out.push(char::from(LOWER_HEX[usize::from(code >> 4)]));
                out.push(char::from(LOWER_HEX[usize::from(code & 0x0F)]));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `<prefix><first 16 lowercase hex digits of SHA-256(text)>`.
pub(crate) fn short_hash(prefix: &str, text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(prefix.len() + SHORT_HEX_DIGITS);
    out.push_str(prefix);
    out.push_str(&hex::encode(&digest[..SHORT_HEX_DIGITS / 2]));
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn value(text: &str) -> String {
        let mut out = String::new();
        push_value(&mut out, text);
        out
    }

    fn json_text(v: &Value) -> String {
        let mut out = String::new();
        push_json(&mut out, v);
        out
    }

    #[test]
    fn values_escape_separators_spaces_and_non_ascii() {
        assert_eq!(value("1.0.0"), "1.0.0");
        assert_eq!(value("a;b=c%d"), "a%3Bb%3Dc%25d");
        assert_eq!(value("rev 2"), "rev%202");
        assert_eq!(value("é"), "%C3%A9");
        assert_eq!(value("-"), "%2D");
        assert_eq!(value("-rc-1"), "%2Drc-1");
        assert_eq!(value(""), "");
        assert_eq!(value("{\"a\":1}"), "{\"a\":1}");
    }

    #[test]
    fn fields_are_joined_with_semicolons_and_absent_is_a_dash() {
        let mut writer = FieldWriter::new("x1");
        writer
            .field("a", Some("1"))
            .field("b", None)
            .field("c", Some("-"));
        assert_eq!(writer.finish(), "x1:a=1;b=-;c=%2D");
    }

    #[test]
    fn objects_are_sorted_at_every_depth() {
        let v = json!({"b": {"z": 1, "a": [ {"y": true, "x": null} ]}, "a": "s"});
        assert_eq!(
            json_text(&v),
            r#"{"a":"s","b":{"a":[{"x":null,"y":true}],"z":1}}"#
        );
    }

    #[test]
    fn numbers_have_one_spelling() {
        assert_eq!(json_text(&json!(256)), "256");
        assert_eq!(json_text(&json!(256.0)), "256");
        assert_eq!(json_text(&json!(-3)), "-3");
        assert_eq!(json_text(&json!(-3.0)), "-3");
        assert_eq!(json_text(&json!(-0.0)), "0");
        assert_eq!(json_text(&json!(0.5)), "0.5");
        assert_eq!(json_text(&json!(1e-6)), "0.000001");
        assert_eq!(json_text(&json!(0.1)), "0.1");
        assert_eq!(json_text(&json!(u64::MAX)), "18446744073709551615");
        assert_eq!(
            json_text(&json!(1_152_921_504_606_846_976.0)),
            "1152921504606846976"
        );
        assert_eq!(json_text(&json!(1e20)), "100000000000000000000");
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_controls() {
        assert_eq!(
            json_text(&json!("a\"b\\c\n\t\u{1}\u{7f}é")),
            "\"a\\\"b\\\\c\\n\\t\\u0001\u{7f}é\""
        );
    }

    #[test]
    fn short_hash_is_sha256_prefix() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(short_hash("x-", "abc"), "x-ba7816bf8f01cfea");
    }
}
