//! The JSON Schemas of the files this crate writes, generated from the Rust types.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::Value;

use crate::lock::LockFile;
use crate::manifest::Manifest;

/// Schema file name → schema, for every file format this crate owns: the lock file
/// (`lock-file.schema.json`) and a manifest (`manifest.schema.json`).
///
/// ```
/// let schemas = dp_digest::generated_schemas();
/// let names: Vec<_> = schemas.iter().map(|(name, _)| *name).collect();
/// assert_eq!(names, ["lock-file.schema.json", "manifest.schema.json"]);
/// assert_eq!(schemas[0].1["title"], "LockFile");
/// ```
#[must_use]
pub fn generated_schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("lock-file.schema.json", root_schema_for::<LockFile>()),
        ("manifest.schema.json", root_schema_for::<Manifest>()),
    ]
}

fn root_schema_for<T: JsonSchema>() -> Value {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::lock::LockEntry;
    use crate::manifest::{ManifestOptions, manifest_of_dir};

    fn validator(name: &str) -> jsonschema::Validator {
        let (_, schema) = generated_schemas()
            .into_iter()
            .find(|(n, _)| *n == name)
            .expect("schema exists");
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .expect("schema compiles")
    }

    #[test]
    fn written_files_conform_to_their_schemas() {
        let weights = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(weights.path().join("sub")).expect("mkdir");
        std::fs::write(weights.path().join("sub/model.bin"), b"weights").expect("write");
        let manifest =
            manifest_of_dir(weights.path(), &ManifestOptions::default()).expect("manifest");
        let manifest_json = serde_json::to_value(&manifest).expect("json");
        assert!(validator("manifest.schema.json").is_valid(&manifest_json));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("models.lock.json");
        LockFile::update(&path, |lock| {
            let pinned = LockEntry::new(
                "1",
                Some(manifest.aggregate),
                manifest.clone(),
                SystemTime::now(),
            );
            let unpinned = LockEntry::new("2", None, manifest.clone(), SystemTime::now());
            lock.models.insert("pinned".into(), pinned);
            lock.models.insert("unpinned".into(), unpinned);
            Ok::<_, crate::DigestError>(())
        })
        .expect("update");
        let text = std::fs::read_to_string(&path).expect("read");
        let mut lock_json: Value = serde_json::from_str(&text).expect("json");
        let lock_validator = validator("lock-file.schema.json");
        assert!(lock_validator.is_valid(&lock_json));

        // The schema refuses what the reader refuses: another version, unknown fields,
        // malformed digests.
        lock_json["version"] = 2.into();
        assert!(!lock_validator.is_valid(&lock_json));
        lock_json["version"] = 1.into();
        lock_json["models"]["pinned"]["extra"] = true.into();
        assert!(!lock_validator.is_valid(&lock_json));
        lock_json["models"]["pinned"]
            .as_object_mut()
            .expect("object")
            .remove("extra");
        lock_json["models"]["pinned"]["aggregate"] = "sha256:XYZ".into();
        assert!(!lock_validator.is_valid(&lock_json));
    }
}
