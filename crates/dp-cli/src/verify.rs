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

use clap::Args;
use dp_digest::{DigestAlgorithm, LockFile, VerificationCache, VerifyOptions};
use dp_manager::integrity::{self, ModelOutcome};
use dp_spec::{CatalogEntry, ErrorCode, ModelError};

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
    let selected = match integrity::select_models(&resolved.catalog, &args.names) {
        Ok(selected) => selected,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };

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

    let mut outcomes = match integrity::verify_models(&selected, &models_root, &lock, &options) {
        Ok(outcomes) => outcomes,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    if let Some(cache) = &cache
        && let Err(err) = cache.save_if_changed()
    {
        crate::output::stderr(&format!(
            "dp: warning: could not save the verification cache: {err}"
        ));
    }
    if args.lock
        && let Err(err) = integrity::write_lock(&lock_path, &selected, &mut outcomes)
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
