//! `dp generate`: one generated text per input text with an encoder–decoder (preset
//! `text_generation`, e.g. T5), by greedy or beam search.
//!
//! Texts are read as `dp embed` reads them (a JSON array of strings, or one per line;
//! bounded by `--max-input-bytes` and `--max-texts`). Without `--json`, a single text's
//! output is printed as its tokens come (greedy search); several texts are printed one per
//! line, in input order, when all are done.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use dp_manager::{EarlyStopping, GeneratedPiece, GenerationOptions};

use crate::Cli;
use crate::embed::{DEFAULT_MAX_INPUT_BYTES, DEFAULT_MAX_TEXTS, read_texts};
use crate::output::report_model_error;
use crate::providers::manager;

/// `--early-stopping`: when beam search stops.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum EarlyStoppingArg {
    /// When the running beams cannot beat the finished ones at the current length
    /// (transformers' default).
    False,
    /// As soon as `--num-beams` hypotheses finished.
    True,
    /// Only when no running beam can beat a finished one at any length.
    Never,
}

/// The search flags `dp generate` and `dp transcribe` share.
#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// New tokens at most per text (`dp generate`: default 64; `dp transcribe`: per
    /// 30-second chunk, default all the decoder's positions; at most the model's limit).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_new_tokens: Option<u64>,
    /// New tokens before the end of the text may be chosen.
    #[arg(long, value_name = "N", default_value_t = 0)]
    min_new_tokens: u64,
    /// Beams: 1 is greedy search, more is beam search.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    num_beams: u64,
    /// Beam scores are divided by length^PENALTY (above 0 favours longer texts).
    #[arg(
        long,
        value_name = "PENALTY",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    length_penalty: f32,
    /// No n-gram of this size is repeated (0: off).
    #[arg(long, value_name = "N", default_value_t = 0)]
    no_repeat_ngram_size: u64,
    /// When beam search stops.
    #[arg(long, value_enum, default_value = "false")]
    early_stopping: EarlyStoppingArg,
}

impl SearchArgs {
    /// The manager's options for these flags.
    pub(crate) fn options(&self) -> GenerationOptions {
        GenerationOptions {
            max_new_tokens: self.max_new_tokens.map(count),
            min_new_tokens: count(self.min_new_tokens),
            num_beams: count(self.num_beams),
            length_penalty: self.length_penalty,
            no_repeat_ngram_size: count(self.no_repeat_ngram_size),
            early_stopping: match self.early_stopping {
                EarlyStoppingArg::False => EarlyStopping::Heuristic,
                EarlyStoppingArg::True => EarlyStopping::WhenFull,
                EarlyStoppingArg::Never => EarlyStopping::Never,
            },
        }
    }
}

/// Options of `dp generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The model, by name or alias (its preset must be `text_generation`).
    #[arg(long)]
    model: String,
    /// The input texts: a JSON array of strings, or one per line (empty lines skipped).
    /// `-` (the default) reads stdin.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    input: PathBuf,
    #[command(flatten)]
    search: SearchArgs,
    /// The largest input accepted, in bytes.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_INPUT_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_input_bytes: u64,
    /// The most texts accepted.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TEXTS)]
    max_texts: usize,
    /// Verification cache file (as for `dp embed`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

fn count(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

pub(crate) fn run(cli: &Cli, args: &GenerateArgs) -> anyhow::Result<ExitCode> {
    let texts = match read_texts(&args.input, args.max_input_bytes, args.max_texts.max(1)) {
        Ok(texts) => texts,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let options = args.search.options();
    let cache = args
        .cache
        .clone()
        .or_else(crate::verify::default_cache_path);
    let manager = match manager(cli, cache) {
        Ok(manager) => manager,
        Err(code) => return Ok(code),
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    // One text in text mode: print it as it comes.
    let stream = !cli.json && refs.len() == 1;
    let result = if stream {
        let mut stdout = std::io::stdout().lock();
        let mut on_piece = |piece: GeneratedPiece<'_>| {
            // A closed pipe only stops the printing; the result is still complete.
            let _ = write!(stdout, "{}", dp_spec::escape_controls(piece.text));
            let _ = stdout.flush();
        };
        let result = manager.generate_streaming(&args.model, &refs, &options, &mut on_piece);
        if result.is_ok() {
            let _ = writeln!(stdout);
        }
        result
    } else {
        manager.generate(&args.model, &refs, &options)
    };
    let output = match result {
        Ok(output) => output,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    for &i in &output.truncated {
        crate::output::stderr(&format!(
            "dp generate: text {i} was longer than the model's encoder takes and was truncated"
        ));
    }
    if stream {
        return Ok(ExitCode::SUCCESS);
    }
    crate::output::with_stdout(|out| {
        if cli.json {
            let doc = serde_json::json!({
                "models_used": output.models_used,
                "model_signature": output.model_signature,
                "texts": output.texts,
                "token_ids": output.token_ids,
                "truncated": output.truncated,
            });
            serde_json::to_writer(&mut *out, &doc)?;
            out.write_all(b"\n")?;
        } else {
            for text in &output.texts {
                writeln!(out, "{}", dp_spec::escape_controls(text))?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
