//! Text from specs made safe to print for a human.
//!
//! Spec files, profiles and their field names are written by whoever controls the
//! catalog. A value holding `ESC [ 2 J` would clear the terminal of whoever runs
//! `dp list`, and an OSC sequence can retitle it or worse. Human output therefore passes
//! every spec-derived string through [`escape_controls`]; JSON output needs nothing,
//! since serde escapes every control character itself.

use std::borrow::Cow;

/// `text` with each character a terminal would act on written as its Rust escape
/// (`\u{1b}`, `\n`, `\t`): C0 and C1 controls and DEL (newline and tab included, so one
/// value stays on one line), and the bidirectional controls that reorder what is shown.
/// Everything else, backslashes included, is kept as is.
///
/// ```
/// use dp_spec::escape_controls;
///
/// assert_eq!(escape_controls("1.0\u{1b}[2J"), r"1.0\u{1b}[2J");
/// assert_eq!(escape_controls("a\nb\tc"), r"a\nb\tc");
/// assert_eq!(escape_controls("Modèle \\ 1"), "Modèle \\ 1");
/// ```
#[must_use]
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(acts_on_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\0' => out.push_str(r"\0"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if acts_on_terminal(c) => {
                // The form `{:?}` gives a control inside a message, so both read alike.
                out.push_str(r"\u{");
                out.push_str(&format!("{:x}", u32::from(c)));
                out.push('}');
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Controls (`Cc`: U+0000–U+001F, U+007F–U+009F) and the bidirectional marks, embeddings,
/// overrides and isolates (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069).
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_is_escaped_and_nothing_else() {
        let all: String = (0..=0x2100_u32).filter_map(char::from_u32).collect();
        let escaped = escape_controls(&all);
        assert!(
            !escaped.chars().any(acts_on_terminal),
            "a control survived: {escaped:?}"
        );
        for (raw, shown) in [
            ('\u{0}', r"\0"),
            ('\u{7}', r"\u{7}"),
            ('\n', r"\n"),
            ('\r', r"\r"),
            ('\t', r"\t"),
            ('\u{1b}', r"\u{1b}"),
            ('\u{7f}', r"\u{7f}"),
            ('\u{9b}', r"\u{9b}"),
            ('\u{202e}', r"\u{202e}"),
            ('\u{2069}', r"\u{2069}"),
        ] {
            assert_eq!(escape_controls(&raw.to_string()), shown, "{raw:?}");
        }
        for kept in [
            "plain",
            "é ü 漢字 🙂",
            "back\\slash",
            "\"quoted\" 'q'",
            "\u{200b}",
        ] {
            assert!(
                matches!(escape_controls(kept), Cow::Borrowed(s) if s == kept),
                "{kept:?}"
            );
        }
    }
}
