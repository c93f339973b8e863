//! Profiles and run overrides layered on top of the catalog.
//!
//! Precedence, lowest to highest: **catalog < profile files (in the order given) <
//! explicit overrides**. Each layer is a JSON merge patch (RFC 7386) on a model's spec:
//! objects merge key by key, any other value replaces, `null` removes a field. A layer
//! may not rename a model. The layered spec is validated again in full, and a problem
//! caused by a layer is reported in that layer's file, at that layer's line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::{Catalog, CatalogEntry};
use crate::diagnostic::{Diagnostic, schema_violations, sort_diagnostics, validate_value};
use crate::document::{
    LocationIndex, NESTING_ADVICE, ParseLimits, SourceDocument, SourceFormat, escape_pointer_token,
    json_depth,
};
use crate::error::ErrorCode;
use crate::schema::profile_validator;

/// A profile file: per-model patches for one deployment (`gpu`, `cpu-only`…).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Profile", transform = crate::schema::add_profile_rules)]
pub struct ProfileFile {
    /// Name of the profile.
    #[schemars(length(min = 1, max = 128))]
    pub profile: String,
    /// What the profile is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Model name → merge patch of its spec.
    #[serde(default)]
    pub models: BTreeMap<String, Map<String, Value>>,
}

/// One layer above the catalog: a profile file or the explicit overrides.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Shown in diagnostics and listings (`profile gpu`, `overrides`).
    pub name: String,
    /// The file the layer came from (`<overrides>` for command-line overrides).
    pub file: PathBuf,
    /// Model name → patch.
    pub patches: BTreeMap<String, Map<String, Value>>,
    /// Positions in `file`, keyed by the pointer *inside the file*.
    pub locations: LocationIndex,
    /// Whether patches sit under `/models/<name>` (profiles) or stand alone (overrides).
    from_profile: bool,
}

impl Layer {
    /// Reads and validates a profile file.
    ///
    /// # Errors
    /// Every problem in the file.
    pub fn read_profile(path: &Path) -> Result<Self, Vec<Diagnostic>> {
        let doc = SourceDocument::read(path, ParseLimits::default()).map_err(|e| vec![e.into()])?;
        Self::from_profile_document(&doc)
    }

    /// Validates a parsed profile document.
    ///
    /// # Errors
    /// Every problem in the document.
    pub fn from_profile_document(doc: &SourceDocument) -> Result<Self, Vec<Diagnostic>> {
        let violations = schema_violations(&doc.value, profile_validator());
        if !violations.is_empty() {
            let mut out: Vec<Diagnostic> = violations
                .into_iter()
                .map(|(v, _)| {
                    Diagnostic::located(
                        &doc.path,
                        &doc.locations,
                        v.pointer,
                        v.error_code,
                        v.message,
                    )
                })
                .collect();
            sort_diagnostics(&mut out);
            return Err(out);
        }
        let profile: ProfileFile = serde_json::from_value(doc.value.clone()).map_err(|e| {
            vec![Diagnostic::located(
                &doc.path,
                &doc.locations,
                "",
                ErrorCode::InvalidSpec,
                e.to_string(),
            )]
        })?;
        Ok(Self {
            name: format!("profile {}", profile.profile),
            file: doc.path.clone(),
            patches: profile.models,
            locations: doc.locations.clone(),
            from_profile: true,
        })
    }

