//! Finding a preset's files among a model's verified artifacts, and checking the spec's
//! `preprocess_params` against what those files say.

use std::fmt;
use std::path::PathBuf;

use dp_spec::{ModelSpec, VerifiedArtifacts, VerifiedFile};
use serde_json::Value;

use crate::error::PresetError;

/// A model's verified files, seen by a preset: found by file name, parsed from the bytes
/// that were verified (never read from disk again).
#[derive(Clone, Copy)]
pub(crate) struct ArtifactFiles<'a> {
    pub(crate) spec: &'a ModelSpec,
    pub(crate) artifacts: &'a VerifiedArtifacts,
}

impl<'a> ArtifactFiles<'a> {
    pub(crate) const fn new(spec: &'a ModelSpec, artifacts: &'a VerifiedArtifacts) -> Self {
        Self { spec, artifacts }
    }

    /// The artifact whose path ends with `/suffix` (or is `suffix`), else `suffix` inside
    /// a listed directory; `None` when neither is among the verified files.
    pub(crate) fn find(&self, suffix: &str) -> Option<&'a VerifiedFile> {
        let artifacts = self.artifacts.artifacts();
        let listed = artifacts
            .iter()
            .find(|a| *a == suffix || a.ends_with(&format!("/{suffix}")))
            .and_then(|a| self.artifacts.get(a));
        if listed.is_some() {
            return listed;
        }
        artifacts
            .iter()
            .find_map(|a| self.artifacts.get(&format!("{a}/{suffix}")))
    }

    /// The path of `file` as messages show it.
    pub(crate) fn display(&self, file: &VerifiedFile) -> String {
        self.artifacts
            .display_path(file.path())
            .display()
            .to_string()
    }

    /// A required file, or `invalid_spec` saying the preset needs it.
    pub(crate) fn require(
        &self,
        preset: &str,
        suffix: &str,
    ) -> Result<&'a VerifiedFile, PresetError> {
        self.find(suffix).ok_or_else(|| PresetError::InvalidConfig {
            message: format!(
                "model {}: preset {preset} needs a {suffix} among local_artifacts (or inside a \
                 listed directory) under {}; add it to the spec",
                self.spec.model_name,
                self.artifacts.root().display()
            ),
            file: None,
        })
    }

    /// The JSON of an optional file, with the path messages show.
    pub(crate) fn json(&self, suffix: &str) -> Result<Option<(PathBuf, Value)>, PresetError> {
        let Some(file) = self.find(suffix) else {
            return Ok(None);
        };
        let path = self.artifacts.display_path(file.path());
        let value = serde_json::from_slice(file.bytes()).map_err(|err| {
            PresetError::config(
                path.display().to_string(),
                format!(
                    "model {}: {} is not valid JSON: {err}",
                    self.spec.model_name,
                    path.display()
                ),
            )
        })?;
        Ok(Some((path, value)))
    }

    /// The JSON of a required file, or `invalid_spec` saying the preset needs it.
    pub(crate) fn require_json(
        &self,
        preset: &str,
        suffix: &str,
    ) -> Result<(PathBuf, Value), PresetError> {
        self.require(preset, suffix)?;
        self.json(suffix)?
            .ok_or_else(|| PresetError::config(suffix, format!("{suffix} could not be read")))
    }

    /// `invalid_spec` about `path`.
    pub(crate) fn file_error(&self, path: &std::path::Path, what: &str) -> PresetError {
        PresetError::config(
            path.display().to_string(),
            format!("model {}: {} {what}", self.spec.model_name, path.display()),
        )
    }

    /// `invalid_spec` about the spec's `preprocess_params.key`.
    pub(crate) fn param_error(&self, key: &str, want: &str) -> PresetError {
        PresetError::InvalidConfig {
            message: format!(
                "model {}: preprocess_params.{key} is {}; it must be {want}",
                self.spec.model_name,
                self.spec
                    .preprocess_params
                    .get(key)
                    .map_or_else(String::new, Value::to_string)
            ),
            file: None,
        }
    }
}

/// Fails when a spec parameter contradicts the model's file: the error names both values.
pub(crate) fn agree<T: PartialEq + fmt::Debug>(
    spec: &ModelSpec,
    key: &str,
    param: &T,
    file: Option<&(T, PathBuf)>,
) -> Result<(), PresetError> {
    match file {
        Some((from_file, path)) if from_file != param => Err(PresetError::config(
            path.display().to_string(),
            format!(
                "model {}: preprocess_params.{key} is {param:?} but {} says {from_file:?}; make \
                 them agree (the spec may only restate the model's files)",
                spec.model_name,
                path.display()
            ),
        )),
        _ => Ok(()),
    }
}
