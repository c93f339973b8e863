//! Where a manager, `verify` and `validate` find their catalog, models and caches: the same
//! rules, defaults and environment variables as the `dp` command line.

use std::path::{Path, PathBuf};

use dp_digest::{DigestError, VerificationCache};
use dp_spec::{Catalog, Diagnostic, ErrorCode, Layer, ModelError, ResolvedCatalog};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::convert::{py_to_json, to_py};
use crate::error::Error;

/// The catalog when none is given and `DP_CATALOG` is unset (as `dp --catalog`).
const DEFAULT_CATALOG: &str = "specs/catalog";
/// The variable that names the catalog.
const CATALOG_ENV: &str = "DP_CATALOG";
/// The variable that names the models root.
const MODELS_ROOT_ENV: &str = "DP_MODELS_ROOT";
/// The models root when none is given and `DP_MODELS_ROOT` is unset: where `cargo xtask
/// setup` puts the assets, relative to the current folder.
const DEFAULT_MODELS_ROOT: &str = ".dp-assets/models";
/// The variable that names the verification cache.
const VERIFY_CACHE_ENV: &str = "DP_VERIFY_CACHE";

/// The catalog, its layers and the models root, as `dp --catalog --profile --set
/// --models-root` give them.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// The catalog directory.
    pub(crate) catalog: PathBuf,
    /// The models root.
    pub(crate) models_root: PathBuf,
    /// Profile files, in order (later ones win).
    pub(crate) profiles: Vec<PathBuf>,
    /// `MODEL.FIELD=VALUE` overrides, above every profile.
    pub(crate) overrides: Vec<String>,
}