    /// Builds the override layer from `MODEL.FIELD[.SUBFIELD…]=VALUE` assignments. The value
    /// is read as YAML (`fp16`, `0`, `true`, `[a, b]`, `{text: true}`).
    ///
    /// ```
    /// let layer = dp_spec::Layer::from_overrides(&["minilm.device_policy=cpu", "minilm.capabilities.text=true"])?;
    /// assert_eq!(layer.patches["minilm"]["device_policy"], "cpu");
    /// assert_eq!(layer.patches["minilm"]["capabilities"]["text"], true);
    /// # Ok::<(), dp_spec::Diagnostic>(())
    /// ```
    ///
    /// # Errors
    /// An assignment that is not of that form, or that would nest the spec deeper than
    /// [`ParseLimits::max_depth`] (the limit a spec file has).
    pub fn from_overrides<S: AsRef<str>>(assignments: &[S]) -> Result<Self, Diagnostic> {
        let file = PathBuf::from("<overrides>");
        let max_depth = ParseLimits::default().max_depth;
        let mut patches: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for assignment in assignments {
            let assignment = assignment.as_ref();
            let bad = |why: &str| Diagnostic {
                file: file.clone(),
                pointer: String::new(),
                line: None,
                column: None,
                error_code: ErrorCode::InvalidSpec,
                message: format!(
                    "override {assignment:?} {why}; write MODEL.FIELD[.SUBFIELD…]=VALUE, e.g. all-minilm-l6-v2.device_policy=cpu"
                ),
            };
            let (path, raw) = assignment
                .split_once('=')
                .ok_or_else(|| bad("has no '='"))?;
            let mut parts = path.split('.');
            let model = parts
                .next()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| bad("names no model"))?;
            let fields: Vec<&str> = parts.collect();
            if fields.is_empty() || fields.iter().any(|f| f.is_empty()) {
                return Err(bad("names no field"));
            }
            // Checked before the value is read or anything is built from the path: the
            // patch, the merge and validation all recurse once per level, so a depth
            // chosen on the command line must not get to choose the stack's depth too.
            if fields.len() > max_depth {
                return Err(too_deep(&file, path, &fields, fields.len(), max_depth));
            }
            let value = SourceDocument::parse_str("<override>", raw, SourceFormat::Yaml)
                .map_err(|e| {
                    bad(&format!(
                        "has a value that is not valid YAML ({})",
                        e.message
                    ))
                })?
                .value;
            // The value was read within the limit, so its depth is cheap to measure.
            let depth = fields.len() + json_depth(&value);
            if depth > max_depth {
                return Err(too_deep(&file, path, &fields, depth, max_depth));
            }
            let patch = patches.entry(model.to_owned()).or_default();
            set_path(patch, &fields, value);
        }
        Ok(Self {
            name: "overrides".into(),
            file,
            patches,
            locations: LocationIndex::default(),
            from_profile: false,
        })
    }

    /// Pointer prefix of a model's patch inside the layer's file.
    fn patch_base(&self, model: &str) -> String {
        if self.from_profile {
            format!("/models/{}", escape_pointer_token(model))
        } else {
            String::new()
        }
    }

    fn locate(&self, model: &str, pointer: &str) -> Option<crate::document::TextPosition> {
        let base = self.patch_base(model);
        self.locations.locate(&format!("{base}{pointer}"))
    }
}

/// The refusal of an override whose key path and value nest `depth` levels, more than
/// `max_depth`. Located at the first field past the limit (or at the field whose value
/// crosses it); quotes only the start of the key path, which may be thousands of levels.
fn too_deep(
    file: &Path,
    path: &str,
    fields: &[&str],
    depth: usize,
    max_depth: usize,
) -> Diagnostic {
    const SHOWN_CHARS: usize = 80;
    let pointer: String = fields
        .iter()
        .take(max_depth + 1)
        .map(|f| format!("/{}", escape_pointer_token(f)))
        .collect();
    let mut shown: String = path.chars().take(SHOWN_CHARS).collect();
    if shown.len() < path.len() {
        shown.push('…');
    }
    Diagnostic {
        file: file.to_owned(),
        pointer,
        line: None,
        column: None,
        error_code: ErrorCode::InvalidSpec,
        message: format!(
            "override {shown:?} sets a value {depth} levels deep, more than the {max_depth} \
             levels a spec may nest; {NESTING_ADVICE}"
        ),
    }
}

