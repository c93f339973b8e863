//! Importing the pipeline downloader's manifest into skeleton specs
//! (`dp sync-downloader`).
//!
//! The downloader records what it fetched (name, Hugging Face id, format, path, sizes,
//! directory checksum). Importing turns each entry into a spec the operator then completes
//! (roles, capabilities, schemas). The import owns a few fields only — `local_artifacts`,
//! `weights_digest`, `source` and `metadata.downloader` — and never touches the others, so
//! running it again after hand edits changes nothing but what the downloader changed.
//! Planning is pure; the caller writes the planned files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::catalog::Catalog;
use crate::diagnostic::validate_value;
use crate::document::LocationIndex;
use crate::error::{ErrorCode, ModelError};
use crate::yaml_writer::to_yaml;
use dp_digest::WeightsDigest;

/// One model as the downloader recorded it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DownloadedModel {
    /// The downloader's name for the model.
    pub name: String,
    /// The Hugging Face repository it came from.
    #[serde(default)]
    pub huggingface_id: Option<String>,
    /// Weight format (`safetensors`, `onnx`, `pytorch`, …).
    pub format: String,
    /// Where the files are: relative to the models root, or absolute inside it.
    pub path: String,
    /// Total size in bytes.
    #[serde(default)]
    pub size_bytes: Option<u64>,
    /// Directory checksum: the dp-models directory aggregate (`sha256:<hex>` or bare hex).
    #[serde(default)]
    pub directory_checksum: Option<String>,
    /// The files, relative to `path`.
    #[serde(default)]
    pub files: Vec<DownloadedFile>,
}

/// One file of a downloaded model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DownloadedFile {
    /// Path relative to the model's directory.
    pub path: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: Option<u64>,
}

/// A downloader manifest: `{"models": [...]}` or a bare list.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum DownloaderManifest {
    /// `{"models": [...]}`.
    Wrapped {
        /// The entries.
        models: Vec<DownloadedModel>,
    },
    /// `[...]`.
    Bare(Vec<DownloadedModel>),
}

impl DownloaderManifest {
    /// The entries.
    #[must_use]
    pub fn models(&self) -> &[DownloadedModel] {
        match self {
            Self::Wrapped { models } | Self::Bare(models) => models,
        }
    }
}

/// What importing one entry would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportAction {
    /// Write a new spec file.
    Create {
        /// The model name.
        model_name: String,
        /// Where.
        path: PathBuf,
        /// The YAML text.
        text: String,
    },
    /// Rewrite an existing spec file whose import-owned fields changed.
    Update {
        /// The model name.
        model_name: String,
        /// Where.
        path: PathBuf,
        /// The YAML text.
        text: String,
    },
    /// Nothing to do.
    Unchanged {
        /// The model name.
        model_name: String,
    },
    /// The entry cannot be imported (reason given); other entries still are.
    Skipped {
        /// The downloader's name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Options of an import.
#[derive(Debug, Clone)]
pub struct ImportOptions<'a> {
    /// The models root, to make absolute downloader paths relative.
    pub models_root: Option<&'a Path>,
    /// Role (and catalog directory) of new skeleton specs.
    pub role: &'a str,
}

/// Plans the import of `manifest` into `catalog` (nothing is written).
#[must_use]
pub fn plan_import(
    manifest: &DownloaderManifest,
    catalog: &Catalog,
    options: &ImportOptions<'_>,
) -> Vec<ImportAction> {
    manifest
        .models()
        .iter()
        .map(|entry| match plan_one(entry, catalog, options) {
            Ok(action) => action,
            Err(reason) => ImportAction::Skipped {
                name: entry.name.clone(),
                reason,
            },
        })
        .collect()
}

/// A model name from the downloader's name: lowercase, runs of other characters → `-`.
#[must_use]
pub fn model_name_for(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches(|c| c == '-' || c == '.' || c == '_')
        .to_owned()
}

