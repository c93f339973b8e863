//! `dp parity`: runs two models on the same texts or images and reports how closely their
//! embeddings agree (min/mean cosine, max absolute difference), exit code 3 when some
//! input falls below the tolerance: the cross-provider proof (candle vs ONNX vs Triton,
//! CPU vs GPU) as a command users can run on their own models.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dp_manager::{EmbeddingOutput, EmbeddingParity};
use serde::Serialize;

use crate::Cli;
use crate::embed::EmbedInputArgs;
use crate::output::report_model_error;
use crate::providers::manager;

/// Default of `--tolerance`: the cosine the provider parity tests hold every build to.
const DEFAULT_TOLERANCE: f64 = 0.9999;

/// The exit code when some input's cosine is below the tolerance (the models ran: the
/// result is the finding, not an error).
const EXIT_OUTSIDE_TOLERANCE: u8 = 3;

/// Options of `dp parity`.
#[derive(Debug, Args)]
pub(crate) struct ParityArgs {
    /// The first model, by name or alias (for example the candle build).
    model_a: String,
    /// The second model (for example the ONNX or Triton build of the same model).
    model_b: String,
    #[command(flatten)]
    inputs: EmbedInputArgs,
    /// The smallest cosine similarity accepted for every input, in (0, 1]; below it, exit
    /// code 3.
    #[arg(long, value_name = "COS", default_value_t = DEFAULT_TOLERANCE, value_parser = parse_tolerance)]
    tolerance: f64,
    /// Verification cache file (as for `dp embed`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

/// `--tolerance`: a cosine in (0, 1].
fn parse_tolerance(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(cos) if cos > 0.0 && cos <= 1.0 => Ok(cos),
        Ok(cos) => Err(format!(
            "{cos} is not a cosine in (0, 1]; give the smallest cosine to accept, e.g. 0.9999"
        )),
        Err(err) => Err(err.to_string()),
    }
}

/// The `--json` document.
#[derive(Serialize)]
struct ParityReport<'a, Record: Serialize> {
    /// Both models' records (`models_used` entries), the first model first.
    models_used: Vec<&'a Record>,
    /// Both models' signatures, in the same order.
    model_signatures: [&'a str; 2],
    #[serde(flatten)]
    parity: &'a EmbeddingParity,
    tolerance: f64,
    within_tolerance: bool,
}

pub(crate) fn run(cli: &Cli, args: &ParityArgs) -> anyhow::Result<ExitCode> {
    let inputs = match args.inputs.read() {
        Ok(inputs) => inputs,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let cache = args
        .cache
        .clone()
        .or_else(crate::verify::default_cache_path);
    let manager = match manager(cli, cache) {
        Ok(manager) => manager,
        Err(code) => return Ok(code),
    };
    let embed = |model: &str| inputs.embed(&manager, model);
    let (a, b) = match embed(&args.model_a).and_then(|a| Ok((a, embed(&args.model_b)?))) {
        Ok(pair) => pair,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let parity = match EmbeddingParity::compare(&a.embeddings, &b.embeddings) {
        Ok(parity) => parity,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let within = parity.within(args.tolerance);
    if cli.json {
        crate::output::json(&ParityReport {
            models_used: a.models_used.iter().chain(&b.models_used).collect(),
            model_signatures: [&a.model_signature, &b.model_signature],
            parity: &parity,
            tolerance: args.tolerance,
            within_tolerance: within,
        })?;
    } else {
        crate::output::stdout(&format!(
            "min cosine {} (input {}), mean cosine {}, max |Δ| {:e}: {} {} of {} dimensions, \
             {} vs {}\n",
            parity.min_cosine,
            parity.worst_input,
            parity.mean_cosine,
            parity.max_abs_diff,
            parity.inputs,
            inputs.noun(),
            parity.dimension,
            describe(&a),
            describe(&b),
        ))?;
        crate::output::stderr(&if within {
            format!(
                "dp: within the tolerance (every cosine ≥ {})",
                args.tolerance
            )
        } else {
            format!(
                "dp: outside the tolerance: input {} has cosine {} < {}",
                parity.worst_input, parity.min_cosine, args.tolerance
            )
        });
    }
    Ok(if within {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_OUTSIDE_TOLERANCE)
    })
}

/// `name (short signature)` of the model that made `output`.
fn describe(output: &EmbeddingOutput) -> String {
    output.models_used.first().map_or_else(
        || "?".to_owned(),
        |m| format!("{} ({})", m.model_name, m.model_signature_short),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_is_a_cosine() {
        assert_eq!(parse_tolerance("0.9999"), Ok(0.9999));
        assert_eq!(parse_tolerance("1"), Ok(1.0));
        for bad in ["0", "1.5", "-0.5", "NaN", "x"] {
            assert!(parse_tolerance(bad).is_err(), "{bad}");
        }
    }
}
