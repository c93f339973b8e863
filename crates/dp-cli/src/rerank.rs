//! `dp rerank`: scores documents against a query with a cross-encoder (preset
//! `cross_encoder`).
//!
//! The documents are read as `dp embed` reads texts (a JSON array of strings, or one per
//! line; bounded by `--max-input-bytes` and `--max-texts`).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::Cli;
use crate::embed::{DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_TEXTS, read_texts};
use crate::output::report_model_error;
use crate::providers::manager;

/// Options of `dp rerank`.
#[derive(Debug, Args)]
pub(crate) struct RerankArgs {
    /// The model, by name or alias (its preset must be `cross_encoder`).
    #[arg(long)]
    model: String,
    /// The query the documents are scored against.
    #[arg(long, value_name = "TEXT")]
    query: String,
    /// The documents: a JSON array of strings, or one per line (empty lines skipped). `-`
    /// (the default) reads stdin.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    input: PathBuf,
    /// Also list the `K` best documents, best first, as `{index, score}` (`"ranking"` in
    /// `--json`); without it every document is listed in input order.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    top_k: Option<u64>,
    /// The largest input accepted, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_INPUT_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_input_bytes: u64,
    /// The most documents accepted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TEXTS)]
    max_texts: usize,
    /// Verification cache file (as for `dp embed`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

pub(crate) fn run(cli: &Cli, args: &RerankArgs) -> anyhow::Result<ExitCode> {
    let documents = match read_texts(&args.input, args.max_input_bytes, args.max_texts.max(1)) {
        Ok(documents) => documents,
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
    let refs: Vec<&str> = documents.iter().map(String::as_str).collect();
    let output = match manager.rerank(&args.model, &args.query, &refs) {
        Ok(output) => output,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let top_k = args.top_k.map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    crate::output::with_stdout(|out| {
        if cli.json {
            let mut doc = serde_json::json!({
                "models_used": output.models_used,
                "model_signature": output.model_signature,
                "scores": output.scores,
            });
            if let Some(k) = top_k {
                doc["ranking"] = serde_json::to_value(output.top_k(k))?;
            }
            serde_json::to_writer(&mut *out, &doc)?;
            out.write_all(b"\n")?;
        } else {
            // Best first; every document unless --top-k says how many.
            let ranked = output.top_k(top_k.unwrap_or(usize::MAX));
            for r in ranked {
                writeln!(
                    out,
                    "{:.6}\t{}\t{}",
                    r.score,
                    r.index,
                    dp_spec::escape_controls(&documents[r.index])
                )?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
