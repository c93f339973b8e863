//! `dp verify [NAME…] [--lock] [--strict] [--lock-file FILE] [--cache FILE]`: checks each
//! model's local artifacts against its pin and its lock entry, and with `--lock` records
//! the current state in the lock file.
//!
//! Exit codes: 0 every model verified (or locked); 3 some model is not ready (missing,
//! digest mismatch, drift); 2 invalid input (catalog, unknown name, malformed lock file, a
//! lock file or cache that is not a regular file, a cache inside the models root); 1
//! unexpected failure (I/O).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use dp_digest::{
    DigestAlgorithm, LockEntry, LockFile, ManifestDiff, PinCheck, RejectedPath, VerificationCache,
    VerifyOptions, VerifyReport, VerifyStatus,
};
use dp_spec::{CatalogEntry, ErrorCode, ModelError};
use serde::Serialize;

use dp_manager::integrity;

use crate::digest::TerminalProgress;
use crate::output::{EXIT_NOT_READY, report_diagnostics, report_model_error, stdout};
use crate::{Cli, load_resolved};

/// Arguments of `dp verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Models to verify, by name or alias (default: every model of the catalog).
    names: Vec<String>,
    /// Record the current state of the verified models in the lock file (atomically,
    /// under a file lock). Implies --strict: a lock is evidence, so every byte is read.
    #[arg(long)]
    lock: bool,
    /// Read and hash every byte even when the verification cache knows the file.
    #[arg(long)]
    strict: bool,
    /// Golden outputs: with --lock, run each locked model on its probe inputs and record
    /// its outputs in the lock file; without, run them again and report `output_drift`
    /// when they moved beyond the recorded tolerance.
    #[arg(long)]
    golden: bool,
    /// Lock file (default: `<catalog>.lock` beside the catalog directory, e.g.
    /// `specs/catalog.lock`).
    #[arg(long, value_name = "FILE")]
    lock_file: Option<PathBuf>,
    /// Verification cache file (default: `$XDG_CACHE_HOME/dp-models/verify-cache.json`,
    /// else `~/.cache/dp-models/verify-cache.json`). Keep it where only the operator can
    /// write, never in the models root: whoever can write it can make bytes look verified.
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

/// One model's outcome, as `dp verify --json` prints it.
#[derive(Debug, Serialize)]
struct ModelOutcome {
    model_name: String,
    /// `ok`, `missing`, `digest_mismatch`, `drift` or `skipped` (no local artifacts).
    status: &'static str,
    /// Whether the lock file had an entry for the model before this run.
    locked: bool,
    /// Whether this run wrote the model's lock entry (`--lock`).
    lock_written: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ModelError>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin: Option<PinCheck>,
    #[serde(skip_serializing_if = "Option::is_none")]
    all_pin: Option<PinCheck>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lock_conflicts: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    drift: Option<ManifestDiff>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<RejectedPath>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aggregate: Option<String>,
    /// `--golden`: what was recorded, or how the outputs compare with the recorded ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    golden: Option<serde_json::Value>,
    files: usize,
    hashed_files: u64,
    cached_files: u64,
    #[serde(skip)]
    report: Option<VerifyReport>,
}

impl ModelOutcome {
    fn ready(&self) -> bool {
        self.error.is_none()
    }
}

