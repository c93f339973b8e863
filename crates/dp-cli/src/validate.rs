//! `dp validate [PATH…]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dp_spec::sort_diagnostics;

use crate::output::{outln, report_diagnostics};
use crate::{Cli, load_resolved};

/// Arguments of `dp validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Spec files, profile files or catalog directories. Without any, the catalog given
    /// by --catalog is validated with its --profile and --set layers.
    pub(crate) paths: Vec<PathBuf>,
}

pub(crate) fn run(cli: &Cli, args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut diagnostics = Vec::new();
    let mut tally = dp_spec::ValidationTally::default();
    if args.paths.is_empty() {
        match load_resolved(cli) {
            Ok(resolved) => {
                tally.models = resolved.catalog.len();
                tally.profiles = cli.profiles.len();
            }
            Err(found) => diagnostics.extend(found),
        }
    } else {
        for path in &args.paths {
            dp_spec::validate_path(path, &mut tally, &mut diagnostics);
        }
    }
    if !diagnostics.is_empty() {
        sort_diagnostics(&mut diagnostics);
        return report_diagnostics(cli, &diagnostics);
    }
    if cli.json {
        crate::output::json(&serde_json::json!({
            "errors": [],
            "models": tally.models,
            "profiles": tally.profiles,
        }))?;
    } else {
        outln!(
            "ok: {} model spec{} and {} profile{} valid",
            tally.models,
            if tally.models == 1 { "" } else { "s" },
            tally.profiles,
            if tally.profiles == 1 { "" } else { "s" }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
