//! `dp`, the dp-models command line. It parses flags, calls the library crates and
//! prints; any logic a library user would also need lives in those crates.
//!
//! Exit codes: 0 success; 1 unexpected failure (I/O, internal error); 2 invalid input
//! (a spec, profile or override with problems, or bad command-line usage); 3 some model is
//! not ready (`dp verify`: weights missing, digest mismatch or version drift; `dp health`:
//! a tier-0 model not ready; `dp embed`: the model cannot serve on this machine).
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `warn`), as text or, with
//! `--log-format json`, one JSON object per line.

mod cache;
mod classify;
mod demo;
mod digest;
mod embed;
mod generate;
mod health;
mod images;
mod list;
mod output;
mod parity;
mod preprocess;
mod providers;
mod rerank;
mod resolve;
mod sync_downloader;
mod transcribe;
mod validate;
mod verify;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dp_digest::DigestError;
use dp_spec::{Catalog, Diagnostic, Layer, ModelError, ResolvedCatalog};

/// dp-models: declarative, offline, reproducible management of ML models.
#[derive(Debug, Parser)]
#[command(name = "dp", version, about, long_about = None)]
struct Cli {
    /// Catalog directory (`<catalog>/<role>/<model_name>.yaml`).
    #[arg(
        long,
        global = true,
        env = "DP_CATALOG",
        default_value = "specs/catalog"
    )]
    catalog: PathBuf,
    /// Root of the local model artifacts that specs name [env: DP_MODELS_ROOT; default:
    /// .dp-assets/models].
    // Read from the environment by `providers::models_root`, not by clap, so that an empty
    // `DP_MODELS_ROOT` is reported as the variable rather than as this flag.
    #[arg(long, global = true)]
    models_root: Option<PathBuf>,
    /// Profile file layered on the catalog (repeatable; later ones win).
    #[arg(long = "profile", global = true, value_name = "FILE")]
    profiles: Vec<PathBuf>,
    /// Explicit override `MODEL.FIELD[.SUB…]=VALUE`, above every profile (repeatable).
    #[arg(long = "set", global = true, value_name = "MODEL.FIELD=VALUE")]
    overrides: Vec<String>,
    /// Keep computed embeddings in this folder too (a persistent cache shared by every
    /// process using it), so later runs do not embed the same inputs again.
    #[arg(long, global = true, env = "DP_EMBEDDING_CACHE", value_name = "DIR")]
    embedding_cache: Option<PathBuf>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Format of the logs on stderr (filtered by `RUST_LOG`, default `warn`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per event.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try dp out with no setup: embed a few sentences with a tiny built-in model.
    Demo(demo::DemoArgs),
    /// Validate spec files, profiles or whole catalogs (default: the catalog with its layers).
    Validate(validate::ValidateArgs),
    /// List the models of the catalog, with profiles and overrides applied.
    List(list::ListArgs),
    /// Import a downloader manifest into skeleton specs (idempotent).
    SyncDownloader(sync_downloader::SyncDownloaderArgs),
    /// Print the digest of a file, or the aggregate and per-file lines of a directory.
    Digest(digest::DigestArgs),
    /// Verify models' local artifacts against their pins and the lock file; `--lock` records them.
    Verify(verify::VerifyArgs),
    /// Resolve a model by name, alias or role and print its models_used record.
    Resolve(resolve::ResolveArgs),
    /// Embed texts (a sentence-embedding or CLIP model) or images (a CLIP model).
    Embed(embed::EmbedArgs),
    /// Classify images among text labels, zero-shot, with a CLIP model.
    Classify(classify::ClassifyArgs),
    /// Score documents against a query with a cross-encoder (reranking).
    Rerank(rerank::RerankArgs),
    /// Generate one text per input text with an encoder–decoder (T5), greedy or beam search.
    Generate(generate::GenerateArgs),
    /// Transcribe (or translate) speech in audio files with a Whisper model.
    Transcribe(transcribe::TranscribeArgs),
    /// Print the tensors a model would be fed for some images or texts (its preset's output).
    Preprocess(preprocess::PreprocessArgs),
    /// Show or clear the persistent embedding cache (`--embedding-cache DIR`).
    Cache(cache::CacheArgs),
    /// Check every model without loading it; exit 3 when a tier-0 model is not ready.
    Health(health::HealthArgs),
    /// Embed the same texts or images with two models (e.g. the candle and ONNX builds of
    /// one model) and report how closely they agree; exit 3 when outside the tolerance.
    Parity(parity::ParityArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Err(err) = check_input_files(&cli) {
        return output::report_model_error(&cli, &err);
    }
    let result = match &cli.command {
        Command::Demo(args) => demo::run(&cli, args),
        Command::Validate(args) => validate::run(&cli, args),
        Command::List(args) => list::run(&cli, args),
        Command::SyncDownloader(args) => sync_downloader::run(&cli, args),
        Command::Digest(args) => digest::run(&cli, args),
        Command::Verify(args) => verify::run(&cli, args),
        Command::Resolve(args) => resolve::run(&cli, args),
        Command::Embed(args) => embed::run(&cli, args),
        Command::Classify(args) => classify::run(&cli, args),
        Command::Rerank(args) => rerank::run(&cli, args),
        Command::Generate(args) => generate::run(&cli, args),
        Command::Transcribe(args) => transcribe::run(&cli, args),
        Command::Preprocess(args) => preprocess::run(&cli, args),
        Command::Health(args) => health::run(&cli, args),
        Command::Cache(args) => cache::run(&cli, args),
        Command::Parity(args) => parity::run(&cli, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            output::stderr(&format!("dp: error: {err:#}"));
            ExitCode::FAILURE
        }
    }
}

/// Refuses `path`, named on the command line as `role`, if it exists but is not a regular
/// file: opening a FIFO for reading would block `dp` forever. Other problems (a missing
/// file, no permission) are left to the command that reads it, which reports them.
pub(crate) fn refuse_special_file(path: &Path, role: &'static str) -> Result<(), ModelError> {
    match dp_digest::check_regular_file(path, role) {
        Err(err @ DigestError::NotARegularFile { .. }) => {
            Err(ModelError::from(err).with_detail("path", path.display().to_string()))
        }
        _ => Ok(()),
    }
}

/// Checks the files given on the command line that are read before anything else: the
/// `--profile` files and the files `dp validate` is given (a directory there is a catalog).
fn check_input_files(cli: &Cli) -> Result<(), ModelError> {
    for path in &cli.profiles {
        refuse_special_file(path, "profile")?;
    }
    if let Command::Validate(args) = &cli.command {
        for path in args.paths.iter().filter(|p| !p.is_dir()) {
            refuse_special_file(path, "file")?;
        }
    }
    Ok(())
}

/// Loads the catalog and applies `--profile` files and `--set` overrides, in that order.
fn load_resolved(cli: &Cli) -> Result<ResolvedCatalog, Vec<Diagnostic>> {
    let catalog = Catalog::load(&cli.catalog)?;
    let mut layers = Vec::new();
    let mut problems = Vec::new();
    for path in &cli.profiles {
        match Layer::read_profile(path) {
            Ok(layer) => layers.push(layer),
            Err(found) => problems.extend(found),
        }
    }
    if !cli.overrides.is_empty() {
        match Layer::from_overrides(&cli.overrides) {
            Ok(layer) => layers.push(layer),
            Err(found) => problems.push(found),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    dp_spec::resolve(&catalog, &layers)
}
