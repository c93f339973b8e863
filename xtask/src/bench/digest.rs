//! `cargo xtask bench digest`: `dp digest` against coreutils, OpenSSL and `b3sum` on the
//! same bytes, from the page cache, interleaved in one run.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};

use super::pairs::{CommandLine, PairResult, compare, markdown_table, write_json};
use crate::process::{self, cargo_command};

/// Bytes of the single-file rows (1 GiB, as the issue states the targets for).
const FILE_BYTES: u64 = 1 << 30;
/// Files of the manifest rows, totalling [`FILE_BYTES`].
const TREE_FILES: u64 = 2_000;
/// Timed pairs per row, after one warm-up each.
const PAIRS: usize = 5;

/// Runs the digest rows and writes `target/bench/digest.json`.
pub(crate) fn run(root: &Path) -> Result<Vec<PairResult>> {
    let scale: f64 = std::env::var("DP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let file_bytes = ((FILE_BYTES as f64) * scale) as u64;
    let dp = build_dp(root)?;
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
    ensure!(
        strip(ours_cached.output()?) == strip(ours_tree.output()?),
        "cached and full aggregates disagree"
    );

    let mut rows = Vec::new();
    rows.push(compare(
        "sha256, 1 GiB file",
        &ours_sha,
        &sha256sum,
        Some(file_bytes),
        Some(4.0),
        PAIRS,
    )?);
    if process::succeeds(std::process::Command::new("openssl").arg("version")) {
        rows.push(compare(
            "sha256, 1 GiB file",
            &ours_sha,
            &openssl,
            Some(file_bytes),
            Some(1.0),
            PAIRS,
        )?);
    } else {
        println!("openssl not installed: row skipped (apt-get install openssl)");
    }
    rows.push(compare(
        "blake3, 1 GiB file",
        &ours_b3,
        &b3,
        Some(file_bytes),
        Some(0.95),
        PAIRS,
    )?);
    rows.push(compare(
        "sha256 manifest, 2,000 files",
        &ours_tree,
        &pipeline,
        Some(file_bytes),
        Some(7.0),
        PAIRS,
    )?);
    rows.push(compare(
        "blake3 manifest, 2,000 files",
        &ours_tree_b3,
        &pipeline,
        Some(file_bytes),
        Some(15.0),
        PAIRS,
    )?);
    rows.push(compare(
        "cached re-verify vs full sha256 manifest",
        &ours_cached,
        &ours_tree,
        Some(file_bytes),
        Some(50.0),
        PAIRS,
    )?);
    write_json(root, "digest", &rows)?;
    println!("\n{}", markdown_table(&rows));
    Ok(rows)
}

/// Builds the release `dp` and returns its path.
fn build_dp(root: &Path) -> Result<PathBuf> {
    process::run(
        &mut cargo_command(root, &["build", "--release", "--quiet", "-p", "dp-cli"]),
        "fix the build of dp-cli",
    )?;
    Ok(root.join("target").join("release").join("dp"))
}

/// `b3sum` from PATH, else installed from crates.io into `target/bench/tools`.
fn ensure_b3sum(root: &Path) -> Result<PathBuf> {
    if process::succeeds(std::process::Command::new("b3sum").arg("--version")) {
        return Ok(PathBuf::from("b3sum"));
    }
    let tools = root.join("target").join("bench").join("tools");
    let bin = tools.join("bin").join("b3sum");
    if !bin.exists() {
        let tools_s = tools.to_str().context("non-UTF-8 path")?;
        process::run(
            &mut cargo_command(
                root,
                &["install", "--locked", "--quiet", "--root", tools_s, "b3sum"],
            ),
            "b3sum is the anchor of the blake3 rows; install it with `cargo install b3sum`",
        )?;
    }
    Ok(bin)
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
