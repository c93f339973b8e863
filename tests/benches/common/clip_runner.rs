//! What the `clip_candle` and `clip_onnx` runners share: the timed workloads of
//! `cargo xtask bench clip`, printed as one JSON object on stdout.
//!
//! - `image_s` (seconds per call): the image tower of a CLIP model loaded through the
//!   manager (`ModelManager::get`, then `LoadedModel::infer` with only `pixel_values`) on
//!   the already-preprocessed batch of `--pixels` (raw little-endian f32 `[B, 3, H, W]`,
//!   written by `xtask/src/bench/clip_transformers.py --write-pixels`, the same bytes every
//!   runner is fed; `--batch` images); `probe_norm`, `probe_mix`, `probe_dim` describe
//!   the first image's (not normalized) embedding: its norm and its dot product with the
//!   vector `(sin i)`, which xtask compares across runners.
//! - `preprocess_s` (seconds per call, only with `--images DIR`): the `image_clip` preset's
//!   `ImageClip::pixel_values` on every `*.jpg` of `DIR` as encoded bytes (decode, resize,
//!   crop, normalize, images in parallel on rayon's global pool, whose size xtask sets
//!   with `RAYON_NUM_THREADS`), the preset built from the spec's verified files.
//!
//! Each workload runs one untimed warm-up call, then at least `--min-calls` calls and at
//! least `--min-seconds`; the samples are printed, xtask takes their median.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dp_digest::{ArtifactPins, VerifyOptions};
use dp_manager::preset::{ImageClip, ImageInput};
use dp_manager::{EmbeddingCacheConfig, ModelManager};
use dp_spec::{Catalog, ModelProvider, NamedTensors, Tensor, TensorData};

/// The command line of a runner.
pub(crate) struct Options {
    pub(crate) models_root: PathBuf,
    pub(crate) spec: PathBuf,
    pub(crate) pixels: PathBuf,
    pub(crate) images: Option<PathBuf>,
    pub(crate) batch: usize,
    pub(crate) threads: usize,
    pub(crate) min_seconds: f64,
    pub(crate) min_calls: usize,
}

impl Options {
    /// `--models-root DIR --spec FILE --pixels FILE [--batch N] [--images DIR]
    /// [--threads N] [--min-seconds S] [--min-calls N]`.
    pub(crate) fn from_args() -> Self {
        let all: Vec<String> = std::env::args().collect();
        let get = |name: &str| -> Option<String> {
            all.iter()
                .position(|a| a == name)
                .and_then(|i| all.get(i + 1).cloned())
        };
        Self {
            models_root: get("--models-root").expect("--models-root").into(),
            spec: get("--spec").expect("--spec").into(),
            pixels: get("--pixels").expect("--pixels").into(),
            images: get("--images").map(PathBuf::from),
            batch: get("--batch").map_or(8, |v| v.parse().unwrap()),
            threads: get("--threads").map_or(2, |v| v.parse().unwrap()),
            min_seconds: get("--min-seconds").map_or(1.0, |v| v.parse().unwrap()),
            min_calls: get("--min-calls").map_or(3, |v| v.parse().unwrap()),
        }
    }
}

/// How a runner makes its catalog and provider.
pub(crate) struct Engine {
    /// The catalog of the folder, with the runner's thread count applied if the spec
    /// carries one.
    pub(crate) catalog: fn(&Path, usize) -> Catalog,
    /// The provider, with the runner's thread count.
    pub(crate) provider: fn(usize) -> Arc<dyn ModelProvider>,
}

/// A catalog folder holding only the spec (as a deployment's catalog would).
fn catalog_dir(spec: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let role = dir.path().join("image_embedding");
    std::fs::create_dir_all(&role).unwrap();
    std::fs::copy(spec, role.join(spec.file_name().unwrap())).unwrap();
    dir
}

