//! Load and validate a generated catalog of 1,000 specs (target: under 100 ms).
//!
//! The specs are written once into a temp dir, spread over 10 role directories, with the
//! size and shape of the sample catalog's in-process specs.
//!
//! Besides criterion (`cargo bench`), the binary is the Rust runner of `cargo xtask bench
//! catalog`: `catalog --write DIR` writes the same 1,000 files into `DIR` (for the Python
//! anchor to read too), and `catalog --figures DIR [--loads N]` loads `DIR` `N` times and
//! prints the median as one JSON object.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{Criterion, criterion_group};
use dp_spec::Catalog;

const MODELS: usize = 1_000;
const ROLES: usize = 10;

fn spec_text(i: usize, role: &str) -> String {
    let mut text = String::new();
    let _ = write!(
        text,
        "model_name: model-{i:04}\nmodel_version: \"1.{i}.0\"\ndisplay_name: \"Generated model {i}\"\n\
         role: {role}\ncapabilities:\n  text: true\n  embedding: true\nruntime: inprocess\n\
         engine: {engine}\nprecision: fp32\ndevice_policy: auto\nlocal_artifacts:\n  - model-{i:04}/model.safetensors\n\
         \x20 - model-{i:04}/tokenizer.json\nweights_digest: sha256:{digest:064x}\npreprocess_preset: sentence_embedding\n\
         preprocess_params:\n  max_length: 256\n  pooling: mean\n  normalize: true\ninput_schema:\n\
         \x20 - name: input_ids\n    dtype: int64\n    shape: [-1, -1]\n  - name: attention_mask\n    dtype: int64\n\
         \x20   shape: [-1, -1]\noutput_schema:\n  - name: last_hidden_state\n    dtype: fp32\n    shape: [-1, -1, 384]\n\
         resource_requirements:\n  ram_bytes: 120000000\n  max_batch_size: 64\ntier: 2\naliases:\n  - alias-{i:04}\n\
         license: Apache-2.0\nmetadata:\n  generated: true\n",
        engine = if i.is_multiple_of(2) {
            "candle"
        } else {
            "onnx"
        },
        digest = i,
    );
    text
}

/// Writes the 1,000 specs under `dir`, 100 per role directory.
fn write_catalog(dir: &Path) {
    for i in 0..MODELS {
        let role = format!("role_{}", i % ROLES);
        let role_dir = dir.join(&role);
        std::fs::create_dir_all(&role_dir).expect("mkdir");
        std::fs::write(
            role_dir.join(format!("model-{i:04}.yaml")),
            spec_text(i, &role),
        )
        .expect("write");
    }
}

fn catalog_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    write_catalog(dir.path());
    // Sanity: the generated catalog is valid, so the benchmark measures the success path.
    let loaded = Catalog::load(dir.path()).unwrap_or_else(|d| panic!("{d:#?}"));
    assert_eq!(loaded.len(), MODELS);
    c.bench_function("catalog_load_validate_1000_specs", |b| {
        b.iter(|| black_box(Catalog::load(black_box(dir.path())).map(|c| c.len())));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = catalog_load
}

/// The xtask runner: loads `dir` `loads` times (after one unmeasured load that warms the
/// page cache) and prints the median seconds per load.
fn figures(dir: &Path, loads: usize) {
    let once = || {
        let start = Instant::now();
        let catalog = Catalog::load(black_box(dir)).unwrap_or_else(|d| panic!("{d:#?}"));
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(catalog.len(), MODELS);
        elapsed
    };
    once();
    let mut times: Vec<f64> = (0..loads.max(1)).map(|_| once()).collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{{\"load_validate_s\": {}, \"specs\": {MODELS}}}",
        times[times.len() / 2]
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if let Some(dir) = value("--write") {
        write_catalog(Path::new(dir));
    } else if let Some(dir) = value("--figures") {
        let loads = value("--loads").map_or(10, |n| n.parse().expect("--loads N"));
        figures(Path::new(dir), loads);
    } else {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
