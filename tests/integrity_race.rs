//! What is verified is what is loaded, under attack: while a thread swaps each pinned
//! artifact of the real all-MiniLM-L6-v2 (weights, tokenizer, config) by atomic `rename`
//! between its genuine and a tampered copy, 100 loads through the manager, for candle and
//! for ONNX Runtime, never serve the tampered bytes. Each load either returns exactly the
//! genuine embeddings, recording the genuine files' digest, or is refused with a stable
//! code. Half the loads go through the verification cache.
//!
//! Before the race, each tampering is shown to matter: loaded without pins, it changes the
//! embeddings (so "no tampered output" is a real claim).
//!
//! Needs `cargo xtask setup` (the MiniLM assets and ONNX Runtime); fails under CI=true when
//! they are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dp_digest::{ManifestOptions, manifest_of_artifacts};
use dp_manager::{EmbeddingCacheConfig, ModelManager};
use dp_provider_candle::CandleProvider;
use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, ErrorCode, ModelProvider};

const TEXTS: [&str; 3] = ["the cat sat on the mat", "a dog", "cat dog cat dog"];
const LOADS: usize = 100;

/// One engine's model as the race uses it.
struct Subject {
    /// Catalog name of the spec in `specs/catalog`.
    name: &'static str,
    /// The weights file inside the model's folder.
    weights: &'static str,
    /// Which swapped files change the outputs of this engine (ONNX Runtime never reads
    /// `config.json`: tampering with it is caught by the pin alone).
    config_matters: bool,
    provider: fn(&Path) -> Arc<dyn ModelProvider>,
}

const SUBJECTS: [Subject; 2] = [
    Subject {
        name: "all-minilm-l6-v2",
        weights: "model.safetensors",
        config_matters: true,
        provider: |_| Arc::new(CandleProvider::new()),
    },
    Subject {
        name: "all-minilm-l6-v2-onnx",
        weights: "model.onnx",
        config_matters: false,
        provider: |library| {
            Arc::new(OnnxProvider::new(OnnxProviderConfig {
                library_path: Some(library.to_owned()),
            }))
        },
    },
];

/// A models root holding a copy of one model, with `<file>.genuine` and `<file>.tampered`
/// beside each swapped file (same folder, so `rename` is atomic), and the catalog whose
/// spec pins the weights and all files together.
struct Stage {
    _dir: tempfile::TempDir,
    root: PathBuf,
    model_dir: PathBuf,
    catalog: Catalog,
    aggregate: dp_spec::WeightsDigest,
    swapped: Vec<&'static str>,
}

fn stage(subject: &Subject) -> Stage {
    let source = dp_tests::workspace_root().join(".dp-assets/models");
    let catalog = Catalog::load(&dp_tests::sample_catalog()).unwrap();
    let mut spec = catalog.get(subject.name).unwrap().spec.clone();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("models");
    for artifact in &spec.local_artifacts {
        let to = root.join(artifact);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(source.join(artifact), &to).unwrap();
    }
    let model_dir = root.join(subject.name);
    let manifest =
        manifest_of_artifacts(&root, &spec.local_artifacts, &ManifestOptions::default()).unwrap();
    spec.artifacts_digest = Some(manifest.aggregate);
    let catalog = Catalog::from_entries(
        dp_tests::sample_catalog().as_path(),
        vec![dp_spec::CatalogEntry {
            spec,
            ..catalog.get(subject.name).unwrap().clone()
        }],
    )
    .unwrap();
    let swapped = vec![subject.weights, "tokenizer.json", "config.json"];
    for file in &swapped {
        let path = model_dir.join(file);
        let genuine = std::fs::read(&path).unwrap();
        let tampered = tamper(file, &genuine);
        assert_ne!(tampered, genuine, "{file}");
        std::fs::write(model_dir.join(format!("{file}.genuine")), &genuine).unwrap();
        std::fs::write(model_dir.join(format!("{file}.tampered")), tampered).unwrap();
    }
    Stage {
        _dir: dir,
        root,
        model_dir,
        catalog,
        aggregate: manifest.aggregate,
        swapped,
    }
}