fn plan_one(
    entry: &DownloadedModel,
    catalog: &Catalog,
    options: &ImportOptions<'_>,
) -> Result<ImportAction, String> {
    let model_name = model_name_for(&entry.name);
    if model_name.is_empty() {
        return Err("its name has no letter or digit to build a model_name from".into());
    }
    let engine = match entry.format.to_ascii_lowercase().as_str() {
        "safetensors" => "candle",
        "onnx" => "onnx",
        other => {
            return Err(format!(
                "format {other:?} has no in-process engine (safetensors → candle, onnx → onnx); \
                 serve it with Triton and write its spec by hand"
            ));
        }
    };
    let artifact = relative_artifact(&entry.path, options.models_root)?;
    let digest = entry
        .directory_checksum
        .as_deref()
        .map(parse_checksum)
        .transpose()?;
    let mut downloader = Map::new();
    downloader.insert("name".into(), json!(entry.name));
    downloader.insert("format".into(), json!(entry.format));
    if let Some(size) = entry.size_bytes {
        downloader.insert("size_bytes".into(), json!(size));
    }
    downloader.insert("file_count".into(), json!(entry.files.len()));
    if let Some(digest) = digest {
        downloader.insert("directory_checksum".into(), json!(digest.to_string()));
    }
    let downloader = Value::Object(downloader);

    if let Some(existing) = catalog.get(&model_name) {
        let mut value = existing.document.value.clone();
        let Value::Object(map) = &mut value else {
            return Err("the existing spec is not a mapping".into());
        };
        // A spec that already names files inside the downloaded directory keeps that
        // (more precise) selection, and the pin on its first file.
        let inside = |a: &str| a == artifact || a.starts_with(&format!("{artifact}/"));
        let keeps_selection = !existing.spec.local_artifacts.is_empty()
            && existing.spec.local_artifacts.iter().all(|a| inside(a));
        if !keeps_selection {
            map.insert("local_artifacts".into(), json!([artifact]));
        }
        let pins_directory = !keeps_selection
            || existing.spec.local_artifacts.first().map(String::as_str) == Some(artifact.as_str());
        if let (Some(digest), true) = (digest, pins_directory) {
            map.insert("weights_digest".into(), json!(digest.to_string()));
        }
        if let Some(id) = &entry.huggingface_id {
            map.insert("source".into(), json!(format!("huggingface: {id}")));
        }
        let metadata = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(metadata) = metadata {
            metadata.insert("downloader".into(), downloader);
        }
        if value == existing.document.value {
            return Ok(ImportAction::Unchanged { model_name });
        }
        check(&existing.document.path, &value)?;
        return Ok(ImportAction::Update {
            model_name,
            path: existing.document.path.clone(),
            text: to_yaml(&value),
        });
    }

    let mut owned = Map::new();
    owned.insert("local_artifacts".into(), json!([artifact]));
    if let Some(digest) = digest {
        owned.insert("weights_digest".into(), json!(digest.to_string()));
    }
    if let Some(id) = &entry.huggingface_id {
        owned.insert("source".into(), json!(format!("huggingface: {id}")));
    }
    let mut spec = Map::new();
    spec.insert("model_name".into(), json!(model_name));
    spec.insert("model_version".into(), json!("1"));
    spec.insert("role".into(), json!(options.role));
    spec.insert("runtime".into(), json!("inprocess"));
    spec.insert("engine".into(), json!(engine));
    spec.extend(owned);
    spec.insert("tier".into(), json!(2));
    spec.insert("metadata".into(), json!({ "downloader": downloader }));
    let value = Value::Object(spec);
    let path = catalog
        .root()
        .join(options.role)
        .join(format!("{model_name}.yaml"));
    check(&path, &value)?;
    Ok(ImportAction::Create {
        model_name,
        path,
        text: to_yaml(&value),
    })
}

