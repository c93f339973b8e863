//! `dp sync-downloader <manifest.json> [--dry-run]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use dp_spec::Catalog;
use dp_spec::{ImportAction, ImportOptions, plan_import, read_manifest, summarize};

use crate::Cli;
use crate::output::{outln, report_diagnostics, report_model_error};

/// Arguments of `dp sync-downloader`.
#[derive(Debug, Args)]
pub(crate) struct SyncDownloaderArgs {
    /// The downloader's manifest (JSON).
    manifest: PathBuf,
    /// Print what would be created and updated; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Role (and catalog directory) of new skeleton specs.
    #[arg(long, default_value = "unassigned")]
    role: String,
}

pub(crate) fn run(cli: &Cli, args: &SyncDownloaderArgs) -> anyhow::Result<ExitCode> {
    // Before it is opened: a FIFO would block the read forever.
    if let Err(err) = crate::refuse_special_file(&args.manifest, "downloader manifest") {
        return Ok(report_model_error(cli, &err));
    }
    // Absolute, so that the downloader's absolute paths can be made relative to it.
    let models_root = match crate::providers::models_root(cli) {
        Ok(root) => std::path::absolute(&root).unwrap_or(root),
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let manifest = match read_manifest(&args.manifest) {
        Ok(manifest) => manifest,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let catalog = match Catalog::load(&cli.catalog) {
        Ok(catalog) => catalog,
        Err(found) => return report_diagnostics(cli, &found),
    };
    let options = ImportOptions {
        models_root: Some(&models_root),
        role: &args.role,
    };
    let actions = plan_import(&manifest, &catalog, &options);
    if !args.dry_run {
        for action in &actions {
            if let ImportAction::Create { path, text, .. }
            | ImportAction::Update { path, text, .. } = action
            {
                write_atomically(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    let counts = summarize(&actions);
    if cli.json {
        let rows: Vec<serde_json::Value> = actions.iter().map(action_json).collect();
        crate::output::json(&serde_json::json!({
            "dry_run": args.dry_run,
            "counts": counts,
            "actions": rows,
        }))?;
    } else {
        for action in &actions {
            match action {
                ImportAction::Create { path, .. } => outln!("create     {}", path.display())?,
                ImportAction::Update { path, .. } => outln!("update     {}", path.display())?,
                ImportAction::Unchanged { model_name } => outln!("unchanged  {model_name}")?,
                ImportAction::Skipped { name, reason } => outln!("skipped    {name}: {reason}")?,
            }
        }
        let verb = if args.dry_run {
            "would create"
        } else {
            "created"
        };
        let verb_update = if args.dry_run { "update" } else { "updated" };
        outln!(
            "{verb} {} spec(s), {verb_update} {}; {} unchanged, {} skipped",
            counts["create"],
            counts["update"],
            counts["unchanged"],
            counts["skipped"]
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn action_json(action: &ImportAction) -> serde_json::Value {
    match action {
        ImportAction::Create {
            model_name, path, ..
        } => {
            serde_json::json!({"action": "create", "model_name": model_name, "file": path})
        }
        ImportAction::Update {
            model_name, path, ..
        } => {
            serde_json::json!({"action": "update", "model_name": model_name, "file": path})
        }
        ImportAction::Unchanged { model_name } => {
            serde_json::json!({"action": "unchanged", "model_name": model_name})
        }
        ImportAction::Skipped { name, reason } => {
            serde_json::json!({"action": "skipped", "name": name, "reason": reason})
        }
    }
}

/// Temp file in the target's directory, synced, then renamed over the target: a reader
/// never sees a half-written spec. An updated spec keeps its permissions; a new one gets
/// the umask's (a temp file's owner-only mode must not leak through the rename).
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = path.parent().context("spec path has no parent directory")?;
    std::fs::create_dir_all(dir)?;
    dp_digest::write_file_atomically(path, text.as_bytes())?;
    Ok(())
}