pub(crate) fn run(cli: &Cli, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let resolved = match load_resolved(cli) {
        Ok(resolved) => resolved,
        Err(found) => return report_diagnostics(cli, &found),
    };
    // The same rule as every other command (`--models-root`, `DP_MODELS_ROOT`, else
    // `.dp-assets/models`).
    let models_root = match crate::providers::models_root(cli) {
        Ok(root) => root,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    // Canonical, so that cache entries (keyed by path) are shared whatever the spelling.
    let models_root = std::fs::canonicalize(&models_root).unwrap_or(models_root);
    let cache_path = args.cache.clone().or_else(default_cache_path);
    if let Some(cache) = &cache_path
        && let Err(err) = crate::providers::check_cache(cache, &models_root)
    {
        return Ok(report_model_error(cli, &err));
    }
    let mut selected: Vec<&CatalogEntry> = Vec::new();
    for name in &args.names {
        match resolved.catalog.get(name) {
            Some(entry) => {
                if !selected
                    .iter()
                    .any(|e| e.spec.model_name == entry.spec.model_name)
                {
                    selected.push(entry);
                }
            }
            None => {
                let err = ModelError::new(
                    ErrorCode::ModelNotFound,
                    format!("no model named {name:?} in the catalog; run `dp list`"),
                )
                .with_detail("model", name.clone());
                return Ok(report_model_error(cli, &err));
            }
        }
    }
    if args.names.is_empty() {
        selected = resolved.catalog.entries().iter().collect();
    }

    let lock_path = args
        .lock_file
        .clone()
        .unwrap_or_else(|| integrity::default_lock_path(&cli.catalog));
    let lock = match LockFile::read(&lock_path) {
        Ok(lock) => lock,
        Err(err) => return Ok(report_model_error(cli, &ModelError::from(err))),
    };
    let cache = cache_path.map(VerificationCache::load);
    let bar = TerminalProgress::for_stderr();
    let options = VerifyOptions {
        default_algorithm: DigestAlgorithm::Sha256,
        strict: args.strict || args.lock,
        cache: cache.as_ref(),
        progress: bar.as_progress(),
    };

    let mut outcomes = Vec::with_capacity(selected.len());
    for entry in &selected {
        let locked = lock.models.get(&entry.spec.model_name);
        match verify_model(entry, &models_root, locked, &options) {
            Ok(outcome) => outcomes.push(outcome),
            Err(err) => return Ok(report_model_error(cli, &err)),
        }
    }
    if let Some(cache) = &cache
        && let Err(err) = cache.save_if_changed()
    {
        crate::output::stderr(&format!(
            "dp: warning: could not save the verification cache: {err}"
        ));
    }
    if args.lock
        && let Err(err) = write_lock(&lock_path, &selected, &mut outcomes)
    {
        return Ok(report_model_error(cli, &err));
    }
    if args.golden
        && let Err(code) = golden(cli, args, &lock_path, &selected, &mut outcomes)
    {
        return Ok(code);
    }

    let all_ready = outcomes.iter().all(ModelOutcome::ready);
    if cli.json {
        let doc = serde_json::json!({
            "lock_file": lock_path.display().to_string(),
            "models": outcomes,
        });
        stdout(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        stdout(&render_text(&outcomes))?;
    }
    Ok(if all_ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_READY)
    })
}

/// The per-user cache file of every command, outside any models root:
/// `$XDG_CACHE_HOME/dp-models/verify-cache.json`, else `~/.cache/dp-models/…`.
///
/// A relative `XDG_CACHE_HOME` is ignored, as the XDG Base Directory specification
/// requires (it would put the cache wherever `dp` happens to run, a models folder
/// included).
pub(crate) fn default_cache_path() -> Option<PathBuf> {
    let non_empty = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
    let base = non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("dp-models").join("verify-cache.json"))
}

