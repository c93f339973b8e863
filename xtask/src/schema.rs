//! `cargo xtask schema`: the JSON Schemas generated from the Rust types, written to
//! `specs/schema/` so that other languages validate specs against the same rules.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::fsutil::write_atomic;

/// Where the schemas live, relative to the workspace root.
pub(crate) const SCHEMA_DIR: &str = "specs/schema";

/// The suffix of every generated file. Only files with it are ours to compare and remove:
/// anything else in the folder (a README, say) is left alone.
const SUFFIX: &str = ".schema.json";

/// Generated file name → file contents.
pub(crate) type Rendered = BTreeMap<String, String>;

/// Renders schemas as the files `schema` writes: pretty JSON and a final newline.
///
/// Fails on a name that is not a plain `*.schema.json` file name, since it would be
/// written outside the folder or never compared.
pub(crate) fn render(schemas: Vec<(&'static str, Value)>) -> Result<Rendered> {
    let mut rendered = Rendered::new();
    for (name, schema) in schemas {
        ensure!(
            name.ends_with(SUFFIX) && !name.contains(['/', '\\']) && !name.starts_with('.'),
            "generated_schemas() returned `{name}`: schema names must be \
             plain file names ending in `{SUFFIX}`"
        );
        let mut text = serde_json::to_string_pretty(&schema)
            .with_context(|| format!("cannot serialize {name}"))?;
        text.push('\n');
        ensure!(
            rendered.insert(name.to_owned(), text).is_none(),
            "two crates' generated_schemas() return `{name}`"
        );
    }
    Ok(rendered)
}

/// How a schema folder differs from the generated files. Each list is sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Drift {
    /// Files whose contents differ from what is generated.
    pub(crate) stale: Vec<String>,
    /// Generated files that are absent from the folder.
    pub(crate) missing: Vec<String>,
    /// `*.schema.json` files in the folder that are no longer generated.
    pub(crate) extra: Vec<String>,
}

impl Drift {
    /// Whether the folder holds exactly the generated files.
    pub(crate) fn is_empty(&self) -> bool {
        self.stale.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups = [
            ("stale (differs from the Rust types)", &self.stale),
            ("missing", &self.missing),
            ("extra (no longer generated)", &self.extra),
        ];
        for (label, names) in groups {
            for name in names {
                writeln!(f, "  {label}: {SCHEMA_DIR}/{name}")?;
            }
        }
        Ok(())
    }
}

/// Compares the generated files with the `*.schema.json` files in `dir`, reading only.
///
/// A missing `dir` is not an error: every generated file is then missing.
pub(crate) fn compare(expected: &Rendered, dir: &Path) -> Result<Drift> {
    let on_disk = read_schema_files(dir)?;
    let mut drift = Drift::default();
    for (name, contents) in expected {
        match on_disk.get(name) {
            None => drift.missing.push(name.clone()),
            Some(found) if found != contents.as_bytes() => drift.stale.push(name.clone()),
            Some(_) => {}
        }
    }
    drift.extra = on_disk
        .into_keys()
        .filter(|name| !expected.contains_key(name))
        .collect();
    Ok(drift)
}

/// The `*.schema.json` files in `dir`, by name; empty if `dir` does not exist.
fn read_schema_files(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        // A name that is not UTF-8 cannot be one of ours.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !name.ends_with(SUFFIX) || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let contents = std::fs::read(entry.path())
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        files.insert(name, contents);
    }
    Ok(files)
}