/// The skeleton must be a valid spec: an import never writes a file `dp validate` rejects.
fn check(path: &Path, value: &Value) -> Result<(), String> {
    validate_value(path, value, &LocationIndex::default())
        .map(|_| ())
        .map_err(|diagnostics| {
            let reasons: Vec<String> = diagnostics.iter().map(|d| d.message.clone()).collect();
            format!(
                "the resulting spec would be invalid: {}",
                reasons.join("; ")
            )
        })
}

fn relative_artifact(path: &str, models_root: Option<&Path>) -> Result<String, String> {
    let as_path = Path::new(path);
    let relative = if as_path.is_absolute() {
        let root = models_root.ok_or_else(|| {
            format!("path {path:?} is absolute; pass --models-root so it can be made relative")
        })?;
        as_path
            .strip_prefix(root)
            .map_err(|_| {
                format!(
                    "path {path:?} is outside the models root {}; move the files under it",
                    root.display()
                )
            })?
            .to_string_lossy()
            .into_owned()
    } else {
        path.trim_start_matches("./").to_owned()
    };
    let relative = relative.trim_end_matches('/').to_owned();
    match crate::rules::check_artifact_path(&relative) {
        Some((_, message)) => Err(message),
        None => Ok(relative),
    }
}

fn parse_checksum(text: &str) -> Result<WeightsDigest, String> {
    let text = text.trim();
    let candidate = if text.contains(':') {
        text.to_owned()
    } else {
        format!("sha256:{}", text.to_ascii_lowercase())
    };
    candidate
        .parse()
        .map_err(|e: dp_digest::DigestError| format!("directory_checksum: {e}"))
}

/// Counts of what a plan does, for reports.
#[must_use]
pub fn summarize(actions: &[ImportAction]) -> BTreeMap<&'static str, usize> {
    let mut counts = BTreeMap::from([
        ("create", 0),
        ("update", 0),
        ("unchanged", 0),
        ("skipped", 0),
    ]);
    for action in actions {
        let key = match action {
            ImportAction::Create { .. } => "create",
            ImportAction::Update { .. } => "update",
            ImportAction::Unchanged { .. } => "unchanged",
            ImportAction::Skipped { .. } => "skipped",
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Parses a downloader manifest.
///
/// # Errors
/// `invalid_spec` naming the file and what is wrong.
pub fn read_manifest(path: &Path) -> Result<DownloaderManifest, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ModelError::new(
            ErrorCode::InvalidSpec,
            format!("cannot read downloader manifest {}: {e}", path.display()),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| {
        ModelError::new(
            ErrorCode::InvalidSpec,
            format!(
                "{} is not a downloader manifest ({e}); expected {{\"models\": [{{\"name\", \"format\", \"path\", …}}]}}",
                path.display()
            ),
        )
        .with_detail("file", path.display().to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized() {
        assert_eq!(
            model_name_for("sentence-transformers/all-MiniLM-L6-v2"),
            "sentence-transformers-all-minilm-l6-v2"
        );
        assert_eq!(model_name_for("  Whisper Small!! "), "whisper-small");
        assert_eq!(model_name_for("///"), "");
    }

    #[test]
    fn checksums_accept_bare_hex() {
        let hex = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
        assert_eq!(
            parse_checksum(hex).expect("bare").to_string(),
            format!("sha256:{hex}")
        );
        assert!(parse_checksum("md5:00").is_err());
    }

    #[test]
    fn absolute_paths_must_be_inside_the_root() {
        let root = Path::new("/models");
        assert_eq!(
            relative_artifact("/models/a/b/", Some(root)),
            Ok("a/b".into())
        );
        assert!(relative_artifact("/elsewhere/a", Some(root)).is_err());
        assert!(relative_artifact("/models/a", None).is_err());
        assert!(relative_artifact("../a", None).is_err());
        assert_eq!(relative_artifact("./a", None), Ok("a".into()));
    }
}
