//! `dp validate [PATH…]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use dp_spec::{
    Catalog, Diagnostic, Layer, ParseLimits, SourceDocument, sort_diagnostics, validate_document,
};

use crate::output::{outln, report_diagnostics};
use crate::{Cli, load_resolved};

/// Arguments of `dp validate`.
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// Spec files, profile files or catalog directories. Without any, the catalog given
    /// by --catalog is validated with its --profile and --set layers.
    pub(crate) paths: Vec<PathBuf>,
}

/// What a validated path held.
#[derive(Debug, Default)]
struct Tally {
    models: usize,
    profiles: usize,
}

pub(crate) fn run(cli: &Cli, args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut diagnostics = Vec::new();
    let mut tally = Tally::default();
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
            validate_path(path, &mut tally, &mut diagnostics);
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

fn validate_path(path: &Path, tally: &mut Tally, diagnostics: &mut Vec<Diagnostic>) {
    if path.is_dir() {
        match Catalog::load(path) {
            Ok(catalog) => tally.models += catalog.len(),
            Err(found) => diagnostics.extend(found),
        }
        return;
    }
    let doc = match SourceDocument::read(path, ParseLimits::default()) {
        Ok(doc) => doc,
        Err(err) => {
            diagnostics.push(err.into());
            return;
        }
    };
    // A profile is recognised by its top-level `profile` key; anything else is a spec.
    if doc.value.get("profile").is_some() {
        match Layer::from_profile_document(&doc) {
            Ok(_) => tally.profiles += 1,
            Err(found) => diagnostics.extend(found),
        }
    } else {
        match validate_document(&doc) {
            Ok(_) => tally.models += 1,
            Err(found) => diagnostics.extend(found),
        }
    }
}
