//! CLIP end to end through the manager: image files → `image_clip` (decode, resize, crop,
//! normalize) → the model (candle, ONNX Runtime) → normalized embeddings and zero-shot
//! probabilities, against what `transformers` (`CLIPProcessor` + `CLIPModel`) computed on
//! the same files (`tests/data/reference/clip/`, made by `make_reference.py`).
//!
//! Parity: cosine ≥ 0.9999 per vector; probabilities within 5e-4 from image files, the
//! model itself being within 1e-6 on the same pixels (provider tests): see `check_model`.
//! Two differently shaped configs (tiny-clip, tiny-clip-wide) check that any CLIP config
//! is read, not one. Needs `cargo xtask setup` (the `clip` assets); fails under CI=true
//! when they are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::PathBuf;
use std::sync::Arc;

use dp_manager::preset::{ImageInput, PresetInputs, PresetOutput};
use dp_manager::{ModelManager, TaskData, TaskOutput, TaskRequest, TaskType};
use dp_provider_candle::CandleProvider;
use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, ErrorCode};
use dp_tests::cosine;
use serde::Deserialize;

#[derive(Deserialize)]
struct Reference {
    logit_scale: f32,
    texts: Vec<TextReference>,
    labels: Vec<String>,
    label_embeddings: Vec<Vec<f32>>,
    images: Vec<ImageReference>,
}

