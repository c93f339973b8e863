//! `dp`, the dp-models command line. It parses flags, calls the library crates and
//! prints; any logic a library user would also need lives in those crates.
//!
//! Exit codes: 0 success; 1 unexpected failure (I/O, internal error); 2 invalid input
//! (a spec, profile or override with problems, or bad command-line usage).

mod list;
mod sync_downloader;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dp_spec::{Catalog, Diagnostic, Layer, ResolvedCatalog};

/// Exit code for invalid input (specs, profiles, overrides, usage).
const EXIT_INVALID: u8 = 2;

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
    /// Root of the local model artifacts that specs name.
    #[arg(long, global = true, env = "DP_MODELS_ROOT")]
    models_root: Option<PathBuf>,
    /// Profile file layered on the catalog (repeatable; later ones win).
    #[arg(long = "profile", global = true, value_name = "FILE")]
    profiles: Vec<PathBuf>,
    /// Explicit override `MODEL.FIELD[.SUB…]=VALUE`, above every profile (repeatable).
    #[arg(long = "set", global = true, value_name = "MODEL.FIELD=VALUE")]
    overrides: Vec<String>,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate spec files, profiles or whole catalogs (default: the catalog with its layers).
    Validate(validate::ValidateArgs),
    /// List the models of the catalog, with profiles and overrides applied.
    List(list::ListArgs),
    /// Import a downloader manifest into skeleton specs (idempotent).
    SyncDownloader(sync_downloader::SyncDownloaderArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let result = match &cli.command {
        Command::Validate(args) => validate::run(&cli, args),
        Command::List(args) => list::run(&cli, args),
        Command::SyncDownloader(args) => sync_downloader::run(&cli, args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("dp: error: {err:#}");
            ExitCode::FAILURE
        }
    }
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

/// Prints one structured error (JSON `{"errors":[…]}` on stdout, or a line on stderr) and
/// returns the exit code for its class.
fn report_error(cli: &Cli, err: &dp_spec::ModelError) -> anyhow::Result<ExitCode> {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "errors": [err] }))?
        );
    } else {
        eprintln!("dp: {err}");
    }
    Ok(ExitCode::from(EXIT_INVALID))
}

/// Prints diagnostics (JSON on stdout, or one line each on stderr) and returns exit code 2.
fn report_diagnostics(cli: &Cli, diagnostics: &[Diagnostic]) -> anyhow::Result<ExitCode> {
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "errors": diagnostics }))?
        );
    } else {
        for d in diagnostics {
            eprintln!("{d}");
        }
        eprintln!(
            "dp: {} problem{} found",
            diagnostics.len(),
            if diagnostics.len() == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::from(EXIT_INVALID))
}
