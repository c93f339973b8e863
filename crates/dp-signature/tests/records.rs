//! The records this crate writes validate against the schemas it generates, so a reader in
//! another language can check them with `models-used-entry.schema.json` and
//! `resolved-model-mapping.schema.json`.

use dp_signature::{
    ModelsUsedEntry, Placement, Resolution, ResolvedModelMapping, generated_schemas,
};
use dp_spec::{ModelSpec, Precision, ResolvedDevice, Runtime, SourceDocument, SourceFormat};
use serde_json::{Value, json};

fn validator(name: &str) -> jsonschema::Validator {
    let schema = generated_schemas()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no schema {name}"));
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
    validator
        .iter_errors(value)
        .map(|e| e.to_string())
        .collect()
}

/// Every spec of the repository's catalog, parsed and validated.
fn catalog_specs() -> Vec<ModelSpec> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../specs/catalog");
    let mut specs = Vec::new();
    let roles = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for role in roles.flatten() {
        let files = std::fs::read_dir(role.path()).unwrap_or_else(|e| panic!("{e}"));
        for file in files.flatten() {
            let path = file.path();
            let Some(format) = SourceFormat::from_path(&path) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
            let doc =
                SourceDocument::parse_str(&path, &text, format).unwrap_or_else(|e| panic!("{e}"));
            specs.push(dp_spec::validate_document(&doc).unwrap_or_else(|d| panic!("{d:?}")));
        }
    }
    specs.sort_by(|a, b| a.model_name.cmp(&b.model_name));
    specs
}

#[test]
fn catalog_records_validate_against_the_generated_schemas() {
    let entry_schema = validator("models-used-entry.schema.json");
    let mapping_schema = validator("resolved-model-mapping.schema.json");
    let specs = catalog_specs();
    assert!(specs.len() > 10, "catalog has {} specs", specs.len());
    let mut mapping = ResolvedModelMapping::new();
    // Canonical string → short form: distinct models must not share a short form.
    let mut shorts = std::collections::BTreeMap::new();
    for spec in &specs {
        // What a CPU-only build resolves, and what a GPU build might.
        let elsewhere = match spec.runtime {
            Runtime::Triton => Resolution::new(Placement::Triton, Precision::Fp16),
            Runtime::Inprocess => {
                Resolution::new(Placement::Local(ResolvedDevice::Cuda(1)), Precision::Fp16)
            }
        };
        let resolutions = Resolution::for_cpu_build(spec)
            .ok()
            .into_iter()
            .chain([elsewhere]);
        for resolution in resolutions {
            let entry = ModelsUsedEntry::new(spec, &resolution);
            let json = serde_json::to_value(&entry).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                errors(&entry_schema, &json),
                Vec::<String>::new(),
                "{json:#}"
            );
            shorts.insert(
                entry.model_signature.clone(),
                entry.model_signature_short.clone(),
            );
            mapping.record(spec.model_name.clone(), entry);
        }
    }
    let json = serde_json::to_value(&mapping).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(errors(&mapping_schema, &json), Vec::<String>::new());
    let distinct: std::collections::BTreeSet<&String> = shorts.values().collect();
    assert_eq!(
        distinct.len(),
        shorts.len(),
        "two models share a short form"
    );
    assert_eq!(mapping.len(), shorts.len());
}

#[test]
fn schemas_refuse_malformed_records() {
    let entry_schema = validator("models-used-entry.schema.json");
    let spec: ModelSpec = serde_json::from_value(json!({
        "model_name": "m", "model_version": "1", "role": "r",
        "runtime": "inprocess", "engine": "onnx", "local_artifacts": ["m.onnx"],
        "weights_digest": format!("sha256:{}", "0".repeat(64))
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let resolution = Resolution::for_cpu_build(&spec).unwrap_or_else(|e| panic!("{e}"));
    let good = serde_json::to_value(ModelsUsedEntry::new(&spec, &resolution))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(entry_schema.is_valid(&good));
    for (field, bad) in [
        ("device", json!("gpu")),
        ("device", json!("cuda:01")),
        ("precision", json!("fp8")),
        ("signature_version", json!("dp9")),
        ("artifacts_digest", json!("sha256:00")),
        ("model_signature_short", json!("dp1-XYZ")),
        ("preprocess_signature", json!("pp1:")),
        ("role", Value::Null),
        ("weights_digest", json!("md5:00")),
    ] {
        let mut record = good.clone();
        record[field] = bad.clone();
        assert!(
            !entry_schema.is_valid(&record),
            "{field} = {bad} was accepted"
        );
    }
    let mut missing = good;
    if let Value::Object(map) = &mut missing {
        map.remove("model_signature");
    }
    assert!(!entry_schema.is_valid(&missing));
}
