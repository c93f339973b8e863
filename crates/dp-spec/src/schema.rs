//! The JSON Schemas generated from the Rust types, and the compiled validators.
//!
//! `cargo xtask schema` writes [`generated_schemas`] to `specs/schema/`; other languages
//! validate specs against those files. Rules that JSON Schema can express (which engines a
//! runtime accepts, what an artifact path may look like, what `inprocess` requires) are
//! added to the generated schema here, so Python and Rust reject the same files; the
//! semantic layer ([`crate::rules`]) checks them again with precise error codes.

use std::sync::OnceLock;

use schemars::{Schema, SchemaGenerator, generate::SchemaSettings, transform::RecursiveTransform};
use serde_json::{Value, json};

use crate::error::ModelError;
use crate::layering::ProfileFile;
use crate::model_spec::{Engine, ModelSpec, Runtime};

/// A URL scheme at the start of a path (`http:`, `s3:`, `file:`, `hf:`…).
pub const URL_SCHEME_PATTERN: &str = "^[A-Za-z][A-Za-z0-9+.-]*:";
/// A `..` path segment.
pub const PARENT_SEGMENT_PATTERN: &str = "(^|/)\\.\\.(/|$)";
/// A path made only of `.` segments and slashes (`.`, `./`, `.//.`): the models root.
pub const ROOT_ONLY_PATTERN: &str = "^(\\.?/)*\\.?$";

/// Schema file name → schema, for every schema this crate owns.
#[must_use]
pub fn generated_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("model-spec.schema.json", model_spec_schema().clone()),
        ("profile.schema.json", profile_schema().clone()),
        ("model-error.schema.json", root_schema_for::<ModelError>()),
    ]
}

/// The schema generator every dp-models schema is made with: draft 2020-12, optional fields
/// left out rather than `null`, and unit enums as a plain `enum` whose variants' docs move
/// into the description. Crates above `dp-spec` (`dp-signature`) use it so that a shared
/// type such as `Runtime` is described identically in every schema.
#[must_use]
pub fn generator() -> SchemaGenerator {
    SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(|schema: &mut Schema| {
            drop_null_alternative(schema);
            unit_enums_as_enum(schema);
        }))
        .into_generator()
}

/// schemars lets an `Option<T>` field be `null`. In a spec an absent field is simply left
/// out, so `null` is refused, and the field's own schema gives the error message.
fn drop_null_alternative(schema: &mut Schema) {
    let is_null = |v: &Value| {
        v.get("type") == Some(&json!("null")) && v.as_object().is_some_and(|o| o.len() == 1)
    };
    if let Some(Value::Array(types)) = schema.get("type")
        && types.len() == 2
        && types.contains(&json!("null"))
        && let Some(other) = types.iter().find(|t| *t != &json!("null")).cloned()
    {
        schema.insert("type".into(), other);
    }
    let Some(Value::Array(alternatives)) = schema.get("anyOf") else {
        return;
    };
    if alternatives.len() != 2 || !alternatives.iter().any(is_null) {
        return;
    }
    let Some(Value::Object(inner)) = alternatives.iter().find(|v| !is_null(v)).cloned() else {
        return;
    };
    schema.remove("anyOf");
    for (key, value) in inner {
        if schema.get(&key).is_none() {
            schema.insert(key, value);
        }
    }
}

/// schemars renders an enum whose variants carry doc comments as a `oneOf` of `const`s.
/// A plain `enum` is simpler for other languages and gives a clear error ("\"docker\" is
/// not one of [...]"); the variants' docs move into the description.
fn unit_enums_as_enum(schema: &mut Schema) {
    let Some(variants) = schema.get("oneOf").and_then(Value::as_array) else {
        return;
    };
    let mut values = Vec::with_capacity(variants.len());
    let mut lines = Vec::with_capacity(variants.len());
    for variant in variants {
        let Some(value) = variant.get("const") else {
            return;
        };
        let extra_keys = variant.as_object().map_or(0, |o| {
            o.keys()
                .filter(|k| !matches!(k.as_str(), "const" | "description" | "type"))
                .count()
        });
        if extra_keys > 0 {
            return;
        }
        if let Some(doc) = variant.get("description").and_then(Value::as_str) {
            lines.push(format!("- `{}`: {doc}", value.as_str().unwrap_or_default()));
        }
        values.push(value.clone());
    }
    schema.remove("oneOf");
    schema.insert("type".into(), json!("string"));
    schema.insert("enum".into(), Value::Array(values));
    if !lines.is_empty() {
        let head = schema
            .get("description")
            .and_then(Value::as_str)
            .map(|d| format!("{d}\n\n"))
            .unwrap_or_default();
        schema.insert(
            "description".into(),
            json!(format!("{head}{}", lines.join("\n"))),
        );
    }
}

/// The root schema of `T`, made with [`generator`].
///
/// ```
/// let schema = dp_spec::root_schema_for::<dp_spec::ModelError>();
/// assert_eq!(schema["title"], "ModelError");
/// assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
/// ```
#[must_use]
pub fn root_schema_for<T: schemars::JsonSchema>() -> Value {
    generator().into_root_schema_for::<T>().to_value()
}