/// Sets `value` at `fields` under `target`, creating (or replacing non-object) parents.
/// A loop rather than recursion, so the depth of `fields` never costs stack.
fn set_path(target: &mut Map<String, Value>, fields: &[&str], value: Value) {
    let Some((last, parents)) = fields.split_last() else {
        return;
    };
    let mut map = target;
    for field in parents {
        let child = map
            .entry((*field).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !child.is_object() {
            *child = Value::Object(Map::new());
        }
        let Value::Object(child) = child else {
            return; // unreachable: made an object just above
        };
        map = child;
    }
    map.insert((*last).to_owned(), value);
}

/// Pointers of the leaves a merge patch sets (objects are descended; anything else is a leaf).
fn patch_leaves(patch: &Map<String, Value>, base: &str, out: &mut Vec<String>) {
    for (key, value) in patch {
        let pointer = format!("{base}/{}", escape_pointer_token(key));
        match value {
            Value::Object(inner) if !inner.is_empty() => patch_leaves(inner, &pointer, out),
            _ => out.push(pointer),
        }
    }
}

/// Whether `a` is `b`, or one is an ancestor of the other, segment-wise.
fn pointers_overlap(a: &str, b: &str) -> bool {
    let related = |long: &str, short: &str| {
        long.starts_with(short)
            && (long.len() == short.len() || long.as_bytes()[short.len()] == b'/')
    };
    related(a, b) || related(b, a)
}

/// A catalog with every layer applied, and which layers touched each model.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedCatalog {
    /// The layered, re-validated catalog.
    pub catalog: Catalog,
    /// Model name → names of the layers that changed it, lowest first.
    pub provenance: BTreeMap<String, Vec<String>>,
}

