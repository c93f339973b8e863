//! Validation of one spec document at both levels — the generated JSON Schema, then the
//! semantic rules — producing [`Diagnostic`]s that name the file, the JSON pointer and,
//! where the text has one, the line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonschema::error::ValidationErrorKind;
use serde::Serialize;
use serde_json::Value;

use crate::document::{DocumentError, LocationIndex, SourceDocument, escape_pointer_token};
use crate::error::{ErrorCode, ModelError};
use crate::model_spec::ModelSpec;
use crate::rules::{RuleViolation, check_spec};
use crate::schema::model_spec_validator;
use crate::terminal::escape_controls;

/// One problem found in a spec, profile or catalog, located precisely.
///
/// Serialized as `{"file","pointer","line","column","error_code","message"}` (the
/// `dp validate --json` format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// JSON pointer of the offending value (`""` for the whole document).
    pub pointer: String,
    /// 1-based line, when the text has one for the pointer.
    pub line: Option<usize>,
    /// 1-based column, when the text has one for the pointer.
    pub column: Option<usize>,
    /// The stable code.
    pub error_code: ErrorCode,
    /// What is wrong and what to do.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic located through `locations`.
    pub fn located(
        file: &Path,
        locations: &LocationIndex,
        pointer: impl Into<String>,
        error_code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        let pointer = pointer.into();
        let position = locations.locate(&pointer);
        Self {
            file: file.to_owned(),
            line: position.map(|p| p.line),
            column: position.map(|p| p.column),
            pointer,
            error_code,
            message: message.into(),
        }
    }
}

/// One line for a human: `file[:line:column]: code at pointer: message`. File, pointer
/// and message can quote spec text (a field name, a value), so each goes through
/// [`escape_controls`]: what a spec holds must not reach a terminal as control sequences.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", escape_controls(&self.file.display().to_string()))?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        let pointer = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(
            f,
            ": {} at {}: {}",
            self.error_code,
            escape_controls(pointer),
            escape_controls(&self.message)
        )
    }
}

impl std::error::Error for Diagnostic {}

impl From<DocumentError> for Diagnostic {
    fn from(err: DocumentError) -> Self {
        Self {
            file: err.path,
            pointer: err.pointer,
            line: err.position.map(|p| p.line),
            column: err.position.map(|p| p.column),
            error_code: ErrorCode::InvalidSpec,
            message: err.message,
        }
    }
}

impl From<Diagnostic> for ModelError {
    fn from(d: Diagnostic) -> Self {
        let mut err = Self::new(d.error_code, d.message)
            .with_detail("file", d.file.display().to_string())
            .with_detail("pointer", d.pointer);
        if let (Some(line), Some(column)) = (d.line, d.column) {
            err = err.with_detail("line", line).with_detail("column", column);
        }
        err
    }
}

/// Validates a parsed spec document and returns the typed spec.
///
/// # Errors
/// Every schema and semantic problem, sorted by position.
pub fn validate_document(doc: &SourceDocument) -> Result<ModelSpec, Vec<Diagnostic>> {
    validate_value(&doc.path, &doc.value, &doc.locations)
}

/// Validates a spec given as a JSON value (e.g. after profiles were layered on it).
///
/// # Errors
/// Every schema and semantic problem, sorted by position.
pub fn validate_value(
    file: &Path,
    value: &Value,
    locations: &LocationIndex,
) -> Result<ModelSpec, Vec<Diagnostic>> {
    let schema_errors = schema_violations(value, model_spec_validator());
    let typed = serde_path_to_error::deserialize::<_, ModelSpec>(value);
    let (spec, semantic) = match typed {
        Ok(spec) => {
            let semantic = check_spec(&spec);
            (Some(spec), semantic)
        }
        Err(err) if schema_errors.is_empty() => {
            // The schema accepted what the types refuse: report it rather than hide it.
            let pointer = path_to_pointer(err.path());
            let violation = RuleViolation {
                pointer,
                error_code: ErrorCode::InvalidSpec,
                message: err.into_inner().to_string(),
            };
            (None, vec![violation])
        }
        Err(_) => (None, Vec::new()),
    };
    // The schema repeats some semantic rules so other languages enforce them too; where
    // both fire, keep the semantic diagnostic, whose code and message are more precise.
    let any_semantic = !semantic.is_empty();
    let (violations, rule_flags): (Vec<RuleViolation>, Vec<bool>) = schema_errors
        .into_iter()
        .filter(|(v, from_rule_block)| {
            let covered = semantic.iter().any(|s| {
                s.pointer == v.pointer
                    || (!v.pointer.is_empty()
                        && s.pointer.starts_with(&v.pointer)
                        && s.pointer.as_bytes().get(v.pointer.len()) == Some(&b'/'))
            });
            !(covered || any_semantic && *from_rule_block)
        })
        .unzip();
    // A rule-block failure at a pointer that a plain schema failure already explains
    // (e.g. an unknown engine fails both the enum and the runtime rule) is noise.
    let plain: Vec<String> = violations
        .iter()
        .zip(&rule_flags)
        .filter(|(_, from_rule_block)| !**from_rule_block)
        .map(|(v, _)| v.pointer.clone())
        .collect();
    let mut violations: Vec<RuleViolation> = violations
        .into_iter()
        .zip(rule_flags)
        .filter(|(v, from_rule_block)| !*from_rule_block || !plain.contains(&v.pointer))
        .map(|(v, _)| v)
        .collect();
    violations.extend(semantic);
    if let (true, Some(spec)) = (violations.is_empty(), spec) {
        return Ok(spec);
    }
    let mut diagnostics: Vec<Diagnostic> = violations
        .into_iter()
        .map(|v| Diagnostic::located(file, locations, v.pointer, v.error_code, v.message))
        .collect();
    sort_diagnostics(&mut diagnostics);
    diagnostics.dedup();
    Err(diagnostics)
}

