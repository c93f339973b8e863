//! Reading spec files: YAML or JSON text → a JSON value plus, for every JSON pointer, the
//! line and column where it is written.
//!
//! YAML is read with `saphyr-parser` (the maintained successor of `yaml-rust`; `serde_yaml`
//! is deprecated) at the event level, so that we control three things a tree loader would
//! decide for us: the position of every node, the nesting depth, and alias expansion. Every
//! alias is charged the full size of the node it repeats *before* it is copied, so a
//! "billion laughs" file fails after a few events instead of eating memory.
//!
//! Plain scalars are resolved with the YAML 1.2 core schema (`true`, `null`, `0x1F`, `1e3`…).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, Tag};
use serde_json::{Map, Number, Value};

use crate::error::{ErrorCode, ModelError};

/// The syntax of a spec or profile file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFormat {
    /// YAML 1.2 (`.yaml`, `.yml`).
    Yaml,
    /// JSON (`.json`).
    Json,
}

impl SourceFormat {
    /// The format a file name implies, if any.
    #[must_use]
    pub fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "yaml" | "yml" => Some(Self::Yaml),
            "json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Bounds that keep hostile files from exhausting memory or the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest accepted file, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of mappings and sequences.
    pub max_depth: usize,
    /// Most nodes the document may expand to, aliases counted at their full size.
    pub max_nodes: usize,
}

impl Default for ParseLimits {
    /// Generous for a spec (a real one has ~100 nodes, depth ≤ 5) yet cheap to reach.
    fn default() -> Self {
        Self {
            max_bytes: 1 << 20,
            max_depth: 64,
            max_nodes: 100_000,
        }
    }
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TextPosition {
    /// Line, starting at 1.
    pub line: usize,
    /// Column in characters, starting at 1.
    pub column: usize,
}

impl TextPosition {
    fn from_marker(marker: &Marker) -> Self {
        Self {
            line: marker.line(),
            column: marker.col() + 1,
        }
    }
}

/// Where each JSON pointer of a document is written. For a mapping member the position is
/// that of its key, the place a reader looks for the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocationIndex {
    positions: HashMap<String, TextPosition>,
}

impl LocationIndex {
    /// The position of `pointer`, or of its nearest ancestor that has one.
    #[must_use]
    pub fn locate(&self, pointer: &str) -> Option<TextPosition> {
        let mut current = pointer;
        loop {
            if let Some(pos) = self.positions.get(current) {
                return Some(*pos);
            }
            if current.is_empty() {
                return None;
            }
            current = current.rfind('/').map_or("", |i| &current[..i]);
        }
    }

    fn insert(&mut self, pointer: String, pos: TextPosition) {
        self.positions.entry(pointer).or_insert(pos);
    }
}

/// A parsed spec or profile file.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceDocument {
    /// The file the text came from (as given; used in diagnostics).
    pub path: PathBuf,
    /// The syntax it was read as.
    pub format: SourceFormat,
    /// The document as JSON.
    pub value: Value,
    /// Where each pointer is written.
    pub locations: LocationIndex,
}

