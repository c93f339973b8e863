//! `cargo xtask bench digest`: `dp digest` against coreutils, OpenSSL and `b3sum` on the
//! same bytes, from the page cache, interleaved in one run (whole commands, timed from
//! outside: what a user would type).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use super::Executables;
use super::pairs::{CommandLine, time_pairs};
use super::report::{Row, Side, Target, Unit};
use crate::fsutil::sha256_file;
use crate::process::{self, cargo_command};

/// Bytes of the single-file rows (1 GiB, as the issue states the targets for).
const FILE_BYTES: u64 = 1 << 30;
/// Files of the manifest rows, totalling [`FILE_BYTES`].
const TREE_FILES: u64 = 2_000;

/// The `b3sum` release the blake3 rows compare with, installed with `cargo install
/// --locked` (its own lock file pins every dependency by checksum)…
const B3SUM_VERSION: &str = "1.8.7";
/// …and the sha256 of its `.crate` from crates.io, checked after the install.
const B3SUM_CRATE_SHA256: &str = "d12cbf49ea673482c08f7a2cbede6388e698bdae001e9e1536c314cf2741ea5d";

/// Runs the digest rows.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let scale: f64 = std::env::var("DP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a scale factor on a byte count"
    )]
    let file_bytes = ((FILE_BYTES as f64) * scale) as u64;
    let dp = &exes.dp;
    let b3sum = ensure_b3sum(root)?;
    let data = root.join("target").join("bench").join("data");
    let file = data.join("weights-1g.bin");
    let tree = data.join("tree-2000");
    write_random_file(&file, file_bytes, 0x5eed)?;
    write_tree(&tree, TREE_FILES, file_bytes / TREE_FILES)?;
    let cache = data.join("verify-cache.json");
    let _ = std::fs::remove_file(&cache);

    let file_s = file.to_str().context("non-UTF-8 bench path")?;
    let tree_s = tree.to_str().context("non-UTF-8 bench path")?;
    let cache_s = cache.to_str().context("non-UTF-8 bench path")?;
    let dp_s = dp.to_str().context("non-UTF-8 bench path")?;
    let b3_s = b3sum.to_str().context("non-UTF-8 bench path")?;

    let ours_sha = CommandLine::new("dp digest", &[dp_s, "digest", file_s]);
    let ours_b3 = CommandLine::new(
        "dp digest --algo blake3",
        &[dp_s, "digest", "--algo", "blake3", file_s],
    );
    let sha256sum = CommandLine::new("sha256sum", &["sha256sum", file_s]);
    let openssl = CommandLine::new(
        "openssl dgst -sha256",
        &["openssl", "dgst", "-sha256", file_s],
    );
    let b3 = CommandLine::new("b3sum", &[b3_s, file_s]);
    let pipeline = CommandLine::shell(
        "find|sort|xargs sha256sum|sha256sum",
        &format!(
            "cd '{tree_s}' && find -L . -type f -print0 | sed -z 's|^\\./||' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum"
        ),
    );
    let b3_pipeline = CommandLine::shell(
        "find|sort|xargs b3sum|b3sum",
        &format!(
            "cd '{tree_s}' && find -L . -type f -print0 | sed -z 's|^\\./||' | LC_ALL=C sort -z | xargs -0 '{b3_s}' | '{b3_s}'"
        ),
    );
    // What any re-verify must at least do: list the tree and stat every file.
    let stat_walk = CommandLine::new(
        "find -L DIR -type f -printf (stat only)",
        &[
            "find",
            "-L",
            tree_s,
            "-type",
            "f",
            "-printf",
            "%s %T@ %C@ %i %p\\n",
        ],
    );
    let ours_tree = CommandLine::new("dp digest DIR", &[dp_s, "digest", tree_s]);
    let ours_tree_b3 = CommandLine::new(
        "dp digest --algo blake3 DIR",
        &[dp_s, "digest", "--algo", "blake3", tree_s],
    );
    let ours_cached = CommandLine::new(
        "dp digest --cache DIR",
        &[dp_s, "digest", "--cache", cache_s, tree_s],
    );

    // Same answers first: a ratio between different results would mean nothing.
    let first_hex = |s: String| s.split_whitespace().next().unwrap_or_default().to_owned();
    let strip = |s: String| {
        first_hex(s)
            .trim_start_matches("sha256:")
            .trim_start_matches("blake3:")
            .to_owned()
    };
    ensure!(
        strip(ours_sha.output()?) == first_hex(sha256sum.output()?),
        "dp digest and sha256sum disagree"
    );
    ensure!(
        strip(ours_b3.output()?) == first_hex(b3.output()?),
        "dp digest --algo blake3 and b3sum disagree"
    );
    ensure!(
        strip(ours_tree.output()?) == first_hex(pipeline.output()?),
        "directory aggregate and coreutils disagree"
    );
    ensure!(
        strip(ours_tree_b3.output()?) == first_hex(b3_pipeline.output()?),
        "blake3 aggregate and b3sum pipeline disagree"
    );
    // The first cached run fills the cache; later ones take every digest from it.
    ensure!(
        strip(ours_cached.output()?) == strip(ours_tree.output()?),
        "cached and full aggregates disagree"
    );

    let gib = file_bytes as f64 / f64::from(1_u32 << 30);
    let mut rows = Vec::new();
    let mut pair = |id: &str,
                    name: String,
                    ours: &CommandLine,
                    anchor: &CommandLine,
                    target: Option<f64>|
     -> Result<()> {
        let (a, b) = time_pairs(ours, anchor, pairs)?;
        let row = Row::new(
            id,
            &name,
            Unit::Seconds,
            Side::new(&ours.label, a),
            Side::new(&anchor.label, b),
            target
                .map(|value| Target::RatioAtLeast { value })
                .into_iter()
                .collect(),
        )?;
        let rate = |s: &Side| file_bytes as f64 / s.median / 1e9;
        let note = if target.is_some() {
            format!(
                "median {:.2} GB/s vs {:.2} GB/s",
                rate(&row.ours),
                rate(&row.anchor)
            )
        } else {
            "the floor of any re-verify that trusts no file unseen: one stat per file, \
             no cache file, no output"
                .to_owned()
        };
        let row = row.with_note(note);
        println!("{}", row.summary());
        rows.push(row);
        Ok(())
    };
    pair(
        "digest.sha256_file_vs_sha256sum",
        format!("sha256 of a {gib:.0} GiB file"),
        &ours_sha,
        &sha256sum,
        Some(4.0),
    )?;
    if process::succeeds(std::process::Command::new("openssl").arg("version")) {
        pair(
            "digest.sha256_file_vs_openssl",
            format!("sha256 of a {gib:.0} GiB file"),
            &ours_sha,
            &openssl,
            Some(1.0),
        )?;
    } else {
        println!("openssl not installed: its row is left out (apt-get install openssl)");
    }
    pair(
        "digest.blake3_file_vs_b3sum",
        format!("blake3 of a {gib:.0} GiB file"),
        &ours_b3,
        &b3,
        Some(0.95),
    )?;
    pair(
        "digest.sha256_manifest_vs_coreutils",
        format!("sha256 manifest of {TREE_FILES} files ({gib:.0} GiB)"),
        &ours_tree,
        &pipeline,
        Some(7.0),
    )?;
    pair(
        "digest.blake3_manifest_vs_coreutils",
        format!("blake3 manifest of {TREE_FILES} files ({gib:.0} GiB)"),
        &ours_tree_b3,
        &pipeline,
        Some(15.0),
    )?;
    pair(
        "digest.cached_reverify_vs_full",
        format!("cached re-verify of {TREE_FILES} files vs full sha256 manifest"),
        &ours_cached,
        &ours_tree,
        Some(50.0),
    )?;
    pair(
        "digest.cached_reverify_vs_stat_walk",
        format!("cached re-verify of {TREE_FILES} files vs a walk that only stats them"),
        &ours_cached,
        &stat_walk,
        None,
    )?;
    Ok(rows)
}

