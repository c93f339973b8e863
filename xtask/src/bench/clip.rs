//! `cargo xtask bench clip`: CLIP through dp against what a user would otherwise run, in
//! one run, interleaved round by round:
//!
//! - preprocessing: the `image_clip` preset (`ImageClip::pixel_values`: decode, resize,
//!   crop, normalize, images in parallel) against transformers' `CLIPImageProcessorPil`
//!   (what transformers 5.17 uses for CLIP without torchvision), on the same 16 JPEG
//!   photographs of 1024×768 as bytes, decoded inside the timed call on both sides, to the
//!   224×224 pixel_values of openai/clip-vit-base-patch32's preprocessor config;
//! - the image tower on the real ViT-B/32 architecture (random weights at full size): the
//!   manager's loaded model (`LoadedModel::infer` with only `pixel_values`, a batch of 8
//!   already preprocessed images) with the candle provider against `CLIPModel.
//!   get_image_features` on PyTorch CPU (`torch.inference_mode()`), and with the ONNX
//!   provider against Python onnxruntime on the same `vision_model.onnx`.
//!
//! Every side runs with 2 threads (rayon's pool for dp's preprocessing, the providers'
//! thread settings, `torch.set_num_threads`, `intra_op_num_threads`) and is fed the same
//! bytes: the photographs, and one pixel_values batch written by the transformers runner.
//! The runners (`clip_candle`, `clip_onnx` in tests/benches, the two Python scripts beside
//! this file) time themselves after a warm-up call and print their samples; xtask takes
//! the median per round, and each row's ratio is the median of the per-round ratios.
//!
//! Set-up, on first use (not in `cargo xtask setup`: CI never pays for it), under
//! `target/bench/clip/`: `clip-vit-b32-random` (the shapes of openai/clip-vit-base-patch32,
//! 605 MB) by `xtask/scripts/build_tiny_clip.py --model`, its ONNX graphs by
//! `xtask/scripts/build_clip_onnx.py`, their specs, the photographs (from the scikit-image
//! photos of `cargo xtask setup`) and the pixel batch; a stamp rebuilds them when a script
//! or a pinned venv changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use super::Executables;
use super::embed::ensure_venv;
use super::pairs::{CommandLine, Figures, figure_rounds, median_series};
use super::report::{Row, Side, Target, Unit};
use crate::fsutil::{sha256_file, sha256_hex, write_atomic};
use crate::process;

/// Where the set-up writes, relative to the workspace root.
const WORK_DIR: &str = "target/bench/clip";

/// The full-size model and its ONNX graphs (folder names under the models root).
const MODEL: &str = "clip-vit-b32-random";
const ONNX_MODEL: &str = "clip-vit-b32-random-onnx";

/// The scripts and venvs the set-up and the anchors use, relative to the workspace root.
const TINY_CLIP_SCRIPT: &str = "xtask/scripts/build_tiny_clip.py";
const ONNX_SCRIPT: &str = "xtask/scripts/build_clip_onnx.py";
const TRANSFORMERS_RUNNER: &str = "xtask/src/bench/clip_transformers.py";
const ORT_RUNNER: &str = "xtask/src/bench/clip_onnxruntime.py";
const ONNX_VENV: &str = ".dp-assets/venv-onnx";
const ONNX_REQUIREMENTS: &str = "xtask/requirements/python-onnx.txt";
const BENCH_REQUIREMENTS: &str = "xtask/requirements/bench-embed.txt";
/// The tokenizer files of `tiny-clip` (`cargo xtask setup`) are the same in every model.
const TINY_CLIP_DIR: &str = ".dp-assets/models/tiny-clip";
/// The scikit-image photographs of `cargo xtask setup` (`clip-photos`).
const PHOTOS_DIR: &str = ".dp-assets/images/skimage";
/// The ONNX Runtime library of `cargo xtask setup` (`onnxruntime`).
const ORT_LIBRARY: &str = ".dp-assets/onnxruntime/libonnxruntime.so";

/// Photographs preprocessed per call, and images per image-tower call.
const PHOTOS: usize = 16;
const BATCH: usize = 8;

/// CPU threads every side uses (the issues' setting: 2 cores).
const THREADS: usize = 2;

/// Seconds (and calls, at least) each workload runs for, per runner and round.
const MIN_SECONDS: &str = "2";
const MIN_CALLS: &str = "3";

/// The targets.
const PREPROCESS_TARGET: f64 = 3.0;
const CANDLE_VS_TORCH: f64 = 1.0;
const ONNX_VS_ORT: f64 = 0.97;