/// A file that could not be read as a document, with the place that stopped it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), position.map(|p| format!(":{}:{}", p.line, p.column)).unwrap_or_default())]
pub struct DocumentError {
    /// The file.
    pub path: PathBuf,
    /// Where the problem is, when known.
    pub position: Option<TextPosition>,
    /// JSON pointer of the node being built, when known.
    pub pointer: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl From<DocumentError> for ModelError {
    fn from(err: DocumentError) -> Self {
        let mut out = Self::new(ErrorCode::InvalidSpec, err.message)
            .with_detail("file", err.path.display().to_string())
            .with_detail("pointer", err.pointer);
        if let Some(pos) = err.position {
            out = out
                .with_detail("line", pos.line)
                .with_detail("column", pos.column);
        }
        out
    }
}

impl SourceDocument {
    /// Reads and parses a file, choosing the syntax from its extension.
    ///
    /// # Errors
    /// When the file cannot be read, is too large, or is not a well-formed document.
    pub fn read(path: &Path, limits: ParseLimits) -> Result<Self, DocumentError> {
        let fail = |message: String| DocumentError {
            path: path.to_owned(),
            position: None,
            pointer: String::new(),
            message,
        };
        let format = SourceFormat::from_path(path).ok_or_else(|| {
            fail("unsupported file extension; spec files end in .yaml, .yml or .json".into())
        })?;
        let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read file: {e}")))?;
        if meta.len() > limits.max_bytes as u64 {
            return Err(fail(format!(
                "file is {} bytes, more than the {} bytes a spec may have",
                meta.len(),
                limits.max_bytes
            )));
        }
        let bytes = dp_digest::read_regular_file(path, "file").map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            fail(format!(
                "file is not valid UTF-8 (byte {}); save it as UTF-8",
                e.utf8_error().valid_up_to()
            ))
        })?;
        Self::parse_str_with(path, &text, format, limits)
    }

    /// Parses text with the default [`ParseLimits`].
    ///
    /// # Errors
    /// When the text is not a well-formed document within the limits.
    pub fn parse_str(
        path: impl Into<PathBuf>,
        text: &str,
        format: SourceFormat,
    ) -> Result<Self, DocumentError> {
        Self::parse_str_with(&path.into(), text, format, ParseLimits::default())
    }

    /// Parses text with explicit limits.
    ///
    /// # Errors
    /// When the text is not a well-formed document within the limits.
    pub fn parse_str_with(
        path: &Path,
        text: &str,
        format: SourceFormat,
        limits: ParseLimits,
    ) -> Result<Self, DocumentError> {
        if text.len() > limits.max_bytes {
            return Err(DocumentError {
                path: path.to_owned(),
                position: None,
                pointer: String::new(),
                message: format!(
                    "document is {} bytes, more than the {} bytes a spec may have",
                    text.len(),
                    limits.max_bytes
                ),
            });
        }
        match format {
            SourceFormat::Yaml => {
                let (value, locations) = YamlBuilder::new(path, limits).build(text)?;
                Ok(Self {
                    path: path.to_owned(),
                    format,
                    value,
                    locations,
                })
            }
            SourceFormat::Json => {
                // serde_json is the authority on JSON (and bounds recursion at 128 levels);
                // the YAML reader, which accepts JSON, only supplies positions.
                let value: Value = serde_json::from_str(text).map_err(|e| DocumentError {
                    path: path.to_owned(),
                    position: Some(TextPosition {
                        line: e.line(),
                        column: e.column(),
                    }),
                    pointer: String::new(),
                    message: json_error_message(&e),
                })?;
                let depth = json_depth(&value);
                if depth > limits.max_depth {
                    return Err(DocumentError {
                        path: path.to_owned(),
                        position: None,
                        pointer: String::new(),
                        message: format!(
                            "document nests {depth} levels deep, more than the {} allowed; \
                             {NESTING_ADVICE}",
                            limits.max_depth
                        ),
                    });
                }
                let locations = YamlBuilder::new(path, limits)
                    .build(text)
                    .map(|(_, locations)| locations)
                    .unwrap_or_default();
                Ok(Self {
                    path: path.to_owned(),
                    format,
                    value,
                    locations,
                })
            }
        }
    }
}

/// What to do about a document nested beyond the limits.
pub(crate) const NESTING_ADVICE: &str = "a spec is a shallow mapping of fields: flatten the value, or \
                              keep large data in a file beside the spec";

/// The message of a JSON syntax error. serde_json's own recursion limit (128 levels) is
/// reached before `ParseLimits::max_depth` can be checked: say so in the same words, with
/// the same advice, rather than as a bare "recursion limit exceeded".
fn json_error_message(err: &serde_json::Error) -> String {
    if err.to_string().starts_with("recursion limit exceeded") {
        format!(
            "document nests more than 128 levels deep (the JSON reader's recursion limit); \
             {NESTING_ADVICE}"
        )
    } else {
        format!("invalid JSON: {err}")
    }
}

/// Levels of nesting of arrays and objects (`{"a": 1}` is 1). Recursive: call it only on
/// values read within [`ParseLimits::max_depth`].
pub(crate) fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Escapes one JSON pointer reference token (RFC 6901).
#[must_use]
pub fn escape_pointer_token(token: &str) -> Cow<'_, str> {
    if token.contains(['~', '/']) {
        Cow::Owned(token.replace('~', "~0").replace('/', "~1"))
    } else {
        Cow::Borrowed(token)
    }
}