/// Applies `layers` (lowest precedence first) on top of `catalog`.
///
/// # Errors
/// Patches for unknown models, attempts to rename a model, and every problem of a layered
/// spec, located in the layer that caused it when one did.
pub fn resolve(catalog: &Catalog, layers: &[Layer]) -> Result<ResolvedCatalog, Vec<Diagnostic>> {
    let mut diagnostics = Vec::new();
    for layer in layers {
        for model in layer.patches.keys() {
            if catalog.get(model).is_none() {
                let pointer = layer.patch_base(model);
                diagnostics.push(Diagnostic {
                    file: layer.file.clone(),
                    line: layer.locations.locate(&pointer).map(|p| p.line),
                    column: layer.locations.locate(&pointer).map(|p| p.column),
                    pointer,
                    error_code: ErrorCode::ModelNotFound,
                    message: format!(
                        "{} patches model {model:?}, which is not in the catalog; run 'dp list' for the names",
                        layer.name
                    ),
                });
            }
        }
    }
    let mut entries = Vec::with_capacity(catalog.len());
    let mut provenance = BTreeMap::new();
    for entry in catalog.entries() {
        let name = &entry.spec.model_name;
        // Aliases may be used as keys too; the canonical name wins if both are present.
        let mut applied: Vec<(&Layer, Vec<String>)> = Vec::new();
        let mut value = entry.document.value.clone();
        for layer in layers {
            let patches = layer
                .patches
                .iter()
                .filter(|(key, _)| catalog.get(key).is_some_and(|e| &e.spec.model_name == name));
            for (key, patch) in patches {
                if patch.contains_key("model_name") {
                    let pointer = format!("{}/model_name", layer.patch_base(key));
                    let pos = layer.locations.locate(&pointer);
                    diagnostics.push(Diagnostic {
                        file: layer.file.clone(),
                        pointer,
                        line: pos.map(|p| p.line),
                        column: pos.map(|p| p.column),
                        error_code: ErrorCode::InvalidSpec,
                        message: format!("{} may not rename model {name:?}", layer.name),
                    });
                    continue;
                }
                json_patch::merge(&mut value, &Value::Object(patch.clone()));
                let mut leaves = Vec::new();
                patch_leaves(patch, "", &mut leaves);
                applied.push((layer, leaves));
            }
        }
        if applied.is_empty() {
            entries.push(entry.clone());
            continue;
        }
        provenance.insert(
            name.clone(),
            applied
                .iter()
                .map(|(layer, _)| layer.name.clone())
                .collect(),
        );
        match validate_value(&entry.document.path, &value, &entry.document.locations) {
            Ok(spec) => {
                let mut document = entry.document.clone();
                document.value = value;
                entries.push(CatalogEntry {
                    spec,
                    document,
                    role_dir: entry.role_dir.clone(),
                });
            }
            Err(found) => {
                for mut d in found {
                    // Blame the highest layer that set this field, at its own line.
                    let culprit = applied
                        .iter()
                        .rev()
                        .find(|(_, leaves)| leaves.iter().any(|l| pointers_overlap(l, &d.pointer)));
                    if let Some((layer, _)) = culprit {
                        let key = layer
                            .patches
                            .keys()
                            .find(|k| catalog.get(k).is_some_and(|e| &e.spec.model_name == name))
                            .map_or(name.as_str(), String::as_str);
                        let pos = layer.locate(key, &d.pointer);
                        d.message =
                            format!("{} (set by {} for model {name:?})", d.message, layer.name);
                        d.file = layer.file.clone();
                        d.line = pos.map(|p| p.line);
                        d.column = pos.map(|p| p.column);
                    }
                    diagnostics.push(d);
                }
            }
        }
    }
    if !diagnostics.is_empty() {
        sort_diagnostics(&mut diagnostics);
        return Err(diagnostics);
    }
    let catalog = Catalog::from_entries(catalog.root(), entries)?;
    Ok(ResolvedCatalog {
        catalog,
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_segment_wise() {
        assert!(pointers_overlap("/a", "/a/b"));
        assert!(pointers_overlap("/a/b", "/a"));
        assert!(pointers_overlap("/a", "/a"));
        assert!(!pointers_overlap("/ab", "/a"));
        assert!(pointers_overlap("", "/a"));
    }

    #[test]
    fn overrides_parse_nested_fields_and_yaml_values() {
        let layer = Layer::from_overrides(&[
            "m.tier=0",
            "m.aliases=[x, y]",
            "m.triton.endpoint=http://127.0.0.1:1",
        ])
        .expect("valid");
        let patch = &layer.patches["m"];
        assert_eq!(patch["tier"], 0);
        assert_eq!(patch["aliases"], serde_json::json!(["x", "y"]));
        assert_eq!(patch["triton"]["endpoint"], "http://127.0.0.1:1");
        for bad in ["m", "m=1", ".x=1", "m..x=1", "m.x=[unclosed"] {
            let err = Layer::from_overrides(&[bad]).unwrap_err();
            assert_eq!(err.error_code, ErrorCode::InvalidSpec, "{bad}");
        }
        // A later, deeper assignment replaces a scalar parent with a mapping.
        let layer = Layer::from_overrides(&["m.a=1", "m.a.b.c=2"]).expect("valid");
        assert_eq!(
            Value::Object(layer.patches["m"].clone()),
            serde_json::json!({"a": {"b": {"c": 2}}})
        );
    }

    #[test]
    fn overrides_nest_at_most_as_deep_as_a_spec_file() {
        let limit = ParseLimits::default().max_depth;
        let path = |levels: usize| format!("m{}", ".a".repeat(levels));
        // Exactly at the limit: a key path `limit` deep with a scalar, or shorter with a
        // nested value, is what a spec file `limit` levels deep holds.
        let layer = Layer::from_overrides(&[format!("{}=1", path(limit))]).expect("at the limit");
        let mut depth = 0;
        let mut node = &Value::Object(layer.patches["m"].clone());
        while let Some(inner) = node.get("a") {
            depth += 1;
            node = inner;
        }
        assert_eq!(depth, limit);
        Layer::from_overrides(&[format!("{}=[1]", path(limit - 1))]).expect("at the limit");
        for (assignment, depth) in [
            (format!("{}=1", path(limit + 1)), limit + 1),
            (format!("{}=[1]", path(limit)), limit + 1),
            (format!("{}={{b: [1]}}", path(limit - 1)), limit + 1),
            (format!("{}=1", path(1_000_000)), 1_000_000),
        ] {
            let err = Layer::from_overrides(&[assignment.as_str()]).unwrap_err();
            assert_eq!(err.error_code, ErrorCode::InvalidSpec);
            assert_eq!(err.file, PathBuf::from("<overrides>"));
            let expected = format!("{depth} levels deep, more than the {limit} levels");
            assert!(err.message.contains(&expected), "{}", err.message);
            assert!(err.message.len() < 400, "{}", err.message);
            // Located at the first level past the limit, or at the field whose value is.
            let levels = err.pointer.matches('/').count();
            assert_eq!(
                levels,
                depth.min(limit + 1).min(assignment.matches('.').count())
            );
        }
    }
}