/// The files copied beside the ONNX graphs (as setup does for tiny-clip-onnx).
const ONNX_COPIED: [&str; 4] = [
    "config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
];

/// The spec of a bench model: `{name}`, `{engine}`, `{artifacts}` (YAML list items) and
/// `{digest}` (of the first artifact) are filled in.
const SPEC_TEMPLATE: &str = "model_name: {name}
model_version: \"1.0.0\"
display_name: \"CLIP ViT-B/32 shapes, random weights ({name}, cargo xtask bench clip)\"
role: image_embedding
roles:
  - image_embedding
capabilities:
  vision: true
  text: true
  embedding: true
runtime: inprocess
engine: {engine}
precision: fp32
device_policy: cpu
local_artifacts:
{artifacts}weights_digest: sha256:{digest}
preprocess_preset: image_clip
input_schema:
  - name: pixel_values
    dtype: fp32
    shape: [-1, 3, 224, 224]
  - name: input_ids
    dtype: int64
    shape: [-1, -1]
  - name: attention_mask
    dtype: int64
    shape: [-1, -1]
output_schema:
  - name: image_embeds
    dtype: fp32
    shape: [-1, 512]
  - name: text_embeds
    dtype: fp32
    shape: [-1, 512]
  - name: logit_scale
    dtype: fp32
    shape: [1]
resource_requirements:
  ram_bytes: 1500000000
  max_batch_size: 8
tier: 2
deprecated: false
license: MIT
source: \"cargo xtask bench clip (random weights; not a real model)\"
";

/// What the set-up made.
struct Assets {
    models: PathBuf,
    candle_spec: PathBuf,
    onnx_spec: PathBuf,
    photos: PathBuf,
    pixels: PathBuf,
}

fn path_arg(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

/// The spec of `name` listing `artifacts` (folder-relative), pinned to the first.
fn spec_text(models: &Path, name: &str, engine: &str, artifacts: &[&str]) -> Result<String> {
    let digest = sha256_file(&models.join(name).join(artifacts[0]))?;
    let list: String = artifacts
        .iter()
        .map(|a| format!("  - {name}/{a}\n"))
        .collect();
    Ok(SPEC_TEMPLATE
        .replace("{name}", name)
        .replace("{engine}", engine)
        .replace("{artifacts}", &list)
        .replace("{digest}", &digest))
}

/// Makes (or finds current) the model folders, specs, photographs and pixel batch.
fn ensure_assets(root: &Path, bench_python: &Path) -> Result<Assets> {
    let work = root.join(WORK_DIR);
    let assets = Assets {
        models: work.join("models"),
        candle_spec: work.join("specs").join(format!("{MODEL}.yaml")),
        onnx_spec: work.join("specs").join(format!("{ONNX_MODEL}.yaml")),
        photos: work.join("photos"),
        pixels: work.join(format!("pixel-values-b{BATCH}.f32")),
    };
    // Whatever decides the bytes: the scripts, the venvs' pins, the specs' template.
    let mut inputs = String::new();
    for file in [
        TINY_CLIP_SCRIPT,
        ONNX_SCRIPT,
        TRANSFORMERS_RUNNER,
        ONNX_REQUIREMENTS,
        BENCH_REQUIREMENTS,
    ] {
        inputs.push_str(&sha256_file(&root.join(file))?);
        inputs.push('\n');
    }
    inputs.push_str(&format!("{SPEC_TEMPLATE}\n{PHOTOS} {BATCH}\n"));
    let digest = sha256_hex(inputs.as_bytes());
    let stamp = work.join(".dp-stamp");
    let present = [&assets.candle_spec, &assets.onnx_spec, &assets.pixels]
        .iter()
        .all(|p| p.is_file());
    if present && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == digest) {
        return Ok(assets);
    }
    println!("clip: making {MODEL} (ViT-B/32 shapes, random weights) and its inputs");
    let _ = std::fs::remove_file(&stamp);
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    std::fs::create_dir_all(&assets.models)
        .with_context(|| format!("cannot create {}", assets.models.display()))?;
    let onnx_python = root.join(ONNX_VENV).join("bin/python");
    let hint = "the python-onnx asset of `cargo xtask setup` makes its venv";
    process::run(
        Command::new(&onnx_python)
            .arg(root.join(TINY_CLIP_SCRIPT))
            .args(["--model", MODEL, "--tokenizer-from"])
            .arg(root.join(TINY_CLIP_DIR))
            .arg(&assets.models),
        hint,
    )?;
    let onnx_dir = assets.models.join(ONNX_MODEL);
    process::run(
        Command::new(&onnx_python)
            .arg(root.join(ONNX_SCRIPT))
            .arg(assets.models.join(MODEL))
            .arg(&onnx_dir),
        hint,
    )?;
    for file in ONNX_COPIED {
        std::fs::copy(assets.models.join(MODEL).join(file), onnx_dir.join(file))
            .with_context(|| format!("cannot copy {file} beside the ONNX graphs"))?;
    }
    let candle = spec_text(
        &assets.models,
        MODEL,
        "candle",
        &[
            "model.safetensors",
            "config.json",
            "preprocessor_config.json",
            "tokenizer.json",
        ],
    )?;
    let onnx = spec_text(
        &assets.models,
        ONNX_MODEL,
        "onnx",
        &[
            "vision_model.onnx",
            "text_model.onnx",
            "config.json",
            "preprocessor_config.json",
            "tokenizer.json",
        ],
    )?;
    std::fs::create_dir_all(work.join("specs"))?;
    write_atomic(&assets.candle_spec, candle.as_bytes())?;
    write_atomic(&assets.onnx_spec, onnx.as_bytes())?;
    let runner = root.join(TRANSFORMERS_RUNNER);
    process::run(
        Command::new(bench_python)
            .arg(&runner)
            .arg("--make-images")
            .arg(root.join(PHOTOS_DIR))
            .arg(&assets.photos)
            .args(["--count", &PHOTOS.to_string()]),
        "the clip-photos asset of `cargo xtask setup` provides the photographs",
    )?;
    process::run(
        Command::new(bench_python)
            .arg(&runner)
            .arg("--write-pixels")
            .arg(&assets.pixels)
            .arg("--model-dir")
            .arg(assets.models.join(MODEL))
            .arg("--images")
            .arg(&assets.photos)
            .args(["--batch", &BATCH.to_string()]),
        "the transformers runner could not preprocess the photographs (see above)",
    )?;
    write_atomic(&stamp, format!("{digest}\n").as_bytes())?;
    Ok(assets)
}