#[derive(Deserialize)]
struct TextReference {
    text: String,
    input_ids: Vec<i64>,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ImageReference {
    image: String,
    path: String,
    embedding: Vec<f32>,
    zero_shot_probs: Vec<f32>,
}

fn reference(config: &str) -> Reference {
    let path = dp_tests::data_dir().join(format!("reference/clip/{config}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The catalog and the models root with the CLIP assets, or `None` (not in CI) when
/// setup has not made them.
fn manager(test: &str) -> Option<ModelManager> {
    for asset in [
        "models/tiny-clip",
        "models/tiny-clip-wide",
        "models/tiny-clip-onnx",
        "images/skimage",
    ] {
        dp_tests::asset(asset, test)?;
    }
    let onnx_library = dp_tests::asset("onnxruntime/libonnxruntime.so", test)?;
    let models_root = dp_tests::workspace_root().join(".dp-assets/models");
    let catalog = Catalog::load(&dp_tests::workspace_root().join("specs/catalog")).unwrap();
    let manager = ModelManager::builder(catalog, &models_root)
        .provider(Arc::new(CandleProvider::new()))
        .provider(Arc::new(OnnxProvider::new(OnnxProviderConfig {
            library_path: Some(onnx_library),
        })))
        .reaper(false)
        .build()
        .unwrap();
    Some(manager)
}

fn image_bytes(reference: &ImageReference) -> ImageInput {
    let path: PathBuf = dp_tests::workspace_root().join(&reference.path);
    ImageInput::Encoded(std::fs::read(&path).unwrap())
}

/// Texts, images and zero-shot classification of `model` against the reference `config`.
fn check_model(manager: &ModelManager, model: &str, config: &str) {
    let reference = reference(config);

    // Texts: the same token ids as CLIPTokenizerFast, the same embeddings.
    let texts: Vec<&str> = reference.texts.iter().map(|t| t.text.as_str()).collect();
    let out = manager.embed(model, &texts).unwrap();
    assert_eq!(out.models_used[0].model_name, model);
    assert_eq!(
        out.models_used[0].preprocess_preset.as_deref(),
        Some("image_clip")
    );
    for (want, got) in reference.texts.iter().zip(&out.embeddings) {
        let c = cosine(got, &want.embedding);
        assert!(c >= 0.9999, "{model}: text {:?}: cosine {c}", want.text);
        let norm: f32 = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-5,
            "{model}: text vectors are unit-norm"
        );
        let made = manager
            .preprocess(model, PresetInputs::Texts(&[want.text.as_str()]))
            .unwrap();
        let dp_spec::TensorData::Int64(ids) = made.tensors["input_ids"].data() else {
            panic!("int64 ids")
        };
        assert_eq!(
            ids, &want.input_ids,
            "{model}: token ids of {:?}",
            want.text
        );
    }
    let labels: Vec<&str> = reference.labels.iter().map(String::as_str).collect();
    let label_vectors = manager.embed(model, &labels).unwrap().embeddings;
    for (label, (got, want)) in labels
        .iter()
        .zip(label_vectors.iter().zip(&reference.label_embeddings))
    {
        let c = cosine(got, want);
        assert!(c >= 0.9999, "{model}: label {label:?}: cosine {c}");
    }

    // Images: from the files, through the preset, as transformers' processor + model.
    let images: Vec<ImageInput> = reference.images.iter().map(image_bytes).collect();
    let out = manager.embed_images(model, &images).unwrap();
    assert_eq!(out.embeddings.len(), images.len());
    let mut worst = 1.0_f64;
    for (want, got) in reference.images.iter().zip(&out.embeddings) {
        let c = cosine(got, &want.embedding);
        worst = worst.min(c);
        assert!(c >= 0.9999, "{model}: image {}: cosine {c}", want.image);
    }
    eprintln!("{model}: worst image cosine {worst:.7}");

    // Zero-shot: softmax(logit_scale × cosine) over the labels, within 1e-4.
    let response = manager
        .task(TaskRequest::new(
            TaskType::ZeroShotClassification,
            model,
            Some(TaskData::ImagesWithLabels {
                images: images.clone(),
                labels: reference.labels.clone(),
            }),
        ))
        .unwrap();
    let TaskOutput::Probabilities(probabilities) = response.output else {
        panic!("probabilities")
    };
    // The 1e-4 holds for the model on the same pixels: the provider tests feed the
    // processor's own pixels and stay within 1e-6. From files, the pixels equal Pillow's
    // within one 8-bit level (every format; crates/dp-preset/tests/image_parity.rs),
    // and one level on a few pixels moves these random-weight models' probabilities by up
    // to ~2e-4. A JPEG's decoded pixels are Pillow's exactly (libjpeg-turbo's code): its
    // worst is printed apart (~4e-5 here; ~5e-4 when zune-jpeg decoded it).
    let (mut worst, mut worst_jpeg) = (0.0_f32, 0.0_f32);
    for (want, got) in reference.images.iter().zip(&probabilities) {
        assert_eq!(got.len(), labels.len());
        assert!((got.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let jpeg = want.path.ends_with(".jpg");
        for (p, q) in got.iter().zip(&want.zero_shot_probs) {
            let d = (p - q).abs();
            if jpeg {
                worst_jpeg = worst_jpeg.max(d);
            } else {
                worst = worst.max(d);
            }
            assert!(
                d <= 5e-4,
                "{model}: image {}: {got:?} vs {:?}",
                want.image,
                want.zero_shot_probs
            );
        }
    }
    eprintln!(
        "{model}: worst probability difference {worst:.2e} (JPEG: {worst_jpeg:.2e}); logit_scale {}",
        reference.logit_scale
    );
}

#[test]
fn tiny_clip_on_candle_matches_transformers() {
    let Some(manager) = manager("tiny_clip_on_candle_matches_transformers") else {
        return;
    };
    check_model(&manager, "tiny-clip", "tiny-clip");
}

#[test]
fn a_differently_shaped_clip_on_candle_matches_transformers() {
    let Some(manager) = manager("a_differently_shaped_clip_on_candle_matches_transformers") else {
        return;
    };
    check_model(&manager, "tiny-clip-wide", "tiny-clip-wide");
}

#[test]
fn tiny_clip_on_onnx_runtime_matches_transformers() {
    let Some(manager) = manager("tiny_clip_on_onnx_runtime_matches_transformers") else {
        return;
    };
    check_model(&manager, "tiny-clip-onnx", "tiny-clip");
}

#[test]
fn embeddings_are_cached_per_image_bytes_and_records_name_the_preset() {
    let Some(manager) =
        manager("embeddings_are_cached_per_image_bytes_and_records_name_the_preset")
    else {
        return;
    };
    let reference = reference("tiny-clip");
    let a = image_bytes(&reference.images[0]);
    let b = image_bytes(&reference.images[1]);
    let first = manager
        .embed_images("tiny-clip", &[a.clone(), b.clone(), a.clone()])
        .unwrap();
    assert_eq!(first.embeddings[0], first.embeddings[2]);
    let before = manager.status().embedding_cache;
    let again = manager.embed_images("tiny-clip", &[b, a]).unwrap();
    let after = manager.status().embedding_cache;
    assert_eq!(
        after.hits - before.hits,
        2,
        "both images come from the cache"
    );
    assert_eq!(again.embeddings[0], first.embeddings[1]);
    // The record says which preprocessing ran, with the settings read from the files.
    let entry = &first.models_used[0];
    assert!(
        entry
            .model_signature
            .contains("preprocess_preset=image_clip"),
        "{}",
        entry.model_signature
    );
    assert!(
        entry.preprocess_signature.starts_with("pp1:"),
        "{}",
        entry.preprocess_signature
    );
}

#[test]
fn bad_images_and_wrong_inputs_are_refused_with_stable_reasons() {
    let Some(manager) = manager("bad_images_and_wrong_inputs_are_refused_with_stable_reasons")
    else {
        return;
    };
    let reason = |err: &dp_spec::ModelError| {
        err.details
            .get("reason")
            .and_then(|r| r.as_str())
            .map(str::to_owned)
    };
    // Truncated PNG.
    let png = std::fs::read(dp_tests::data_dir().join("images/gray.png")).unwrap();
    let err = manager
        .embed_images(
            "tiny-clip",
            &[ImageInput::Encoded(png[..png.len() / 2].to_vec())],
        )
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(
        reason(&err).as_deref(),
        Some("image_decode_failed"),
        "{err}"
    );
    assert!(err.message.contains("image 0"), "{err}");
    // Not an image at all.
    let err = manager
        .embed_images(
            "tiny-clip",
            &[ImageInput::Encoded(b"%PDF-1.7 not an image".to_vec())],
        )
        .unwrap_err();
    assert_eq!(
        reason(&err).as_deref(),
        Some("image_format_unsupported"),
        "{err}"
    );
    // Zero-shot without labels.
    let image =
        ImageInput::Encoded(std::fs::read(dp_tests::data_dir().join("images/plain.bmp")).unwrap());
    let err = manager
        .run_preset(
            "tiny-clip",
            PresetInputs::ImagesWithLabels {
                images: std::slice::from_ref(&image),
                labels: &[],
            },
        )
        .unwrap_err();
    assert_eq!(reason(&err).as_deref(), Some("labels_missing"), "{err}");
    // A text-only model asked for images (its files are not even needed to refuse).
    if dp_tests::asset("models/all-minilm-l6-v2", "bad_images").is_some() {
        let err = manager
            .embed_images("all-minilm-l6-v2", &[image])
            .unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidInput);
        assert_eq!(reason(&err).as_deref(), Some("images_unsupported"), "{err}");
    }
    // The outputs of a CLIP task in the wrong shape are refused too.
    let output = manager
        .run_preset("tiny-clip", PresetInputs::Texts(&["a"]))
        .unwrap();
    assert!(matches!(output.output, PresetOutput::Vectors(ref v) if v.len() == 1));
}
