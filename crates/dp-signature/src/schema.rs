//! The JSON Schemas of the records this crate defines, generated from the Rust types.
//!
//! They are generated with the settings `dp-spec` uses for its own schemas (draft 2020-12,
//! no `null` for optional fields, unit enums as plain `enum`s), so that a record's `runtime`
//! or `precision` is described exactly as in `model-spec.schema.json`. `dp-spec` keeps its
//! generator private, so the two transforms are restated here; a test compares the shared
//! definitions with dp-spec's to catch drift.

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema};
use serde_json::{Value, json};

use crate::record::{ModelsUsedEntry, ResolvedModelMapping};

/// Schema file name → schema, for every record format this crate owns:
/// `models-used-entry.schema.json` and `resolved-model-mapping.schema.json`.
///
/// ```
/// let schemas = dp_signature::generated_schemas();
/// let names: Vec<_> = schemas.iter().map(|(name, _)| *name).collect();
/// assert_eq!(names, ["models-used-entry.schema.json", "resolved-model-mapping.schema.json"]);
/// assert_eq!(schemas[0].1["title"], "ModelsUsedEntry");
/// ```
#[must_use]
pub fn generated_schemas() -> Vec<(&'static str, Value)> {
    vec![
        (
            "models-used-entry.schema.json",
            root_schema_for::<ModelsUsedEntry>(),
        ),
        (
            "resolved-model-mapping.schema.json",
            root_schema_for::<ResolvedModelMapping>(),
        ),
    ]
}

fn root_schema_for<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(|schema: &mut Schema| {
            drop_null_alternative(schema);
            unit_enums_as_enum(schema);
        }))
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

/// An optional field is left out of a record, never written `null`, so the `null`
/// alternative schemars adds for `Option<T>` is removed (`type: [T, "null"]` becomes
/// `type: T`; `anyOf: [S, {type: null}]` becomes `S`).
fn drop_null_alternative(schema: &mut Schema) {
    let null = json!("null");
    if let Some(Value::Array(types)) = schema.get("type")
        && types.len() == 2
        && types.contains(&null)
        && let Some(other) = types.iter().find(|t| **t != null).cloned()
    {
        schema.insert("type".into(), other);
    }
    let only_null = |v: &Value| {
        v.as_object()
            .is_some_and(|o| o.len() == 1 && o.get("type") == Some(&null))
    };
    let inner = match schema.get("anyOf") {
        Some(Value::Array(alternatives)) if alternatives.len() == 2 => {
            match alternatives.iter().position(only_null) {
                Some(null_at) => alternatives[1 - null_at].as_object().cloned(),
                None => None,
            }
        }
        _ => None,
    };
    if let Some(inner) = inner {
        schema.remove("anyOf");
        for (key, value) in inner {
            if schema.get(&key).is_none() {
                schema.insert(key, value);
            }
        }
    }
}

/// schemars renders an enum with documented variants as a `oneOf` of `const`s; other
/// languages read a plain `enum` more easily, so the variants become one, and their docs
/// move into the description as `- \`value\`: doc` lines.
fn unit_enums_as_enum(schema: &mut Schema) {
    let Some(variants) = schema.get("oneOf").and_then(Value::as_array) else {
        return;
    };
    let mut values = Vec::with_capacity(variants.len());
    let mut lines = Vec::with_capacity(variants.len());
    for variant in variants {
        let Some(object) = variant.as_object() else {
            return;
        };
        let Some(value) = object.get("const") else {
            return;
        };
        if object
            .keys()
            .any(|k| !matches!(k.as_str(), "const" | "description" | "type"))
        {
            return;
        }
        if let Some(doc) = object.get("description").and_then(Value::as_str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(name: &str) -> Value {
        generated_schemas()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no schema {name}"))
    }

    #[test]
    fn shared_definitions_match_dp_spec() {
        let spec_schema = dp_spec::schema::model_spec_schema();
        let entry = schema("models-used-entry.schema.json");
        for name in ["Runtime", "Engine", "Precision", "WeightsDigest"] {
            assert_eq!(
                entry["$defs"][name], spec_schema["$defs"][name],
                "definition {name} differs from dp-spec's"
            );
        }
    }

    #[test]
    fn optional_fields_are_not_nullable_and_enums_are_plain() {
        let entry = schema("models-used-entry.schema.json");
        assert_eq!(
            entry["$schema"],
            "https://json-schema.org/draft/2020-12/schema"
        );
        assert_eq!(entry["properties"]["role"]["type"], "string");
        assert_eq!(
            entry["properties"]["weights_digest"]["$ref"],
            "#/$defs/WeightsDigest"
        );
        assert!(entry["properties"]["weights_digest"].get("anyOf").is_none());
        assert_eq!(
            entry["$defs"]["Precision"]["enum"],
            json!(["fp32", "fp16", "bf16"])
        );
        assert_eq!(entry["$defs"]["SignatureVersion"]["enum"], json!(["dp1"]));
        let mut required: Vec<&str> = entry["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        required.sort_unstable();
        assert_eq!(
            required,
            [
                "device",
                "engine",
                "model_name",
                "model_signature",
                "model_signature_short",
                "model_version",
                "precision",
                "preprocess_signature",
                "runtime",
                "signature_version"
            ]
        );
    }

    #[test]
    fn mapping_schema_nests_the_entry() {
        let mapping = schema("resolved-model-mapping.schema.json");
        assert_eq!(mapping["title"], "ResolvedModelMapping");
        assert_eq!(
            mapping["properties"]["models"]["items"]["$ref"],
            "#/$defs/ResolvedRequest"
        );
        assert_eq!(
            mapping["$defs"]["ResolvedRequest"]["properties"]["model"]["$ref"],
            "#/$defs/ModelsUsedEntry"
        );
    }
}