/// Fails unless both runners' first-image embeddings agree (same weights, same maths):
/// their norm within 0.1 %, and their dot product with a fixed vector (sin i) within 0.1 %
/// of the largest it could be.
fn check_same_embedding(a: &Figures, b: &Figures) -> Result<()> {
    let (norm_a, norm_b) = (a.get("probe_norm")?, b.get("probe_norm")?);
    let (mix_a, mix_b) = (a.get("probe_mix")?, b.get("probe_mix")?);
    let dim = a.get("probe_dim")?;
    ensure!(
        norm_a > 0.0
            && (norm_a - norm_b).abs() <= 1e-3 * norm_a
            && (mix_a - mix_b).abs() <= 1e-3 * norm_a * (dim / 2.0).sqrt(),
        "the image embeddings differ (norm {norm_a} vs {norm_b}, probe {mix_a} vs {mix_b}): \
         the runners do not compute the same thing"
    );
    Ok(())
}

/// Runs every CLIP row.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let bench_python = ensure_venv(root)?;
    let assets = ensure_assets(root, &bench_python)?;
    let models = path_arg(&assets.models)?;
    let pixels = path_arg(&assets.pixels)?;
    let photos = path_arg(&assets.photos)?;
    let threads = THREADS.to_string();
    let batch = BATCH.to_string();
    let timing = [
        "--threads",
        threads.as_str(),
        "--min-seconds",
        MIN_SECONDS,
        "--min-calls",
        MIN_CALLS,
    ];
    let rust_runner = |label: &str, exe: &Path, spec: &Path, images: bool| -> Result<CommandLine> {
        let exe = path_arg(exe)?;
        let spec = path_arg(spec)?;
        let mut argv = vec![
            exe.as_str(),
            "--models-root",
            &models,
            "--spec",
            &spec,
            "--pixels",
            &pixels,
            "--batch",
            &batch,
        ];
        if images {
            argv.extend(["--images", photos.as_str()]);
        }
        argv.extend(timing);
        Ok(CommandLine::new(label, &argv))
    };
    let candle = rust_runner("dp candle", &exes.clip_candle, &assets.candle_spec, true)?
        .env("RAYON_NUM_THREADS", &threads);
    let onnx = rust_runner("dp onnx", &exes.clip_onnx, &assets.onnx_spec, false)?
        .env("ORT_DYLIB_PATH", &path_arg(&root.join(ORT_LIBRARY))?);
    let transformers_runner = path_arg(&root.join(TRANSFORMERS_RUNNER))?;
    let model_dir = path_arg(&assets.models.join(MODEL))?;
    let mut argv = vec![
        path_arg(&bench_python)?,
        transformers_runner,
        "--model-dir".to_owned(),
        model_dir,
        "--images".to_owned(),
        photos.clone(),
        "--pixels".to_owned(),
        pixels.clone(),
    ];
    argv.extend(timing.iter().map(|s| (*s).to_owned()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // As in the embed group, in the anchor's favour: passive OpenMP waiting (a spinning
    // thread of PyTorch's pool starves its partner on a shared 2-core machine).
    let torch = CommandLine::new("transformers (PyTorch)", &argv).env("OMP_WAIT_POLICY", "PASSIVE");
    let onnx_dir = path_arg(&assets.models.join(ONNX_MODEL))?;
    let ort_runner = path_arg(&root.join(ORT_RUNNER))?;
    let ort_python = path_arg(&root.join(ONNX_VENV).join("bin/python"))?;
    let mut argv = vec![
        ort_python.as_str(),
        ort_runner.as_str(),
        "--model-dir",
        &onnx_dir,
        "--pixels",
        &pixels,
    ];
    argv.extend(timing);
    let ort = CommandLine::new("Python onnxruntime", &argv);

    println!(
        "clip: {THREADS} threads, {pairs} rounds of candle (+ preprocessing), onnx, \
         transformers, Python onnxruntime"
    );
    let rounds = figure_rounds(&[&candle, &onnx, &torch, &ort], pairs)?;
    let [candle_r, onnx_r, torch_r, ort_r] = rounds.as_slice() else {
        bail!("expected the figures of four runners");
    };
    check_same_embedding(&candle_r[0], &torch_r[0]).context("candle vs PyTorch")?;
    check_same_embedding(&onnx_r[0], &ort_r[0]).context("ONNX provider vs Python onnxruntime")?;
    let text = |f: &Figures, key: &str| f.text(key).unwrap_or_default();
    let preprocess_note = format!(
        "{PHOTOS} JPEG photos of 1024×768 (quality 90) as bytes → [16, 3, 224, 224]; \
         {} (Pillow {}, transformers {}, no torchvision); dp on {THREADS} rayon threads",
        text(&torch_r[0], "processor"),
        text(&torch_r[0], "pillow"),
        text(&torch_r[0], "transformers"),
    );
    let tower_note = format!(
        "ViT-B/32 shapes, random weights; {BATCH} preprocessed 224² images per call; torch {} \
         (inference_mode, OMP_WAIT_POLICY=PASSIVE), onnxruntime {}; {THREADS} threads",
        text(&torch_r[0], "torch"),
        text(&ort_r[0], "onnxruntime"),
    );
    let side = |label: &str, runs: &[Figures], key: &str| -> Result<Side> {
        Ok(Side::new(label, median_series(runs, key)?))
    };
    let mut rows = Vec::new();
    let mut push = |row: Row| {
        println!("{}", row.summary());
        rows.push(row);
    };
    push(
        Row::new(
            "clip.preprocess.jpeg16_vs_transformers",
            "image_clip preprocessing of 16 JPEG photos (1024×768 → 224²), dp vs transformers",
            Unit::Seconds,
            side("dp image_clip", candle_r, "preprocess_s")?,
            side("CLIPImageProcessorPil", torch_r, "preprocess_s")?,
            vec![Target::RatioAtLeast {
                value: PREPROCESS_TARGET,
            }],
        )?
        .with_note(&preprocess_note),
    );
    push(
        Row::new(
            "clip.image_tower.b8.candle_vs_torch",
            "CLIP ViT-B/32 image tower, batch of 8: candle vs transformers on PyTorch",
            Unit::Seconds,
            side("dp candle", candle_r, "image_s")?,
            side("transformers get_image_features", torch_r, "image_s")?,
            vec![Target::RatioAtLeast {
                value: CANDLE_VS_TORCH,
            }],
        )?
        .with_note(&tower_note),
    );
    push(Row::new(
        "clip.image_tower.b8.onnx_vs_ort",
        "CLIP ViT-B/32 image tower (vision_model.onnx), batch of 8: onnx vs Python onnxruntime",
        Unit::Seconds,
        side("dp onnx", onnx_r, "image_s")?,
        side("Python onnxruntime", ort_r, "image_s")?,
        vec![Target::RatioAtLeast { value: ONNX_VS_ORT }],
    )?);
    push(Row::new(
        "clip.image_tower.b8.onnx_vs_torch",
        "CLIP ViT-B/32 image tower, batch of 8: onnx vs transformers on PyTorch",
        Unit::Seconds,
        side("dp onnx", onnx_r, "image_s")?,
        side("transformers get_image_features", torch_r, "image_s")?,
        vec![],
    )?);
    Ok(rows)
}
