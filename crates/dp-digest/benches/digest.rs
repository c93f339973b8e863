//! Digest throughput: SHA-256 and BLAKE3 of one large file, the manifest of a tree of
//! 2,000 files, and the cached re-verification of that tree against a full hash.
//!
//! Data is generated once into a temp dir and read from the page cache. `DP_BENCH_SCALE`
//! multiplies the sizes: 1 (default) → a 256 MiB file and a 256 MiB tree; 4 → 1 GiB each;
//! 0.125 → 32 MiB for a quick check. The file count stays 2,000.

use std::fs;
use std::hint::black_box;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dp_digest::{
    DigestAlgorithm, ManifestOptions, NoProgress, VerificationCache, digest_file, manifest_of_dir,
};

const MIB: u64 = 1024 * 1024;
const FILE_BYTES: u64 = 256 * MIB;
const TREE_BYTES: u64 = 256 * MIB;
const TREE_FILES: u64 = 2_000;
const TREE_DIRS: u64 = 20;

/// `DP_BENCH_SCALE`, or 1 when unset or not a positive number.
fn scale() -> f64 {
    std::env::var("DP_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(1.0)
}

/// `bytes` scaled, rounded to whole KiB (at least 1 KiB).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn scaled(bytes: u64) -> u64 {
    (((bytes as f64) * scale() / 1024.0).round() as u64).max(1) * 1024
}

/// Writes `len` pseudo-random bytes (incompressible, so no file system shortcut applies).
fn write_random(path: &Path, len: u64, seed: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut file = std::io::BufWriter::new(fs::File::create(path).expect("create"));
    let mut remaining = len;
    let mut block = vec![0_u8; 64 * 1024];
    while remaining > 0 {
        for chunk in block.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        let n = remaining.min(block.len() as u64);
        #[allow(clippy::cast_possible_truncation)]
        file.write_all(&block[..n as usize]).expect("write");
        remaining -= n;
    }
    file.flush().expect("flush");
}

fn file_digests(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weights.bin");
    let len = scaled(FILE_BYTES);
    write_random(&path, len, 1);
    eprintln!(
        "file: {} MiB; sha256 implementation: {}",
        len / MIB,
        dp_digest::sha256_implementation()
    );
    let mut group = c.benchmark_group("file");
    group.throughput(Throughput::Bytes(len));
    for algorithm in [DigestAlgorithm::Sha256, DigestAlgorithm::Blake3] {
        group.bench_function(algorithm.as_str(), |b| {
            b.iter(|| digest_file(black_box(&path), algorithm, &NoProgress).expect("digest"));
        });
    }
    group.finish();
}

fn manifests(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let per_file = scaled(TREE_BYTES) / TREE_FILES;
    for i in 0..TREE_FILES {
        let sub = dir.path().join(format!("shard-{:02}", i % TREE_DIRS));
        fs::create_dir_all(&sub).expect("mkdir");
        write_random(&sub.join(format!("tensor-{i:04}.bin")), per_file, i + 2);
    }
    let total = per_file * TREE_FILES;
    eprintln!("tree: {TREE_FILES} files, {} MiB", total / MIB);
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = VerificationCache::load(cache_dir.path().join("cache.json"));

    let mut group = c.benchmark_group("manifest");
    group.throughput(Throughput::Bytes(total));
    for algorithm in [DigestAlgorithm::Sha256, DigestAlgorithm::Blake3] {
        // Strict with a cache: every file is read, as `dp verify --strict` does.
        let options = ManifestOptions {
            algorithm,
            strict: true,
            cache: Some(&cache),
            ..ManifestOptions::default()
        };
        group.bench_function(format!("{algorithm}_full"), |b| {
            b.iter(|| manifest_of_dir(black_box(dir.path()), &options).expect("manifest"));
        });
    }
    // The strict runs above filled the cache: now one stat per file, no read.
    let options = ManifestOptions {
        cache: Some(&cache),
        ..ManifestOptions::default()
    };
    group.bench_function("sha256_cached_reverify", |b| {
        b.iter(|| manifest_of_dir(black_box(dir.path()), &options).expect("manifest"));
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = file_digests, manifests
}
criterion_main!(benches);
