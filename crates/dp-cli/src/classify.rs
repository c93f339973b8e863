//! `dp classify`: zero-shot classification of images among text labels with a CLIP model
//! (`image_clip` preset).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dp_manager::preset::PresetInputs;
use dp_manager::preset::PresetOutput;

use crate::Cli;
use crate::output::report_model_error;
use crate::providers::manager;

/// Options of `dp classify`.
#[derive(Debug, Args)]
pub(crate) struct ClassifyArgs {
    /// The model, by name or alias (its preset must be `image_clip`).
    #[arg(long)]
    model: String,
    /// An image file (JPEG, PNG, WebP, GIF, BMP); repeat for several.
    #[arg(long = "image", value_name = "FILE", required = true)]
    images: Vec<PathBuf>,
    /// A candidate label, as text (e.g. "a photo of a cat"); repeat for several.
    #[arg(long = "label", value_name = "TEXT", required = true)]
    labels: Vec<String>,
    /// The most bytes read over all images.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::embed::DEFAULT_MAX_INPUT_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_input_bytes: u64,
    /// Verification cache file (as for `dp embed`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

pub(crate) fn run(cli: &Cli, args: &ClassifyArgs) -> anyhow::Result<ExitCode> {
    let images = match crate::images::read_images(&args.images, args.max_input_bytes) {
        Ok(images) => images,
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
    let labels: Vec<&str> = args.labels.iter().map(String::as_str).collect();
    let run = match manager.run_preset(
        &args.model,
        PresetInputs::ImagesWithLabels {
            images: &images,
            labels: &labels,
        },
    ) {
        Ok(run) => run,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let PresetOutput::Probabilities(probabilities) = run.output else {
        anyhow::bail!("model {} made no probabilities", args.model);
    };
    crate::output::with_stdout(|out| {
        if cli.json {
            let doc = serde_json::json!({
                "models_used": run.models_used,
                "model_signature": run.model_signature,
                "labels": args.labels,
                "probabilities": probabilities,
            });
            serde_json::to_writer(&mut *out, &doc)?;
            out.write_all(b"\n")?;
        } else {
            for (path, row) in args.images.iter().zip(&probabilities) {
                let mut ranked: Vec<(&String, f32)> =
                    args.labels.iter().zip(row.iter().copied()).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                writeln!(
                    out,
                    "{}",
                    dp_spec::escape_controls(&path.display().to_string())
                )?;
                for (label, p) in ranked {
                    writeln!(out, "  {p:.4}  {}", dp_spec::escape_controls(label))?;
                }
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

use std::io::Write as _;
