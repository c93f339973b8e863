//! `dp health`: whether each model could serve now (without loading it), and whether every
//! tier-0 model is ready.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::Cli;
use crate::output::{EXIT_NOT_READY, outln};
use crate::providers::manager;

/// Options of `dp health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Verification cache file (as for `dp verify`; default:
    /// `$XDG_CACHE_HOME/dp-models/verify-cache.json`, else `~/.cache/dp-models/…`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

pub(crate) fn run(cli: &Cli, args: &HealthArgs) -> anyhow::Result<ExitCode> {
    let cache = args
        .cache
        .clone()
        .or_else(crate::verify::default_cache_path);
    let manager = match manager(cli, cache) {
        Ok(manager) => manager,
        Err(code) => return Ok(code),
    };
    let report = manager.health();
    if cli.json {
        crate::output::json(&report)?;
    } else {
        for model in &report.models {
            let state = if model.ready { "ready" } else { "NOT READY" };
            outln!(
                "{:<40} tier {} {:<9} provider={} digest={}",
                model.model_name,
                model.tier,
                state,
                model.provider.as_deref().unwrap_or("-"),
                serde_json::to_value(model.digest)?.as_str().unwrap_or("?")
            )?;
            for problem in &model.problems {
                outln!("    {problem}")?;
            }
        }
        let tier0 = &report.tier0;
        outln!(
            "tier 0: {}/{} ready{}",
            tier0.ready,
            tier0.total,
            if tier0.not_ready.is_empty() {
                String::new()
            } else {
                format!(" (not ready: {})", tier0.not_ready.join(", "))
            }
        )?;
    }
    Ok(if report.tier0_ready() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_READY)
    })
}