fn verify_model(
    entry: &CatalogEntry,
    models_root: &Path,
    locked: Option<&LockEntry>,
    options: &VerifyOptions<'_>,
) -> Result<ModelOutcome, ModelError> {
    let spec = &entry.spec;
    let mut outcome = ModelOutcome {
        model_name: spec.model_name.clone(),
        status: "skipped",
        locked: locked.is_some(),
        lock_written: false,
        error: None,
        missing: Vec::new(),
        pin: None,
        all_pin: None,
        lock_conflicts: Vec::new(),
        drift: None,
        rejected: Vec::new(),
        aggregate: None,
        golden: None,
        files: 0,
        hashed_files: 0,
        cached_files: 0,
        report: None,
    };
    if spec.local_artifacts.is_empty() {
        // A Triton model's weights live on the server; its provider compares the pin.
        return Ok(outcome);
    }
    let report = integrity::verify_spec(spec, models_root, locked, options)?;
    let status = report.status();
    outcome.status = match status {
        VerifyStatus::Ok => "ok",
        VerifyStatus::Missing => "missing",
        VerifyStatus::DigestMismatch => "digest_mismatch",
        VerifyStatus::Drift => "drift",
    };
    // The library's wording, as `dp embed` and `dp health` report the same problem.
    outcome.error = integrity::report_error(spec, models_root, &report);
    outcome.missing.clone_from(&report.missing);
    outcome.pin.clone_from(&report.pin);
    outcome.all_pin.clone_from(&report.all_pin);
    outcome.lock_conflicts.clone_from(&report.lock_conflicts);
    outcome.drift.clone_from(&report.drift);
    outcome.rejected.clone_from(&report.rejected);
    outcome.aggregate = report.manifest.as_ref().map(|m| m.aggregate.to_string());
    outcome.files = report.manifest.as_ref().map_or(0, |m| m.files.len());
    outcome.hashed_files = report.stats.hashed_files;
    outcome.cached_files = report.stats.cached_files;
    outcome.report = Some(report);
    Ok(outcome)
}

/// `--golden`: records golden outputs (with `--lock`) or checks them, for every model whose
/// files verified and which runs in this process with a preset.
fn golden(
    cli: &Cli,
    args: &VerifyArgs,
    lock_path: &Path,
    selected: &[&CatalogEntry],
    outcomes: &mut [ModelOutcome],
) -> Result<(), ExitCode> {
    let cache = args.cache.clone().or_else(default_cache_path);
    let manager = crate::providers::manager(cli, cache)?;
    let lock = LockFile::read(lock_path).map_err(|err| report_model_error(cli, &err.into()))?;
    let mut recorded = Vec::new();
    for (entry, outcome) in selected.iter().zip(outcomes.iter_mut()) {
        let spec = &entry.spec;
        let runnable = spec.runtime == dp_spec::Runtime::Inprocess
            && dp_manager::preset::status(spec.preprocess_preset.as_deref())
                == dp_manager::preset::PresetStatus::Runnable;
        if !outcome.ready() || !runnable {
            continue;
        }
        let name = spec.model_name.as_str();
        if args.lock {
            match manager.golden_outputs(name) {
                Ok(golden) => {
                    outcome.golden = Some(serde_json::json!({
                        "recorded": true,
                        "inputs": golden.inputs.len(),
                        "outputs_digest": golden.outputs_digest,
                    }));
                    recorded.push((spec.model_name.clone(), golden));
                }
                Err(err) => outcome.error = Some(err),
            }
        } else if let Some(golden) = lock.models.get(name).and_then(|e| e.golden.as_ref()) {
            match manager.check_golden(name, golden) {
                Ok(check) => outcome.golden = serde_json::to_value(check).ok(),
                Err(err) => {
                    if err.error_code == ErrorCode::OutputDrift {
                        outcome.status = "output_drift";
                        outcome.golden = Some(serde_json::json!({
                            "within_tolerance": false,
                            "min_cosine": err.details["min_cosine"],
                            "max_abs_diff": err.details["max_abs_diff"],
                            "worst_input": err.details["worst_input"],
                        }));
                    }
                    outcome.error = Some(err);
                }
            }
        } else {
            outcome.golden = Some(serde_json::json!({
                "recorded": false,
                "hint": "no golden outputs in the lock file: run `dp verify --lock --golden`",
            }));
        }
    }
    if recorded.is_empty() {
        return Ok(());
    }
    LockFile::update(lock_path, |lock| {
        for (name, golden) in recorded {
            if let Some(entry) = lock.models.get_mut(&name) {
                entry.golden = Some(golden);
            }
        }
        Ok::<_, ModelError>(())
    })
    .map_err(|err| report_model_error(cli, &err))
}

