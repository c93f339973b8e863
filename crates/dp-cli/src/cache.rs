//! `dp cache stats|clear`: what the persistent embedding cache (`--embedding-cache DIR` or
//! `DP_EMBEDDING_CACHE`) holds, and emptying it, all of it or one model's vectors.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use dp_manager::{CACHE_FILE, PersistentCacheConfig, PersistentEmbeddingCache};
use dp_spec::{ErrorCode, ModelError};

use crate::Cli;
use crate::output::report_model_error;

/// Options of `dp cache`.
#[derive(Debug, Args)]
pub(crate) struct CacheArgs {
    #[command(subcommand)]
    action: CacheAction,
}

#[derive(Debug, Subcommand)]
enum CacheAction {
    /// Vectors and bytes stored, per model; with --json:
    /// {"path":…,"entries":N,"bytes":N,"max_bytes":N,"models":{NAME:N}}.
    Stats {
        /// Count only this model's vectors.
        #[arg(long)]
        model: Option<String>,
    },
    /// Remove every vector, or only this model's (`--model`).
    Clear {
        /// Remove only this model's vectors.
        #[arg(long)]
        model: Option<String>,
    },
}

pub(crate) fn run(cli: &Cli, args: &CacheArgs) -> anyhow::Result<ExitCode> {
    let store = match open(cli) {
        Ok(store) => store,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    match &args.action {
        CacheAction::Stats { model } => {
            let mut stats = match store.stats() {
                Ok(stats) => stats,
                Err(err) => return Ok(report_model_error(cli, &err)),
            };
            if let Some(model) = model {
                stats.models.retain(|name, _| name == model);
                stats.entries = stats.models.values().sum();
            }
            crate::output::with_stdout(|out| {
                if cli.json {
                    serde_json::to_writer(&mut *out, &stats)?;
                    out.write_all(b"\n")?;
                } else {
                    writeln!(out, "{}", stats.path.display())?;
                    writeln!(
                        out,
                        "{} vectors, {} bytes (at most {})",
                        stats.entries, stats.bytes, stats.max_bytes
                    )?;
                    for (name, n) in &stats.models {
                        writeln!(out, "  {name}: {n}")?;
                    }
                }
                Ok(())
            })?;
        }
        CacheAction::Clear { model } => {
            let removed = match store.clear(model.as_deref()) {
                Ok(removed) => removed,
                Err(err) => return Ok(report_model_error(cli, &err)),
            };
            crate::output::with_stdout(|out| {
                if cli.json {
                    serde_json::to_writer(
                        &mut *out,
                        &serde_json::json!({"path": store.path(), "removed": removed}),
                    )?;
                    out.write_all(b"\n")?;
                } else {
                    writeln!(
                        out,
                        "removed {removed} vectors from {}",
                        store.path().display()
                    )?;
                }
                Ok(())
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The cache `--embedding-cache` names; it must exist (these commands never create one).
fn open(cli: &Cli) -> Result<PersistentEmbeddingCache, ModelError> {
    let models_root = crate::providers::models_root(cli)?;
    let Some(dir) = crate::providers::embedding_cache_dir(cli, &models_root)? else {
        return Err(ModelError::new(
            ErrorCode::InvalidInput,
            "dp cache needs the cache folder: give --embedding-cache DIR or set \
             DP_EMBEDDING_CACHE",
        ));
    };
    if !dir.join(CACHE_FILE).is_file() {
        return Err(ModelError::new(
            ErrorCode::InvalidInput,
            format!(
                "{} holds no embedding cache ({CACHE_FILE}); a command that embeds with \
                 --embedding-cache {} creates it",
                dir.display(),
                dir.display()
            ),
        )
        .with_detail("embedding_cache", dir.display().to_string()));
    }
    PersistentEmbeddingCache::open(&PersistentCacheConfig::new(dir))
}