/// A collection under construction.
enum Frame {
    Sequence {
        items: Vec<Value>,
        pointer: String,
        anchor: usize,
        nodes: usize,
    },
    Mapping {
        map: Map<String, Value>,
        pointer: String,
        anchor: usize,
        nodes: usize,
        /// The key read and waiting for its value.
        pending_key: Option<String>,
    },
}

struct YamlBuilder<'p> {
    path: &'p Path,
    limits: ParseLimits,
    stack: Vec<Frame>,
    /// Anchored nodes and their size in nodes, for alias expansion.
    anchors: HashMap<usize, (Value, usize)>,
    locations: LocationIndex,
    total_nodes: usize,
    root: Option<Value>,
    documents: usize,
}

impl<'p> YamlBuilder<'p> {
    fn new(path: &'p Path, limits: ParseLimits) -> Self {
        Self {
            path,
            limits,
            stack: Vec::new(),
            anchors: HashMap::new(),
            locations: LocationIndex::default(),
            total_nodes: 0,
            root: None,
            documents: 0,
        }
    }

    fn error(&self, marker: Option<&Marker>, message: impl Into<String>) -> DocumentError {
        DocumentError {
            path: self.path.to_owned(),
            position: marker.map(TextPosition::from_marker),
            pointer: self.current_pointer(),
            message: message.into(),
        }
    }

    fn current_pointer(&self) -> String {
        match self.stack.last() {
            None => String::new(),
            Some(Frame::Sequence { items, pointer, .. }) => format!("{pointer}/{}", items.len()),
            Some(Frame::Mapping {
                pointer,
                pending_key,
                ..
            }) => match pending_key {
                Some(key) => format!("{pointer}/{}", escape_pointer_token(key)),
                None => pointer.clone(),
            },
        }
    }