/// Brings `dir` in line with `expected`: writes stale and missing files atomically and
/// removes extra ones. Returns what it changed (what differed before).
pub(crate) fn sync(expected: &Rendered, dir: &Path) -> Result<Drift> {
    let drift = compare(expected, dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Unchanged files are not rewritten, so their modification times stay put.
    for name in drift.stale.iter().chain(&drift.missing) {
        let contents = expected.get(name).map_or("", String::as_str);
        write_atomic(&dir.join(name), contents.as_bytes())?;
    }
    for name in &drift.extra {
        let path = dir.join(name);
        std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    }
    Ok(drift)
}

/// Every generated schema of the workspace: the specs and errors (`dp-spec`), the lock file
/// and manifest (`dp-digest`), the `models_used` entry and resolved mapping
/// (`dp-signature`).
fn all_schemas() -> Vec<(&'static str, Value)> {
    let mut schemas = dp_spec::generated_schemas();
    schemas.extend(dp_digest::generated_schemas());
    schemas.extend(dp_signature::generated_schemas());
    schemas
}

/// `cargo xtask schema`: writes the generated schemas to `specs/schema/`.
pub(crate) fn write(root: &Path) -> Result<()> {
    let expected = render(all_schemas())?;
    let drift = sync(&expected, &root.join(SCHEMA_DIR))?;
    let unchanged = expected.len() - drift.stale.len() - drift.missing.len();
    println!(
        "schema: {} written, {} removed, {unchanged} unchanged ({SCHEMA_DIR}/)",
        drift.stale.len() + drift.missing.len(),
        drift.extra.len(),
    );
    Ok(())
}

/// `cargo xtask schema --check`: fails if `specs/schema/` is not what the types generate.
pub(crate) fn check(root: &Path) -> Result<()> {
    let expected = render(all_schemas())?;
    let drift = compare(&expected, &root.join(SCHEMA_DIR))?;
    if !drift.is_empty() {
        bail!(
            "{SCHEMA_DIR}/ does not match the schemas generated from the Rust types:\n{drift}\
             fix: run `cargo xtask schema` and commit the result"
        );
    }
    println!("schema: ok ({} files up to date)", expected.len());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use serde_json::json;

    use super::*;

    /// Two schemas, as `generated_schemas` would return them.
    fn generated() -> Rendered {
        render(vec![
            ("a.schema.json", json!({ "type": "object" })),
            ("b.schema.json", json!({ "type": "string" })),
        ])
        .unwrap()
    }

    #[test]
    fn render_is_pretty_json_with_a_final_newline() {
        let rendered = generated();
        assert_eq!(rendered["a.schema.json"], "{\n  \"type\": \"object\"\n}\n");
    }

    #[test]
    fn render_rejects_names_outside_the_folder_or_without_the_suffix() {
        for name in ["../a.schema.json", "sub/a.schema.json", "a.json"] {
            assert!(render(vec![(name, json!({}))]).is_err(), "{name}");
        }
    }

    #[test]
    fn check_passes_on_fresh_output() {
        let dir = tempfile::tempdir().unwrap();
        let first = sync(&generated(), dir.path()).unwrap();
        assert_eq!(first.missing, ["a.schema.json", "b.schema.json"]);
        assert_eq!(compare(&generated(), dir.path()).unwrap(), Drift::default());
    }

    #[test]
    fn check_fails_when_a_type_changed() {
        let dir = tempfile::tempdir().unwrap();
        sync(&generated(), dir.path()).unwrap();
        // The Rust type behind `b` gained a constraint: its generated schema changes.
        let changed = render(vec![
            ("a.schema.json", json!({ "type": "object" })),
            ("b.schema.json", json!({ "type": "string", "minLength": 1 })),
        ])
        .unwrap();
        let drift = compare(&changed, dir.path()).unwrap();
        assert_eq!(drift.stale, ["b.schema.json"]);
        assert!(drift.missing.is_empty() && drift.extra.is_empty());
        assert!(drift.to_string().contains("specs/schema/b.schema.json"));
    }

    #[test]
    fn check_fails_when_a_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        sync(&generated(), dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("a.schema.json")).unwrap();
        let drift = compare(&generated(), dir.path()).unwrap();
        assert_eq!(drift.missing, ["a.schema.json"]);
        assert!(drift.stale.is_empty() && drift.extra.is_empty());
    }

    #[test]
    fn check_fails_when_an_extra_schema_exists() {
        let dir = tempfile::tempdir().unwrap();
        sync(&generated(), dir.path()).unwrap();
        std::fs::write(dir.path().join("old.schema.json"), "{}\n").unwrap();
        // Files that are not schemas are none of our business.
        std::fs::write(dir.path().join("README.md"), "notes\n").unwrap();
        let drift = compare(&generated(), dir.path()).unwrap();
        assert_eq!(drift.extra, ["old.schema.json"]);
        assert!(drift.stale.is_empty() && drift.missing.is_empty());
    }

    #[test]
    fn a_missing_folder_means_every_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let drift = compare(&generated(), &dir.path().join("absent")).unwrap();
        assert_eq!(drift.missing, ["a.schema.json", "b.schema.json"]);
    }

    #[test]
    fn sync_rewrites_stale_files_and_removes_extra_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.schema.json"), "{}\n").unwrap();
        std::fs::write(dir.path().join("old.schema.json"), "{}\n").unwrap();
        std::fs::write(dir.path().join("README.md"), "notes\n").unwrap();
        let drift = sync(&generated(), dir.path()).unwrap();
        assert_eq!(drift.stale, ["a.schema.json"]);
        assert_eq!(drift.missing, ["b.schema.json"]);
        assert_eq!(drift.extra, ["old.schema.json"]);
        assert!(compare(&generated(), dir.path()).unwrap().is_empty());
        assert!(dir.path().join("README.md").exists());
    }

    #[test]
    fn the_real_schemas_render() {
        let rendered = render(all_schemas()).unwrap();
        for name in [
            "model-spec.schema.json",
            "lock-file.schema.json",
            "manifest.schema.json",
            "models-used-entry.schema.json",
            "resolved-model-mapping.schema.json",
        ] {
            assert!(rendered.contains_key(name), "{name} is generated");
        }
    }

    /// `cargo xtask schema --check` as a test, so a plain `cargo test` also fails when a
    /// type changed and `specs/schema/` was not regenerated.
    #[test]
    fn committed_schemas_match_the_rust_types() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let drift = compare(&render(all_schemas()).unwrap(), &root.join(SCHEMA_DIR)).unwrap();
        assert!(
            drift.is_empty(),
            "{SCHEMA_DIR}/ does not match the schemas generated from the Rust types:\n{drift}\
             fix: run `cargo xtask schema` and commit the result"
        );
    }
}