/// Sorts diagnostics by file, then position, then pointer.
pub fn sort_diagnostics(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, &a.pointer, a.error_code).cmp(&(
            &b.file,
            b.line,
            b.column,
            &b.pointer,
            b.error_code,
        ))
    });
}

fn path_to_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&escape_pointer_token(key));
            }
            Segment::Enum { variant } => {
                pointer.push('/');
                pointer.push_str(&escape_pointer_token(variant));
            }
            Segment::Unknown => {}
        }
    }
    pointer
}

/// Schema violations, each flagged when it comes from the root `allOf`/`anyOf` rule block
/// (rules the semantic layer re-checks).
pub(crate) fn schema_violations(
    value: &Value,
    validator: &jsonschema::Validator,
) -> Vec<(RuleViolation, bool)> {
    let mut out = Vec::new();
    // The fast boolean check first: valid documents (the common case) skip error building.
    if validator.is_valid(value) {
        return out;
    }
    for error in validator.iter_errors(value) {
        let pointer = error.instance_path().as_str().to_owned();
        let schema_path = error.schema_path().as_str().to_owned();
        let from_rule_block = ["/allOf", "/anyOf", "/dependentRequired"]
            .iter()
            .any(|prefix| schema_path.starts_with(prefix));
        let describe = || error.to_string();
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                for name in unexpected {
                    out.push((
                        RuleViolation {
                            pointer: format!("{pointer}/{}", escape_pointer_token(name)),
                            error_code: ErrorCode::InvalidSpec,
                            message: format!(
                                "unknown field {name:?}; check its spelling against specs/schema"
                            ),
                        },
                        from_rule_block,
                    ));
                }
            }
            ValidationErrorKind::Required { property } => out.push((
                RuleViolation {
                    pointer,
                    error_code: ErrorCode::InvalidSpec,
                    message: format!("missing required field {property}"),
                },
                from_rule_block,
            )),
            ValidationErrorKind::Type { .. } if pointer.is_empty() => out.push((
                RuleViolation {
                    pointer,
                    error_code: ErrorCode::InvalidSpec,
                    message:
                        "the document is empty or not a mapping; a spec is a mapping of fields \
                              (see specs/schema/model-spec.schema.json)"
                            .into(),
                },
                from_rule_block,
            )),
            ValidationErrorKind::Pattern { .. }
                if explain_text(&pointer, error.instance()).is_some() =>
            {
                out.push((
                    RuleViolation {
                        message: explain_text(&pointer, error.instance()).unwrap_or_default(),
                        pointer,
                        error_code: ErrorCode::InvalidSpec,
                    },
                    from_rule_block,
                ));
            }
            ValidationErrorKind::Enum { options } => {
                let error_code = match pointer.as_str() {
                    "/runtime" => ErrorCode::UnsupportedRuntime,
                    "/engine" => ErrorCode::UnsupportedEngine,
                    _ => ErrorCode::InvalidSpec,
                };
                let allowed: Vec<String> = options
                    .as_array()
                    .map(|o| o.iter().map(Value::to_string).collect())
                    .unwrap_or_default();
                out.push((
                    RuleViolation {
                        message: format!(
                            "{} is not one of {}",
                            error.instance(),
                            allowed.join(", ")
                        ),
                        pointer,
                        error_code,
                    },
                    from_rule_block,
                ));
            }
            _ => {
                let error_code = ErrorCode::InvalidSpec;
                out.push((
                    RuleViolation {
                        message: describe(),
                        pointer,
                        error_code,
                    },
                    from_rule_block,
                ));
            }
        }
    }
    out
}

/// A better message than "does not match <regex>" for the fields whose text has a parser.
fn explain_text(pointer: &str, instance: &Value) -> Option<String> {
    let text = instance.as_str()?;
    let why = match pointer {
        "/weights_digest" | "/artifacts_digest" => {
            text.parse::<dp_digest::WeightsDigest>().err()?.to_string()
        }
        "/device_policy" => text
            .parse::<crate::model_spec::DevicePolicy>()
            .err()?
            .to_string(),
        _ => return None,
    };
    Some(why)
}