    /// True when the next node is a mapping key rather than a value.
    fn expecting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(Frame::Mapping {
                pending_key: None,
                ..
            })
        )
    }

    fn build(mut self, text: &str) -> Result<(Value, LocationIndex), DocumentError> {
        let mut parser = Parser::new_from_str(text);
        while let Some(next) = parser.next_event() {
            let (event, span) = next.map_err(|e| {
                // The parser bounds its own recursion in flow collections (`[[[[…`), which
                // can trip before `max_depth` is checked: give the same message and advice.
                let message = if e.info().contains("recursion limit") {
                    format!(
                        "document nests too deep for the YAML reader ({}); {NESTING_ADVICE}",
                        e.info()
                    )
                } else {
                    format!("invalid YAML: {}", e.info())
                };
                self.error(Some(e.marker()), message)
            })?;
            let start = span.start;
            match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => {}
                Event::DocumentStart(_) => {
                    self.documents += 1;
                    if self.documents > 1 {
                        return Err(self.error(
                            Some(&start),
                            "a spec file holds exactly one document; remove the extra '---'",
                        ));
                    }
                }
                Event::Alias(id) => {
                    if self.expecting_key() {
                        return Err(self.error(Some(&start), "aliases cannot be mapping keys"));
                    }
                    let Some(&(_, nodes)) = self.anchors.get(&id) else {
                        return Err(self.error(Some(&start), "alias refers to an unknown anchor"));
                    };
                    // Charge before copying: the budget check is what stops an alias bomb.
                    self.charge(nodes, &start)?;
                    let value = self.anchors[&id].0.clone();
                    self.record_position(&start);
                    self.attach(value, nodes, 0, &start)?;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    if self.expecting_key() {
                        self.charge(1, &start)?;
                        self.set_key(text.into_owned(), &start)?;
                        continue;
                    }
                    self.charge(1, &start)?;
                    let value = self.resolve_scalar(&text, style, tag.as_deref(), &start)?;
                    self.record_position(&start);
                    self.attach(value, 1, anchor, &start)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    self.check_collection_tag(tag.as_deref(), "seq", &start)?;
                    let pointer = self.open_collection(&start)?;
                    self.stack.push(Frame::Sequence {
                        items: Vec::new(),
                        pointer,
                        anchor,
                        nodes: 1,
                    });
                }
                Event::MappingStart(anchor, tag) => {
                    self.check_collection_tag(tag.as_deref(), "map", &start)?;
                    let pointer = self.open_collection(&start)?;
                    self.stack.push(Frame::Mapping {
                        map: Map::new(),
                        pointer,
                        anchor,
                        nodes: 1,
                        pending_key: None,
                    });
                }
                Event::SequenceEnd => match self.stack.pop() {
                    Some(Frame::Sequence {
                        items,
                        anchor,
                        nodes,
                        ..
                    }) => self.attach(Value::Array(items), nodes, anchor, &start)?,
                    _ => return Err(self.error(Some(&start), "unbalanced sequence end")),
                },
                Event::MappingEnd => match self.stack.pop() {
                    Some(Frame::Mapping {
                        map, anchor, nodes, ..
                    }) => self.attach(Value::Object(map), nodes, anchor, &start)?,
                    _ => return Err(self.error(Some(&start), "unbalanced mapping end")),
                },
            }
        }
        Ok((self.root.unwrap_or(Value::Null), self.locations))
    }

    fn charge(&mut self, nodes: usize, at: &Marker) -> Result<(), DocumentError> {
        self.total_nodes = self.total_nodes.saturating_add(nodes);
        if self.total_nodes > self.limits.max_nodes {
            return Err(self.error(
                Some(at),
                format!(
                    "document expands to more than {} nodes (aliases count at their full size); \
                     a spec this large is almost certainly an alias bomb",
                    self.limits.max_nodes
                ),
            ));
        }
        Ok(())
    }

    fn record_position(&mut self, at: &Marker) {
        // Mapping members were recorded at their key; sequence items and the root here.
        let pointer = self.current_pointer();
        self.locations
            .insert(pointer, TextPosition::from_marker(at));
    }

    fn open_collection(&mut self, start: &Marker) -> Result<String, DocumentError> {
        if self.expecting_key() {
            return Err(self.error(
                Some(start),
                "complex mapping keys are not supported; keys must be plain strings",
            ));
        }
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.error(
                Some(start),
                format!(
                    "document nests deeper than {} levels; {NESTING_ADVICE}",
                    self.limits.max_depth
                ),
            ));
        }
        self.charge(1, start)?;
        self.record_position(start);
        Ok(self.current_pointer())
    }

    fn set_key(&mut self, key: String, at: &Marker) -> Result<(), DocumentError> {
        let (duplicate, pointer) = match self.stack.last() {
            Some(Frame::Mapping { map, pointer, .. }) => (map.contains_key(&key), pointer.clone()),
            _ => (false, String::new()),
        };
        let member_pointer = format!("{pointer}/{}", escape_pointer_token(&key));
        if duplicate {
            return Err(DocumentError {
                path: self.path.to_owned(),
                position: Some(TextPosition::from_marker(at)),
                pointer: member_pointer,
                message: format!("duplicate key {key:?}; each field may appear once"),
            });
        }
        self.locations
            .insert(member_pointer, TextPosition::from_marker(at));
        if let Some(Frame::Mapping { pending_key, .. }) = self.stack.last_mut() {
            *pending_key = Some(key);
        }
        Ok(())
    }

    /// Hands a finished node to its parent (or makes it the root).
    fn attach(
        &mut self,
        value: Value,
        nodes: usize,
        anchor: usize,
        at: &Marker,
    ) -> Result<(), DocumentError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), nodes));
        }
        match self.stack.last_mut() {
            None => {
                self.root = Some(value);
            }
            Some(Frame::Sequence {
                items, nodes: n, ..
            }) => {
                items.push(value);
                *n += nodes;
            }
            Some(Frame::Mapping {
                map,
                pending_key,
                nodes: n,
                ..
            }) => {
                let Some(key) = pending_key.take() else {
                    return Err(self.error(Some(at), "mapping value without a key"));
                };
                map.insert(key, value);
                *n += nodes;
            }
        }
        Ok(())
    }

    fn check_collection_tag(
        &self,
        tag: Option<&Tag>,
        expected: &str,
        at: &Marker,
    ) -> Result<(), DocumentError> {
        match tag {
            None => Ok(()),
            Some(tag) if tag.is_yaml_core_schema() && tag.suffix == expected => Ok(()),
            Some(tag) => Err(self.error(
                Some(at),
                format!("unsupported YAML tag {tag}; specs use plain YAML without tags"),
            )),
        }
    }

    fn resolve_scalar(
        &self,
        text: &str,
        style: ScalarStyle,
        tag: Option<&Tag>,
        at: &Marker,
    ) -> Result<Value, DocumentError> {
        let bad = |what: &str| self.error(Some(at), format!("{text:?} is not a valid {what}"));
        if let Some(tag) = tag {
            if !tag.is_yaml_core_schema() {
                if tag.handle == "!" && tag.suffix.is_empty() {
                    return Ok(Value::String(text.to_owned()));
                }
                return Err(self.error(
                    Some(at),
                    format!("unsupported YAML tag {tag}; specs use plain YAML without tags"),
                ));
            }
            return match tag.suffix.as_str() {
                "str" => Ok(Value::String(text.to_owned())),
                "null" => core_null(text).ok_or_else(|| bad("null")),
                "bool" => core_bool(text).ok_or_else(|| bad("boolean")),
                "int" => core_int(text).ok_or_else(|| bad("integer")),
                "float" => match core_float(text) {
                    Some(Ok(v)) => Ok(v),
                    Some(Err(())) => Err(self.non_finite(text, at)),
                    None => core_int(text)
                        .and_then(|v| v.as_f64())
                        .and_then(Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| bad("float")),
                },
                other => Err(self.error(
                    Some(at),
                    format!("unsupported YAML tag !!{other} on a scalar"),
                )),
            };
        }
        if style != ScalarStyle::Plain {
            return Ok(Value::String(text.to_owned()));
        }
        if let Some(v) = core_null(text).or_else(|| core_bool(text)) {
            return Ok(v);
        }
        if looks_like_int(text) {
            return core_int(text).ok_or_else(|| {
                self.error(
                    Some(at),
                    format!("integer {text} is out of range; quote it if it is meant as text"),
                )
            });
        }
        match core_float(text) {
            Some(Ok(v)) => Ok(v),
            Some(Err(())) => Err(self.non_finite(text, at)),
            None => Ok(Value::String(text.to_owned())),
        }
    }

    fn non_finite(&self, text: &str, at: &Marker) -> DocumentError {
        self.error(
            Some(at),
            format!("{text} is not a finite number; JSON (and so a spec) cannot hold it"),
        )
    }
}