/// `b3sum` [`B3SUM_VERSION`], installed from crates.io into `target/bench/tools` when
/// missing; the downloaded `.crate` must match [`B3SUM_CRATE_SHA256`].
fn ensure_b3sum(root: &Path) -> Result<PathBuf> {
    let tools = root.join("target").join("bench").join("tools");
    let bin = tools.join("bin").join("b3sum");
    let wanted = format!("b3sum {B3SUM_VERSION}");
    let installed = std::process::Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == wanted);
    if installed {
        return Ok(bin);
    }
    let tools_s = tools.to_str().context("non-UTF-8 path")?;
    process::run(
        &mut cargo_command(
            root,
            &[
                "install",
                "--locked",
                "--quiet",
                "--force",
                "--version",
                &format!("={B3SUM_VERSION}"),
                "--root",
                tools_s,
                "b3sum",
            ],
        ),
        "b3sum is the anchor of the blake3 rows; check the access to crates.io",
    )?;
    let crate_file = downloaded_crate(&format!("b3sum-{B3SUM_VERSION}.crate"))?;
    let digest = sha256_file(&crate_file)?;
    if digest != B3SUM_CRATE_SHA256 {
        let _ = std::fs::remove_file(&bin);
        anyhow::bail!(
            "{} has sha256 {digest}, not the pinned {B3SUM_CRATE_SHA256}: the b3sum anchor was \
             removed; delete that file and run the bench again",
            crate_file.display()
        );
    }
    Ok(bin)
}

/// Where cargo keeps a downloaded `.crate` of crates.io.
fn downloaded_crate(name: &str) -> Result<PathBuf> {
    let home = std::env::var_os("CARGO_HOME").map_or_else(
        || {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cargo"))
                .unwrap_or_default()
        },
        PathBuf::from,
    );
    let cache = home.join("registry").join("cache");
    std::fs::read_dir(&cache)
        .with_context(|| format!("cannot read {}", cache.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path().join(name)))
        .find(|path| path.is_file())
        .with_context(|| format!("cargo install left no {name} under {}", cache.display()))
}

/// Deterministic pseudo-random bytes (xorshift64*), so hashing cannot shortcut anything.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let v = state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// Writes `bytes` pseudo-random bytes to `path` unless a file of that size is there.
fn write_random_file(path: &Path, bytes: u64, seed: u64) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() == bytes) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut state = seed | 1;
    let mut buf = vec![0_u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        fill(&mut buf[..n], &mut state);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(())
}

/// A tree of `files` files of `each` bytes in nested folders (kept between runs; the
/// stamp beside it records the shape it was made for).
fn write_tree(dir: &Path, files: u64, each: u64) -> Result<()> {
    let stamp = dir.with_extension("complete");
    let shape = format!("{files} files of {each} bytes\n");
    if dir.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == shape) {
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    for i in 0..files {
        let sub = dir.join(format!("shard-{:02}/part-{}", i % 20, i % 3));
        std::fs::create_dir_all(&sub)?;
        write_random_file(&sub.join(format!("file-{i:05}.bin")), each, i + 1)?;
    }
    std::fs::write(&stamp, shape)?;
    Ok(())
}