/// A tampered copy of `file`: the weights with 20 Ki floats moved around (valid numbers,
/// other weights), the tokenizer with the ids of "cat" and "dog" swapped, the config with
/// another layer-norm epsilon.
fn tamper(file: &str, genuine: &[u8]) -> Vec<u8> {
    match file {
        "tokenizer.json" => {
            let mut json: serde_json::Value = serde_json::from_slice(genuine).unwrap();
            let vocab = json["model"]["vocab"].as_object_mut().unwrap();
            let (cat, dog) = (vocab["cat"].clone(), vocab["dog"].clone());
            vocab.insert("cat".into(), dog);
            vocab.insert("dog".into(), cat);
            serde_json::to_vec(&json).unwrap()
        }
        "config.json" => {
            let mut json: serde_json::Value = serde_json::from_slice(genuine).unwrap();
            json["layer_norm_eps"] = serde_json::json!(0.5);
            serde_json::to_vec_pretty(&json).unwrap()
        }
        _ => {
            // Reverse the order of 4 Ki aligned floats at five places of the file: inside
            // the tensor data of both formats (one place at least in the encoder layers,
            // not only in rows of the embedding table no text uses), same length, no NaN
            // introduced.
            let mut bytes = genuine.to_vec();
            for tenth in [1, 3, 5, 7, 9] {
                let start = (bytes.len() * tenth / 10) & !3;
                let block = &mut bytes[start..start + 4 * 4096];
                let mut floats: Vec<[u8; 4]> = block
                    .chunks_exact(4)
                    .map(|c| [c[0], c[1], c[2], c[3]])
                    .collect();
                floats.reverse();
                block.copy_from_slice(&floats.concat());
            }
            bytes
        }
    }
}

/// Puts `<file>.<which>` in place of `file` by hard link + atomic rename: the path always
/// exists, holding one complete version or the other.
fn put(model_dir: &Path, file: &str, which: &str) {
    let from = model_dir.join(format!("{file}.{which}"));
    let staging = model_dir.join(format!("{file}.swap"));
    let _ = std::fs::remove_file(&staging);
    std::fs::hard_link(&from, &staging).unwrap();
    std::fs::rename(&staging, model_dir.join(file)).unwrap();
}

fn manager(stage: &Stage, provider: &Arc<dyn ModelProvider>, cache: Option<&Path>) -> ModelManager {
    let mut builder = ModelManager::builder(stage.catalog.clone(), &stage.root)
        .provider(Arc::clone(provider))
        // Every call runs the model: no vector may come from an earlier call.
        .embedding_cache(EmbeddingCacheConfig {
            enabled: false,
            ..EmbeddingCacheConfig::default()
        })
        .reaper(false);
    if let Some(cache) = cache {
        builder = builder.verification_cache(cache);
    }
    builder.build().unwrap()
}

fn same(a: &[Vec<f32>], b: &[Vec<f32>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| (p - q).abs() <= 1e-6))
}