impl Settings {
    /// The settings from Python arguments: `catalog` (else `$DP_CATALOG`, else
    /// `specs/catalog`), `models_root` (else `$DP_MODELS_ROOT`, else `.dp-assets/models`),
    /// `profiles`, and `overrides` as a list of `"MODEL.FIELD=VALUE"` strings or a dict
    /// `{"MODEL.FIELD": value}` (a non-str value is written as JSON, which the override
    /// syntax reads as YAML).
    pub(crate) fn from_py(
        catalog: Option<PathBuf>,
        models_root: Option<PathBuf>,
        profiles: Vec<PathBuf>,
        overrides: Option<&Bound<'_, PyAny>>,
    ) -> Result<Self, Error> {
        let catalog = catalog
            .or_else(|| {
                std::env::var_os(CATALOG_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CATALOG));
        let models_root = match models_root {
            Some(root) => root,
            None => default_models_root()?,
        };
        for path in &profiles {
            refuse_special_file(path, "profile")?;
        }
        Ok(Self {
            catalog,
            models_root,
            profiles,
            overrides: overrides
                .map(override_lines)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// Loads the catalog and applies the profiles then the overrides, as `dp` does.
    ///
    /// # Errors
    /// The diagnostics as one error (see [`diagnostics_error`]).
    pub(crate) fn load_resolved(&self) -> Result<ResolvedCatalog, Error> {
        self.try_load_resolved()
            .map_err(|found| Error::Model(diagnostics_error(&found)))
    }

    /// Loads the catalog with its layers, or every problem found.
    pub(crate) fn try_load_resolved(&self) -> Result<ResolvedCatalog, Vec<Diagnostic>> {
        let catalog = Catalog::load(&self.catalog)?;
        let mut layers = Vec::new();
        let mut problems = Vec::new();
        for path in &self.profiles {
            match Layer::read_profile(path) {
                Ok(layer) => layers.push(layer),
                Err(found) => problems.extend(found),
            }
        }
        if !self.overrides.is_empty() {
            match Layer::from_overrides(&self.overrides) {
                Ok(layer) => layers.push(layer),
                Err(found) => problems.push(found),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        dp_spec::resolve(&catalog, &layers)
    }
}

/// `$DP_MODELS_ROOT`, else `.dp-assets/models`; an empty variable is `invalid_input`.
fn default_models_root() -> Result<PathBuf, Error> {
    match std::env::var_os(MODELS_ROOT_ENV) {
        None => Ok(PathBuf::from(DEFAULT_MODELS_ROOT)),
        Some(value) if value.is_empty() => Err(Error::Model(
            ModelError::new(
                ErrorCode::InvalidInput,
                format!(
                    "the environment variable {MODELS_ROOT_ENV} is set but empty; set it to the \
                     folder that holds the model artifacts, or unset it to use \
                     {DEFAULT_MODELS_ROOT} (or pass models_root=)"
                ),
            )
            .with_detail("variable", MODELS_ROOT_ENV),
        )),
        Some(value) => Ok(PathBuf::from(value)),
    }
}

/// The override lines of a list of strings or a dict.
fn override_lines(value: &Bound<'_, PyAny>) -> Result<Vec<String>, Error> {
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut lines = Vec::with_capacity(dict.len());
        for (key, item) in dict.iter() {
            let key: String = key
                .extract()
                .map_err(|_| Error::invalid("overrides: every key must be a str MODEL.FIELD"))?;
            let item = match item.cast::<PyString>() {
                Ok(text) => text.to_cow()?.into_owned(),
                Err(_) => py_to_json(&item)?.to_string(),
            };
            lines.push(format!("{key}={item}"));
        }
        return Ok(lines);
    }
    crate::convert::texts(value, "overrides")
}

/// Refuses `path` if it exists but is not a regular file (opening a FIFO would block).
pub(crate) fn refuse_special_file(path: &Path, role: &'static str) -> Result<(), Error> {
    match dp_digest::check_regular_file(path, role) {
        Err(err @ DigestError::NotARegularFile { .. }) => Err(Error::Model(
            ModelError::from(err).with_detail("path", path.display().to_string()),
        )),
        _ => Ok(()),
    }
}

/// Spec, profile or override problems as one error: the first problem's code, a message
/// counting them and quoting the first, and every diagnostic under `details.diagnostics`.
pub(crate) fn diagnostics_error(found: &[Diagnostic]) -> ModelError {
    let code = found
        .first()
        .map_or(ErrorCode::InvalidSpec, |d| d.error_code);
    let first = found.first().map_or_else(String::new, ToString::to_string);
    let count = found.len();
    ModelError::new(
        code,
        format!(
            "{count} problem{} found in the catalog, profiles or overrides; first: {first}",
            if count == 1 { "" } else { "s" }
        ),
    )
    .with_detail(
        "diagnostics",
        serde_json::to_value(found).unwrap_or(serde_json::Value::Null),
    )
}

/// Diagnostics as a list of dicts (`file`, `pointer`, `line`, `column`, `error_code`,
/// `message`), as `dp validate --json` prints them.
pub(crate) fn diagnostics_to_py<'py>(
    py: Python<'py>,
    found: &[Diagnostic],
) -> Result<Bound<'py, PyAny>, Error> {
    to_py(py, found)
}

/// The verification cache: `cache`, else `$DP_VERIFY_CACHE`, else the per-user file
/// (`$XDG_CACHE_HOME/dp-models/verify-cache.json`, else `~/.cache/dp-models/…`), as `dp`
/// chooses it; checked to be a regular file (or absent) outside the models root.
pub(crate) fn verify_cache(
    cache: Option<PathBuf>,
    models_root: &Path,
) -> Result<Option<PathBuf>, Error> {
    let cache = cache
        .or_else(|| {
            std::env::var_os(VERIFY_CACHE_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .or_else(default_cache_path);
    if let Some(path) = &cache {
        VerificationCache::check_location(path, models_root).map_err(|err| {
            let mut err = ModelError::from(err).with_detail("cache", path.display().to_string());
            err.message
                .push_str("; choose the cache file with verify_cache= or DP_VERIFY_CACHE");
            Error::Model(err)
        })?;
    }
    Ok(cache)
}

/// The per-user cache file, outside any models root (a relative `XDG_CACHE_HOME` is
/// ignored, as the XDG Base Directory specification requires).
fn default_cache_path() -> Option<PathBuf> {
    let non_empty = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("dp-models").join("verify-cache.json"))
}