/// The JSON Schema of a spec file.
#[must_use]
pub fn model_spec_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(root_schema_for::<ModelSpec>)
}

/// The JSON Schema of a profile file.
#[must_use]
pub fn profile_schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(root_schema_for::<ProfileFile>)
}

fn compile(schema: &Value) -> jsonschema::Validator {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(schema)
        // The schema is generated from our own types and covered by tests: failing to
        // compile it is a programming error, not an input error.
        .unwrap_or_else(|e| panic!("generated schema does not compile: {e}"))
}

/// The compiled validator of [`model_spec_schema`].
pub(crate) fn model_spec_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| compile(model_spec_schema()))
}

/// The compiled validator of [`profile_schema`].
pub(crate) fn profile_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| compile(profile_schema()))
}

/// Rules added to the generated `ModelSpec` schema (see the module docs).
pub(crate) fn add_model_spec_rules(schema: &mut Schema) {
    let runtime_rules: Vec<Value> = [Runtime::Inprocess, Runtime::Triton]
        .into_iter()
        .map(|runtime| {
            let engines: Vec<&str> = runtime
                .supported_engines()
                .iter()
                .map(|e| e.as_str())
                .collect();
            let then = match runtime {
                Runtime::Inprocess => json!({
                    "required": ["weights_digest", "local_artifacts"],
                    "properties": {
                        "engine": { "enum": engines },
                        "local_artifacts": { "minItems": 1 }
                    },
                    "not": { "required": ["triton"] }
                }),
                Runtime::Triton => json!({
                    "required": ["triton"],
                    "properties": { "engine": { "enum": engines } }
                }),
            };
            json!({
                "if": {
                    "type": "object",
                    "properties": { "runtime": { "const": runtime.as_str() } },
                    "required": ["runtime"]
                },
                "then": then
            })
        })
        .collect();
    let mut rules = runtime_rules;
    // int8 names a quantized graph, which candle does not run (rules.rs says the same).
    rules.push(json!({
        "if": {
            "type": "object",
            "properties": { "engine": { "const": Engine::Candle.as_str() } },
            "required": ["engine"]
        },
        "then": { "properties": { "precision": { "not": { "const": "int8" } } } }
    }));
    schema.insert("allOf".into(), Value::Array(rules));
    schema.insert(
        "anyOf".into(),
        json!([
            { "required": ["role"] },
            { "required": ["roles"], "properties": { "roles": { "minItems": 1 } } }
        ]),
    );
    schema.insert(
        "dependentRequired".into(),
        json!({ "preprocess_params": ["preprocess_preset"] }),
    );
    // The preset vocabulary, so other languages refuse an unknown preset name too.
    if let Some(preset) = schema
        .pointer_mut("/properties/preprocess_preset")
        .and_then(Value::as_object_mut)
    {
        preset.insert("enum".into(), json!(crate::rules::PRESET_NAMES));
    }
    if let Some(aliases) = schema
        .pointer_mut("/properties/aliases")
        .and_then(Value::as_object_mut)
    {
        aliases.insert("uniqueItems".into(), Value::Bool(true));
    }
    if let Some(items) = schema
        .pointer_mut("/properties/local_artifacts/items")
        .and_then(Value::as_object_mut)
    {
        items.insert(
            "allOf".into(),
            json!([
                { "not": { "pattern": URL_SCHEME_PATTERN } },
                { "not": { "pattern": "^[/\\\\]" } },
                { "not": { "pattern": PARENT_SEGMENT_PATTERN } },
                { "not": { "pattern": ROOT_ONLY_PATTERN } },
                { "not": { "pattern": "\\\\" } }
            ]),
        );
        items.insert(
            "description".into(),
            json!("A path relative to ${DP_MODELS_ROOT}, with `/` separators."),
        );
    }
}

/// Rules added to the generated profile schema: a patch may name only `ModelSpec` fields,
/// and never `model_name` (a profile cannot rename a model).
pub(crate) fn add_profile_rules(schema: &mut Schema) {
    let mut fields: Vec<Value> = model_spec_schema()
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .keys()
                .filter(|k| k.as_str() != "model_name")
                .map(|k| Value::String(k.clone()))
                .collect()
        })
        .unwrap_or_default();
    fields.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    if let Some(models) = schema
        .pointer_mut("/properties/models")
        .and_then(Value::as_object_mut)
    {
        models.insert(
            "additionalProperties".into(),
            json!({
                "type": "object",
                "propertyNames": { "enum": fields },
                "description": "A JSON merge patch (RFC 7386) applied to the model's spec."
            }),
        );
        models.insert(
            "propertyNames".into(),
            json!({ "pattern": crate::model_spec::MODEL_NAME_PATTERN }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_compile_and_name_the_draft() {
        for (name, schema) in generated_schemas() {
            assert_eq!(
                schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
                "{name}"
            );
            let _ = compile(&schema);
        }
    }

    #[test]
    fn engine_rules_come_from_runtime_supported_engines() {
        let schema = model_spec_schema();
        assert_eq!(
            schema.pointer("/allOf/1/then/properties/engine/enum"),
            Some(&json!(["onnx", "tensorrt", "torch"]))
        );
    }
}