/// Tiny deterministic generator for the swapper's timing.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn race(subject: &Subject, library: &Path) {
    let stage = stage(subject);
    let provider = (subject.provider)(library);
    let unpinned = manager(&stage, &provider, None);
    let genuine = unpinned.embed(subject.name, &TEXTS).unwrap();
    assert_eq!(
        genuine.models_used[0].artifacts_digest,
        Some(stage.aggregate)
    );

    // Each tampering changes what a load computes (checked without pins), or, for the
    // config ONNX Runtime never reads, at least the bytes the signature covers.
    for file in &stage.swapped {
        put(&stage.model_dir, file, "tampered");
        let mut spec = stage.catalog.entries()[0].spec.clone();
        spec.artifacts_digest = None;
        spec.weights_digest = None;
        let loose = ModelManager::builder(
            Catalog::from_entries(
                dp_tests::sample_catalog().as_path(),
                vec![dp_spec::CatalogEntry {
                    spec,
                    ..stage.catalog.entries()[0].clone()
                }],
            )
            .unwrap(),
            &stage.root,
        )
        .provider(Arc::clone(&provider))
        .verify_before_load(false)
        .reaper(false)
        .build()
        .unwrap();
        let out = loose.embed(subject.name, &TEXTS).unwrap();
        assert_ne!(out.model_signature, genuine.model_signature, "{file}");
        if *file != "config.json" || subject.config_matters {
            assert!(
                !same(&out.embeddings, &genuine.embeddings),
                "{file} changes nothing"
            );
        }
        put(&stage.model_dir, file, "genuine");
    }

    let cache_dir = tempfile::tempdir().unwrap();
    let managers = [
        manager(&stage, &provider, None),
        manager(
            &stage,
            &provider,
            Some(&cache_dir.path().join("cache.json")),
        ),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = Arc::clone(&stop);
        let model_dir = stage.model_dir.clone();
        let files = stage.swapped.clone();
        std::thread::spawn(move || {
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            let mut swaps = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                let file = files[usize::try_from(rng.below(files.len() as u64)).unwrap()];
                put(&model_dir, file, "tampered");
                std::thread::sleep(Duration::from_micros(rng.below(20_000)));
                put(&model_dir, file, "genuine");
                std::thread::sleep(Duration::from_micros(rng.below(60_000)));
                swaps += 1;
            }
            swaps
        })
    };
    let (mut served, mut refused) = (0, 0);
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..LOADS {
        let manager = &managers[i % 2];
        manager.release(subject.name);
        match manager.embed(subject.name, &TEXTS) {
            Ok(out) => {
                assert!(
                    same(&out.embeddings, &genuine.embeddings),
                    "load {i}: TAMPERED embeddings served under {}",
                    out.model_signature
                );
                assert_eq!(out.model_signature, genuine.model_signature, "load {i}");
                assert_eq!(out.models_used[0].artifacts_digest, Some(stage.aggregate));
                served += 1;
            }
            Err(err) => {
                assert!(
                    matches!(
                        err.error_code,
                        ErrorCode::WeightsDigestMismatch | ErrorCode::VersionDrift
                    ),
                    "load {i}: unexpected refusal {err}"
                );
                *codes.entry(err.error_code.as_str()).or_insert(0) += 1;
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!(
        "{}: {LOADS} loads during {swaps} swaps: {served} served genuine, {refused} refused \
         ({codes:?}), 0 tampered",
        subject.name
    );
    // Both outcomes happened, so the race really ran against loads.
    assert!(
        served > 0 && refused > 0,
        "served {served}, refused {refused}"
    );
    // Afterwards the genuine files load again.
    managers[0].release(subject.name);
    let out = managers[0].embed(subject.name, &TEXTS).unwrap();
    assert!(same(&out.embeddings, &genuine.embeddings));
}

#[test]
fn swapping_artifacts_during_loads_never_serves_tampered_bytes_candle() {
    let test = "swapping_artifacts_during_loads_never_serves_tampered_bytes_candle";
    if dp_tests::asset("models/all-minilm-l6-v2/model.safetensors", test).is_none() {
        return;
    }
    race(&SUBJECTS[0], Path::new("/nonexistent"));
}

#[test]
fn swapping_artifacts_during_loads_never_serves_tampered_bytes_onnx() {
    let test = "swapping_artifacts_during_loads_never_serves_tampered_bytes_onnx";
    let (Some(_), Some(library)) = (
        dp_tests::asset("models/all-minilm-l6-v2-onnx/model.onnx", test),
        dp_tests::asset("onnxruntime/libonnxruntime.so", test),
    ) else {
        return;
    };
    race(&SUBJECTS[1], &library);
}
