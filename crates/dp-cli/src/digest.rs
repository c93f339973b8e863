//! `dp digest PATH [--algo sha256|blake3] [--cache FILE] [--strict]`: the digest of a file,
//! or the aggregate and per-file lines of a directory (the lines `sha256sum` prints), and
//! the terminal progress bar shared with `dp verify`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use clap::{Args, ValueEnum};
use dp_digest::{
    DigestAlgorithm, ManifestOptions, NoProgress, PathDigest, Progress, VerificationCache,
    digest_path,
};
use dp_manager::integrity;
use dp_spec::ModelError;

use crate::Cli;
use crate::output::report_path_error;

/// Arguments of `dp digest`.
#[derive(Debug, Args)]
pub(crate) struct DigestArgs {
    /// File or directory to hash (symlinks are followed; see docs/digests.md).
    path: PathBuf,
    /// Hash algorithm.
    #[arg(long, value_enum, default_value_t = Algo::Sha256)]
    algo: Algo,
    /// Verification cache file: digests of files whose identity (device, inode, size, mtime,
    /// ctime) is unchanged are taken from it instead of being read again.
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Read and hash every byte even when the cache knows the file (and refresh the cache).
    #[arg(long)]
    strict: bool,
}

/// The `--algo` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Algo {
    /// SHA-256, as `sha256sum` prints it.
    Sha256,
    /// BLAKE3, as `b3sum` prints it.
    Blake3,
}

impl From<Algo> for DigestAlgorithm {
    fn from(algo: Algo) -> Self {
        match algo {
            Algo::Sha256 => Self::Sha256,
            Algo::Blake3 => Self::Blake3,
        }
    }
}

pub(crate) fn run(cli: &Cli, args: &DigestArgs) -> anyhow::Result<ExitCode> {
    let meta = match integrity::digest_target(&args.path) {
        Ok(meta) => meta,
        Err(err) => return Ok(report_path_error(cli, &err)),
    };
    // A directory is hashed as a manifest; anything else must be a regular file, refused
    // before it is opened (a FIFO would block the read forever).
    if !meta.is_dir()
        && let Err(err) = crate::refuse_special_file(&args.path, "file to hash")
    {
        return Ok(report_path_error(cli, &err));
    }
    if let Some(cache) = &args.cache {
        // The same rule as `dp verify`: a regular file, outside the models root.
        let checked = crate::providers::models_root(cli)
            .and_then(|root| crate::providers::check_cache(cache, &root));
        if let Err(err) = checked {
            return Ok(report_path_error(cli, &err));
        }
    }
    let cache = args.cache.as_ref().map(VerificationCache::load);
    let bar = TerminalProgress::for_stderr();
    let options = ManifestOptions {
        algorithm: DigestAlgorithm::from(args.algo),
        strict: args.strict,
        cache: cache.as_ref(),
        progress: bar.as_progress(),
        ..ManifestOptions::default()
    };
    let hashed = match digest_path(&args.path, meta.is_dir(), &options) {
        Ok(hashed) => hashed,
        Err(err) => return Ok(report_path_error(cli, &ModelError::from(err))),
    };
    if let Some(cache) = &cache
        && let Err(err) = cache.save_if_changed()
    {
        // The digest is right; only the next run will be slower.
        crate::output::stderr(&format!(
            "dp: warning: could not save the verification cache: {err}"
        ));
    }
    crate::output::stdout(&render(&hashed, cli.json)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The text `dp digest` prints: the digest; or the aggregate then the per-file lines
/// exactly as `sha256sum` (`b3sum`) prints them. `--json`: [`PathDigest::to_json`].
fn render(hashed: &PathDigest, as_json: bool) -> anyhow::Result<String> {
    let mut text = match (hashed, as_json) {
        (_, true) => serde_json::to_string_pretty(&hashed.to_json())?,
        (PathDigest::File(digest), false) => digest.clone(),
        (PathDigest::Directory(manifest), false) => {
            let mut text = format!("{}\n{}", manifest.aggregate, manifest.sha256sum_lines());
            text.pop();
            text
        }
    };
    text.push('\n');
    Ok(text)
}

/// Jobs smaller than this finish too fast for a bar to help.
const BAR_MIN_BYTES: u64 = 256 << 20;

/// An indicatif bar with bytes/s on stderr, shown only when stderr is a terminal and the
/// job is large; otherwise nothing is drawn.
pub(crate) struct TerminalProgress {
    enabled: bool,
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl TerminalProgress {
    /// A bar if stderr is a terminal, else a silent hook.
    pub(crate) fn for_stderr() -> Self {
        Self {
            enabled: std::io::stderr().is_terminal(),
            bar: Mutex::new(None),
        }
    }

    /// The hook to pass to `dp-digest`.
    pub(crate) fn as_progress(&self) -> &dyn Progress {
        if self.enabled { self } else { &NoProgress }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<indicatif::ProgressBar>)) {
        f(&mut self.bar.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

impl Progress for TerminalProgress {
    fn start(&self, total_bytes: u64, total_files: u64) {
        if total_bytes < BAR_MIN_BYTES {
            return;
        }
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let bar = indicatif::ProgressBar::new(total_bytes)
            .with_style(style)
            .with_message(format!(
                "hashing {total_files} file{}",
                if total_files == 1 { "" } else { "s" }
            ));
        self.with_bar(|slot| *slot = Some(bar));
    }

    fn advance(&self, bytes: u64) {
        self.with_bar(|slot| {
            if let Some(bar) = slot {
                bar.inc(bytes);
            }
        });
    }

    fn finish(&self) {
        self.with_bar(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
    }
}
