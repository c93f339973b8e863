//! `dp resolve`: which model a name, alias or role resolves to on this machine, and the
//! `models_used` record (with its `model_signature`) its outputs would carry. That record
//! signs the model's files, so they are verified (as a load would, without loading): a
//! model whose files are missing or altered is reported with exit code 3.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::Cli;
use crate::output::{outln, report_model_error};
use crate::providers::manager;

/// Options of `dp resolve`.
#[derive(Debug, Args)]
pub(crate) struct ResolveArgs {
    /// A model name or alias (or, with --role, a preferred model).
    name: Option<String>,
    /// Resolve by role: the preferred NAME if it qualifies, else the first non-deprecated
    /// model of the role with every --capability, in catalog order.
    #[arg(long)]
    role: Option<String>,
    /// A capability the model must have (repeatable; with --role).
    #[arg(long = "capability", value_name = "C", requires = "role")]
    capabilities: Vec<String>,
}

/// `dp resolve --json`: the request, why a role chose its model, and the record.
#[derive(Serialize)]
struct Resolved<'a, T> {
    request: String,
    /// How a role was resolved (`preferred`, `catalog_order`…); absent for a name.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    /// A list of the one record, the shape `models_used` has in every output (`dp embed
    /// --json`, the records pipelines store), so one reader handles them all.
    models_used: [&'a T; 1],
}

pub(crate) fn run(cli: &Cli, args: &ResolveArgs) -> anyhow::Result<ExitCode> {
    let manager = match manager(cli, None) {
        Ok(manager) => manager,
        Err(code) => return Ok(code),
    };
    let (request, name, reason) = match (&args.role, &args.name) {
        (Some(role), preferred) => {
            let capabilities: Vec<&str> = args.capabilities.iter().map(String::as_str).collect();
            match manager.resolve_role(role, &capabilities, preferred.as_deref()) {
                Ok(resolution) => (
                    format!("role:{role}"),
                    resolution.entry.spec.model_name.clone(),
                    Some(resolution.reason.as_str()),
                ),
                Err(err) => return Ok(report_model_error(cli, &err)),
            }
        }
        (None, Some(name)) => (name.clone(), name.clone(), None),
        (None, None) => {
            let err = dp_spec::ModelError::new(
                dp_spec::ErrorCode::InvalidInput,
                "give a model NAME or --role ROLE (see `dp resolve --help`)",
            );
            return Ok(report_model_error(cli, &err));
        }
    };
    // Resolving by name warns (through tracing) when the model is deprecated.
    if let Err(err) = manager.resolve(&name) {
        return Ok(report_model_error(cli, &err));
    }
    let entry = match manager.models_used(&name) {
        Ok(entry) => entry,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    if cli.json {
        let out = Resolved {
            request,
            reason,
            models_used: [&entry],
        };
        crate::output::json(&out)?;
    } else {
        outln!(
            "{request} -> {} ({} {}, {} on {}){}",
            entry.model_name,
            entry.runtime.as_str(),
            entry.engine.as_str(),
            entry.precision.as_str(),
            entry.device,
            reason.map_or_else(String::new, |r| format!(" [{r}]"))
        )?;
        outln!("model_signature: {}", entry.model_signature)?;
        outln!("model_signature_short: {}", entry.model_signature_short)?;
        outln!("preprocess_signature: {}", entry.preprocess_signature)?;
    }
    Ok(ExitCode::SUCCESS)
}