/// Records the verified models in the lock file. A model is locked when its files could
/// all be hashed and its pin (if any) matches; drift from an older entry is accepted (that
/// is what `--lock` is for). Models that cannot be locked keep their error.
fn write_lock(
    lock_path: &Path,
    selected: &[&CatalogEntry],
    outcomes: &mut [ModelOutcome],
) -> Result<(), ModelError> {
    let now = SystemTime::now();
    LockFile::update(lock_path, |lock| {
        for (entry, outcome) in selected.iter().zip(outcomes.iter_mut()) {
            let Some(report) = &outcome.report else {
                continue;
            };
            let lockable = matches!(report.status(), VerifyStatus::Ok | VerifyStatus::Drift);
            let Some(manifest) = report.manifest.clone().filter(|_| lockable) else {
                continue;
            };
            let spec = &entry.spec;
            let mut new_entry = LockEntry::new(
                spec.model_version.clone(),
                spec.weights_digest,
                manifest,
                now,
            );
            // Golden outputs outlive a re-lock of the files: they are what later files
            // must still compute.
            new_entry.golden = lock
                .models
                .get(&spec.model_name)
                .and_then(|old| old.golden.clone());
            lock.models.insert(spec.model_name.clone(), new_entry);
            outcome.lock_written = true;
            outcome.error = None;
            if outcome.status == "drift" {
                outcome.status = "ok";
            }
        }
        Ok::<_, ModelError>(())
    })
}

fn render_text(outcomes: &[ModelOutcome]) -> String {
    let mut text = String::new();
    let width = outcomes
        .iter()
        .map(|o| o.model_name.chars().count())
        .max()
        .unwrap_or(0);
    for o in outcomes {
        let status = if o.lock_written { "locked" } else { o.status };
        let summary = match (&o.error, &o.aggregate) {
            (Some(err), _) => format!("{}: {}", err.error_code, err.message),
            (None, Some(aggregate)) => format!(
                "{} file{}, {aggregate}{}",
                o.files,
                if o.files == 1 { "" } else { "s" },
                if o.cached_files > 0 {
                    format!(" ({} from the verification cache)", o.cached_files)
                } else {
                    String::new()
                }
            ),
            (None, None) => "no local artifacts".to_owned(),
        };
        text.push_str(&format!(
            "{status:<15}  {:<width$}  {summary}\n",
            o.model_name
        ));
        if let Some(golden) = &o.golden {
            let line = if golden["recorded"] == true {
                format!("recorded ({} probe inputs)", golden["inputs"])
            } else if golden["recorded"] == false {
                "none recorded: run `dp verify --lock --golden`".to_owned()
            } else {
                format!(
                    "min cosine {}, max |Δ| {}",
                    golden["min_cosine"], golden["max_abs_diff"]
                )
            };
            text.push_str(&format!("    golden   {line}\n"));
        }
        if o.error.is_some() {
            for path in &o.missing {
                text.push_str(&format!("    missing  {path}\n"));
            }
            if let Some(drift) = &o.drift {
                for (label, paths) in [
                    ("added", &drift.added),
                    ("removed", &drift.removed),
                    ("changed", &drift.changed),
                ] {
                    for path in paths {
                        text.push_str(&format!("    {label:<8} {path}\n"));
                    }
                }
            }
            for conflict in &o.lock_conflicts {
                text.push_str(&format!("    lock     {conflict}\n"));
            }
            for rejected in &o.rejected {
                text.push_str(&format!(
                    "    refused  {}: {}\n",
                    rejected.path, rejected.problem
                ));
            }
        }
    }
    let not_ready = outcomes.iter().filter(|o| !o.ready()).count();
    text.push_str(&format!(
        "{} model{} checked, {not_ready} not ready\n",
        outcomes.len(),
        if outcomes.len() == 1 { "" } else { "s" }
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_lock_file_sits_beside_the_catalog() {
        let lock = integrity::default_lock_path(Path::new("/repo/specs/catalog"));
        assert_eq!(lock, Path::new("/repo/specs/catalog.lock"));
        let lock = integrity::default_lock_path(Path::new("/repo/specs/catalog/"));
        assert_eq!(lock, Path::new("/repo/specs/catalog.lock"));
    }
}