fn core_null(text: &str) -> Option<Value> {
    matches!(text, "" | "~" | "null" | "Null" | "NULL").then_some(Value::Null)
}

fn core_bool(text: &str) -> Option<Value> {
    match text {
        "true" | "True" | "TRUE" => Some(Value::Bool(true)),
        "false" | "False" | "FALSE" => Some(Value::Bool(false)),
        _ => None,
    }
}

/// Core-schema integer shapes: `[-+]?[0-9]+`, `0o[0-7]+`, `0x[0-9a-fA-F]+`.
fn looks_like_int(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if let Some(oct) = text.strip_prefix("0o") {
        return !oct.is_empty() && oct.bytes().all(|b| (b'0'..=b'7').contains(&b));
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn core_int(text: &str) -> Option<Value> {
    if !looks_like_int(text) {
        return None;
    }
    let parsed = if let Some(oct) = text.strip_prefix("0o") {
        u64::from_str_radix(oct, 8).ok().map(Number::from)
    } else if let Some(hex) = text.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok().map(Number::from)
    } else if text.starts_with('-') {
        text.parse::<i64>().ok().map(Number::from)
    } else {
        text.trim_start_matches('+')
            .parse::<u64>()
            .ok()
            .map(Number::from)
    };
    parsed.map(Value::Number)
}

/// Core-schema floats. `Some(Err(()))` for `.inf`/`.nan`, which JSON cannot represent.
fn core_float(text: &str) -> Option<Result<Value, ()>> {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if matches!(unsigned, ".inf" | ".Inf" | ".INF") || matches!(text, ".nan" | ".NaN" | ".NAN") {
        return Some(Err(()));
    }
    // [-+]? ( \.[0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty()) && all_digits(int) && all_digits(frac)
        }
        None => !mantissa.is_empty() && all_digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let digits = e.strip_prefix(['-', '+']).unwrap_or(e);
        !digits.is_empty() && all_digits(digits)
    });
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return Some(Err(()));
    }
    Some(Ok(
        Number::from_f64(value).map_or(Value::Null, Value::Number)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(text: &str) -> Result<SourceDocument, DocumentError> {
        SourceDocument::parse_str("t.yaml", text, SourceFormat::Yaml)
    }

    #[test]
    fn resolves_core_schema_scalars() {
        let doc = yaml(
            "a: 1\nb: -2\nc: 0x1F\nd: 1.5\ne: true\nf: ~\ng: '3'\nh: text\ni: 1e3\nj: 0o17\nk: .5\nl: null\n",
        )
        .expect("parses");
        assert_eq!(
            doc.value,
            json!({"a":1,"b":-2,"c":31,"d":1.5,"e":true,"f":null,"g":"3","h":"text","i":1000.0,"j":15,"k":0.5,"l":null})
        );
    }

    #[test]
    fn yaml_1_1_words_stay_strings() {
        let doc = yaml("a: yes\nb: off\nc: 1.2.3\nd: 0755x\n").expect("parses");
        assert_eq!(
            doc.value,
            json!({"a":"yes","b":"off","c":"1.2.3","d":"0755x"})
        );
    }

    #[test]
    fn records_positions_of_keys_and_items() {
        let doc =
            yaml("model_name: x\nnested:\n  inner: 1\nlist:\n  - a\n  - b\n").expect("parses");
        let at = |p: &str| doc.locations.locate(p).map(|p| (p.line, p.column));
        assert_eq!(at("/model_name"), Some((1, 1)));
        assert_eq!(at("/nested/inner"), Some((3, 3)));
        assert_eq!(at("/list/1"), Some((6, 5)));
        // A pointer with no node of its own falls back to its nearest ancestor.
        assert_eq!(at("/nested/missing"), Some((2, 1)));
    }

    #[test]
    fn rejects_duplicate_keys_with_position() {
        let err = yaml("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.pointer, "/a");
        assert_eq!(err.position, Some(TextPosition { line: 3, column: 1 }));
    }

    #[test]
    fn billion_laughs_fails_fast() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = format!("*a{}", i - 1);
            let items = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{items}]\n"));
        }
        let started = std::time::Instant::now();
        let err = yaml(&text).unwrap_err();
        assert!(err.message.contains("alias bomb"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn nesting_beyond_any_parser_limit_says_what_to_do() {
        // Deep enough for serde_json's and saphyr's own recursion limits, in both syntaxes.
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        for format in [SourceFormat::Yaml, SourceFormat::Json] {
            let err = SourceDocument::parse_str("t", &deep, format).unwrap_err();
            assert!(err.message.contains("nests"), "{format:?}: {}", err.message);
            assert!(
                err.message.contains(NESTING_ADVICE),
                "{format:?}: {}",
                err.message
            );
        }
    }

    #[test]
    fn bounds_depth() {
        let deep = "[".repeat(100) + &"]".repeat(100);
        let err = yaml(&deep).unwrap_err();
        assert!(err.message.contains("deeper than 64"), "{}", err.message);
        let err = SourceDocument::parse_str("t.json", &deep, SourceFormat::Json).unwrap_err();
        assert!(err.message.contains("64"), "{}", err.message);
    }

    #[test]
    fn rejects_multiple_documents_tags_and_non_finite() {
        assert!(
            yaml("a: 1\n---\nb: 2\n")
                .unwrap_err()
                .message
                .contains("one document")
        );
        assert!(yaml("a: !custom 1\n").unwrap_err().message.contains("tag"));
        assert!(yaml("a: .inf\n").unwrap_err().message.contains("finite"));
        assert!(
            yaml("a: 99999999999999999999\n")
                .unwrap_err()
                .message
                .contains("out of range")
        );
    }

    #[test]
    fn json_gets_positions_too() {
        let doc = SourceDocument::parse_str(
            "t.json",
            "{\n  \"a\": 1,\n  \"b\": [true, \"x\"]\n}\n",
            SourceFormat::Json,
        )
        .expect("parses");
        assert_eq!(doc.value, json!({"a":1,"b":[true,"x"]}));
        let b1 = doc.locations.locate("/b/1").expect("located");
        assert_eq!((b1.line, b1.column), (3, 15));
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        let err = SourceDocument::parse_str("t.json", "{\n  \"a\": ,\n}", SourceFormat::Json)
            .unwrap_err();
        assert_eq!(err.position.map(|p| p.line), Some(2));
    }
}
