//! `dp list [--role R]`.
//!
//! The table escapes control characters in what it prints ([`escape_controls`]); `--json`
//! prints values exactly (serde escapes them).

use std::process::ExitCode;

use clap::Args;
use dp_spec::{CatalogEntry, escape_controls};
use serde::Serialize;

use crate::output::{outln, report_diagnostics};
use crate::{Cli, load_resolved};

/// Arguments of `dp list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only models serving this role.
    #[arg(long)]
    role: Option<String>,
}

/// One row of `dp list --json`.
#[derive(Debug, Serialize)]
struct ListedModel<'a> {
    model_name: &'a str,
    model_version: &'a str,
    display_name: Option<&'a str>,
    roles: Vec<&'a str>,
    capabilities: Vec<&'a str>,
    runtime: &'static str,
    engine: &'static str,
    precision: &'static str,
    device_policy: String,
    tier: u8,
    deprecated: bool,
    aliases: &'a [String],
    file: String,
    /// Layers (profiles, overrides) that changed this model, lowest first.
    layers: &'a [String],
}

pub(crate) fn run(cli: &Cli, args: &ListArgs) -> anyhow::Result<ExitCode> {
    let resolved = match load_resolved(cli) {
        Ok(resolved) => resolved,
        Err(found) => return report_diagnostics(cli, &found),
    };
    let none = Vec::new();
    let rows: Vec<ListedModel<'_>> = resolved
        .catalog
        .entries()
        .iter()
        .filter(|e| args.role.as_deref().is_none_or(|r| e.spec.has_role(r)))
        .map(|e| {
            listed(
                e,
                resolved.provenance.get(&e.spec.model_name).unwrap_or(&none),
            )
        })
        .collect();
    if cli.json {
        crate::output::json(&serde_json::json!({ "models": rows }))?;
        return Ok(ExitCode::SUCCESS);
    }
    print_table(&rows)?;
    Ok(ExitCode::SUCCESS)
}

fn listed<'a>(entry: &'a CatalogEntry, layers: &'a [String]) -> ListedModel<'a> {
    let spec = &entry.spec;
    ListedModel {
        model_name: &spec.model_name,
        model_version: &spec.model_version,
        display_name: spec.display_name.as_deref(),
        roles: spec.all_roles().collect(),
        capabilities: spec
            .capabilities
            .iter()
            .filter(|(_, on)| **on)
            .map(|(c, _)| c.as_str())
            .collect(),
        runtime: spec.runtime.as_str(),
        engine: spec.engine.as_str(),
        precision: spec.precision.as_str(),
        device_policy: spec.device_policy.to_string(),
        tier: spec.tier,
        deprecated: spec.deprecated,
        aliases: &spec.aliases,
        file: entry.document.path.display().to_string(),
        layers,
    }
}

fn print_table(rows: &[ListedModel<'_>]) -> anyhow::Result<()> {
    let header = [
        "MODEL",
        "VERSION",
        "ROLES",
        "RUNTIME/ENGINE",
        "DEVICE",
        "PRECISION",
        "TIER",
        "NOTES",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let mut notes = Vec::new();
            if r.deprecated {
                notes.push("deprecated".to_owned());
            }
            if !r.layers.is_empty() {
                notes.push(format!("changed by {}", r.layers.join(", ")));
            }
            // Every cell may quote spec or profile text: escape controls before the
            // widths are measured, so the table stays aligned and the terminal inert.
            [
                r.model_name.to_owned(),
                r.model_version.to_owned(),
                r.roles.join(","),
                format!("{}/{}", r.runtime, r.engine),
                r.device_policy.clone(),
                r.precision.to_owned(),
                r.tier.to_string(),
                notes.join("; "),
            ]
            .map(|cell| escape_controls(&cell).into_owned())
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cols: &[String]| {
        let padded: Vec<String> = cols
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    outln!("{}", line(&header.map(str::to_owned)))?;
    for row in &cells {
        outln!("{}", line(row))?;
    }
    outln!(
        "{} model{}",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )
}
