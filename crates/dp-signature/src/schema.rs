//! The JSON Schemas of the records this crate defines, generated from the Rust types.
//!
//! They are generated with `dp-spec`'s generator ([`dp_spec::generator`]: draft
//! 2020-12, no `null` for optional fields, unit enums as plain `enum`s), so that a record's
//! `runtime` or `precision` is described exactly as in `model-spec.schema.json`.

use dp_spec::root_schema_for;
use serde_json::Value;

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

#[cfg(test)]
mod tests {
    use serde_json::json;

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
        let spec_schema = dp_spec::model_spec_schema();
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
            json!(["fp32", "fp16", "bf16", "int8"])
        );
        assert_eq!(
            entry["$defs"]["SignatureVersion"]["enum"],
            json!(["dp1", "dp2"])
        );
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