/// Seconds per call of `call`: one warm-up call, then at least `min_calls` calls and
/// `min_seconds`.
fn timed(o: &Options, mut call: impl FnMut()) -> Vec<f64> {
    call();
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < o.min_calls || start.elapsed().as_secs_f64() < o.min_seconds {
        let t = Instant::now();
        call();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples
}

/// `preprocess_s` of `--images`: the preset built from the spec's verified files (the
/// JSON ones: the weights play no part in preprocessing).
fn preprocess(o: &Options, catalog: &Catalog, dir: &Path) -> (Vec<f64>, usize) {
    let spec = &catalog.entries()[0].spec;
    let files: Vec<String> = spec
        .local_artifacts
        .iter()
        .filter(|a| Path::new(a).extension().is_some_and(|e| e == "json"))
        .cloned()
        .collect();
    let artifacts = dp_digest::open_verified(
        &o.models_root,
        &files,
        &ArtifactPins::default(),
        &VerifyOptions::default(),
    )
    .unwrap()
    .artifacts
    .unwrap();
    let clip = ImageClip::from_spec(spec, &artifacts).unwrap();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no *.jpg in {}", dir.display());
    let images: Vec<ImageInput> = paths
        .iter()
        .map(|p| ImageInput::Encoded(std::fs::read(p).unwrap()))
        .collect();
    let out = clip.pixel_values(&images).unwrap();
    assert_eq!(out.shape()[0], images.len());
    let samples = timed(o, || {
        std::hint::black_box(clip.pixel_values(&images).unwrap());
    });
    (samples, images.len())
}

/// The batch of `--pixels`: `batch` square 3-channel images, `[batch, 3, side, side]`.
fn pixels(path: &Path, batch: usize) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let per_image = values.len() / batch / 3;
    let side = (1..=per_image)
        .find(|s| s * s >= per_image)
        .filter(|s| s * s * 3 * batch == values.len())
        .expect("--pixels is not a batch of --batch square 3-channel images");
    Tensor::new(vec![batch, 3, side, side], TensorData::Fp32(values)).unwrap()
}

/// Runs every measurement and prints the figures.
pub(crate) fn run(engine: &Engine) {
    let o = Options::from_args();
    let dir = catalog_dir(&o.spec);
    let catalog = (engine.catalog)(dir.path(), o.threads);
    let name = catalog.entries()[0].spec.model_name.clone();
    let mut figures = serde_json::Map::new();
    if let Some(images) = &o.images {
        let (samples, count) = preprocess(&o, &catalog, images);
        figures.insert("preprocess_s".into(), samples.into());
        figures.insert("preprocess_images".into(), count.into());
    }
    // The weights are verified (hashed) at load, outside the timing.
    let scratch = tempfile::tempdir().unwrap();
    let manager = ModelManager::builder(catalog, &o.models_root)
        .provider((engine.provider)(o.threads))
        .embedding_cache(EmbeddingCacheConfig::disabled())
        .verification_cache(scratch.path().join("verify-cache.json"))
        .reaper(false)
        .build()
        .unwrap();
    let handle = manager.get(&name).unwrap();
    let pixels = pixels(&o.pixels, o.batch);
    let batch = o.batch;
    let inputs: NamedTensors = [("pixel_values".to_owned(), pixels)].into_iter().collect();
    let out = handle.model().infer(&inputs).unwrap();
    let embeds = &out["image_embeds"];
    assert_eq!(embeds.shape()[0], batch);
    let TensorData::Fp32(values) = embeds.data() else {
        panic!("image_embeds is not fp32");
    };
    let first = &values[..embeds.shape()[1]];
    // What xtask compares across runners: the first embedding's norm, and its dot product
    // with the vector (sin i).
    let norm = first
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    #[allow(clippy::cast_precision_loss, reason = "small indices")]
    let mix: f64 = first
        .iter()
        .enumerate()
        .map(|(i, v)| f64::from(*v) * (i as f64).sin())
        .sum();
    let dim = first.len();
    let samples = timed(&o, || {
        std::hint::black_box(handle.model().infer(&inputs).unwrap());
    });
    figures.insert("image_s".into(), samples.into());
    figures.insert("batch".into(), batch.into());
    figures.insert("probe_norm".into(), norm.into());
    figures.insert("probe_mix".into(), mix.into());
    figures.insert("probe_dim".into(), dim.into());
    figures.insert("threads".into(), o.threads.into());
    println!("{}", serde_json::Value::Object(figures));
}
