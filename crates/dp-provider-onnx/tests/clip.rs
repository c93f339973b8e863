//! CLIP on ONNX Runtime, two graphs in one model (`vision_model.onnx`: `pixel_values` →
//! `image_embeds`, `logit_scale`; `text_model.onnx`: `input_ids`, `attention_mask` →
//! `text_embeds`, `logit_scale`), against transformers' reference outputs
//! (`tests/data/reference/clip/tiny-clip.json`): tiny-clip's weights as `cargo xtask setup`
//! exports them to `.dp-assets/models/tiny-clip-onnx`.
//!
//! A missing model, reference or ONNX Runtime library fails under `CI=true`; elsewhere the
//! test prints NOT RUN and returns.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};

use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::tensor_names::{
    ATTENTION_MASK, IMAGE_EMBEDS, INPUT_IDS, LOGIT_SCALE, PIXEL_VALUES, TEXT_EMBEDS,
};
use dp_spec::{
    ErrorCode, LoadRequest, LoadedModel, ModelProvider, ModelSpec, NamedTensors, Precision,
    ResolvedDevice, Tensor, TensorData,
};
use dp_tests::clip_reference::{
    batch, floats, fp32, ids_of, label_ids, pixel_values, worst_cosine, worst_zero_shot_error,
};
use serde_json::{Value, json};

const MODEL: &str = "tiny-clip-onnx";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models_root() -> PathBuf {
    workspace_root().join(".dp-assets/models")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `path` if it exists; otherwise a failure in CI, and NOT RUN (`None`) elsewhere.
fn required(path: PathBuf, test: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    assert!(
        !in_ci(),
        "{test}: required asset {} is missing; CI must run `cargo xtask setup` first",
        path.display()
    );
    eprintln!(
        "{test}: NOT RUN: asset {} is missing; run `cargo xtask setup`",
        path.display()
    );
    None
}

/// The library, the model folder and the reference outputs, or `None` (NOT RUN).
fn assets(test: &str) -> Option<(PathBuf, PathBuf, Value, Value)> {
    let library = required(
        workspace_root().join(".dp-assets/onnxruntime/libonnxruntime.so"),
        test,
    )?;
    let folder = required(models_root().join(MODEL), test)?;
    let reference_dir = workspace_root().join("tests/data/reference/clip");
    let reference = required(reference_dir.join("tiny-clip.json"), test)?;
    let pixels = required(reference_dir.join("pixels.json"), test)?;
    let read = |p: &Path| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    Some((library, folder, read(&reference), read(&pixels)))
}

/// The two graphs, with schemas naming the tensors of both (checked against the files).
fn spec() -> ModelSpec {
    serde_json::from_value(json!({
        "model_name": MODEL,
        "model_version": "1",
        "runtime": "inprocess",
        "engine": "onnx",
        "local_artifacts": [
            format!("{MODEL}/vision_model.onnx"),
            format!("{MODEL}/text_model.onnx"),
            format!("{MODEL}/config.json"),
        ],
        "input_schema": [
            { "name": PIXEL_VALUES, "dtype": "fp32", "shape": [-1, 3, 32, 32] },
            { "name": INPUT_IDS, "dtype": "int64", "shape": [-1, -1] },
            { "name": ATTENTION_MASK, "dtype": "int64", "shape": [-1, -1] },
        ],
        "output_schema": [
            { "name": IMAGE_EMBEDS, "dtype": "fp32", "shape": [-1, 24] },
            { "name": TEXT_EMBEDS, "dtype": "fp32", "shape": [-1, 24] },
            { "name": LOGIT_SCALE, "dtype": "fp32", "shape": [1] },
        ],
        "onnx": { "intra_op_threads": 1 },
    }))
    .unwrap()
}

fn load(library: PathBuf, spec: &ModelSpec) -> Result<Box<dyn LoadedModel>, dp_spec::ModelError> {
    let artifacts = dp_digest::open_verified(
        &models_root(),
        &spec.local_artifacts,
        &dp_digest::ArtifactPins::default(),
        &dp_digest::VerifyOptions::default(),
    )
    .unwrap()
    .artifacts
    .unwrap();
    let provider = OnnxProvider::new(OnnxProviderConfig {
        library_path: Some(library),
    });
    provider.validate_local_artifacts(spec, &artifacts)?;
    provider.load(&LoadRequest {
        spec,
        artifacts: &artifacts,
        models_root: &models_root(),
        device: ResolvedDevice::Cpu,
        precision: Precision::Fp32,
    })
}

#[test]
fn tiny_clip_onnx_matches_transformers() {
    let test = "tiny_clip_onnx_matches_transformers";
    let Some((library, folder, reference, pixels)) = assets(test) else {
        return;
    };
    let clip = load(library, &spec()).unwrap();
    let dim = reference["config"]["projection_dim"].as_u64().unwrap() as usize;

    // Texts one by one, then all in one right-padded batch: the text graph only.
    let texts = reference["texts"].as_array().unwrap();
    let rows: Vec<Vec<i64>> = texts.iter().map(|t| ids_of(&t["input_ids"])).collect();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| floats(&t["embedding"])).collect();
    let mut one_by_one = Vec::new();
    for row in &rows {
        let out = clip.infer(&batch(std::slice::from_ref(row))).unwrap();
        assert_eq!(
            out.keys().map(String::as_str).collect::<Vec<_>>(),
            [LOGIT_SCALE, TEXT_EMBEDS]
        );
        assert_eq!(out[TEXT_EMBEDS].shape(), &[1, dim]);
        one_by_one.extend(fp32(&out[TEXT_EMBEDS]));
    }
    let text_cos = worst_cosine(&one_by_one, dim, &expected);
    let batched = clip.infer(&batch(&rows)).unwrap();
    let batch_cos = worst_cosine(&fp32(&batched[TEXT_EMBEDS]), dim, &expected);

    // Images alone: the vision graph only.
    let images = reference["images"].as_array().unwrap();
    let mut values = Vec::new();
    let mut side = 0;
    for image in images {
        let (v, s) = pixel_values(&pixels, image["image"].as_str().unwrap(), "tiny-clip");
        values.extend(v);
        side = s;
    }
    let pixel_tensor =
        Tensor::new(vec![images.len(), 3, side, side], TensorData::Fp32(values)).unwrap();
    let alone = clip
        .infer(&NamedTensors::from([(
            PIXEL_VALUES.to_owned(),
            pixel_tensor.clone(),
        )]))
        .unwrap();
    assert_eq!(
        alone.keys().map(String::as_str).collect::<Vec<_>>(),
        [IMAGE_EMBEDS, LOGIT_SCALE]
    );

    // Both graphs in one call: images and labels.
    let labels = label_ids(&folder, &reference["labels"]);
    let mut inputs = batch(&labels);
    inputs.insert(PIXEL_VALUES.to_owned(), pixel_tensor);
    let out = clip.infer(&inputs).unwrap();
    assert_eq!(out.len(), 3);
    let image_embeds = fp32(&out[IMAGE_EMBEDS]);
    assert_eq!(image_embeds, fp32(&alone[IMAGE_EMBEDS]));
    let expected_images: Vec<Vec<f32>> = images.iter().map(|i| floats(&i["embedding"])).collect();
    let image_cos = worst_cosine(&image_embeds, dim, &expected_images);
    let expected_labels: Vec<Vec<f32>> = reference["label_embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let label_embeds = fp32(&out[TEXT_EMBEDS]);
    let label_cos = worst_cosine(&label_embeds, dim, &expected_labels);
    assert_eq!(out[LOGIT_SCALE].shape(), &[1]);
    let logit_scale = fp32(&out[LOGIT_SCALE])[0];
    #[allow(clippy::cast_possible_truncation, reason = "an f32 reference")]
    let expected_scale = reference["logit_scale"].as_f64().unwrap() as f32;

    // Zero-shot probabilities: softmax over labels of logit_scale × cosine.
    let worst_prob = worst_zero_shot_error(&image_embeds, &label_embeds, dim, logit_scale, images);
    eprintln!(
        "{MODEL}: worst cosine texts {text_cos:.7} (batched {batch_cos:.7}), images \
         {image_cos:.7}, labels {label_cos:.7}; logit_scale {logit_scale} vs {expected_scale}; \
         worst zero-shot probability error {worst_prob:.2e}"
    );
    assert!(text_cos >= 0.9999, "{text_cos}");
    assert!(batch_cos >= 0.9999, "{batch_cos}");
    assert!(image_cos >= 0.9999, "{image_cos}");
    assert!(label_cos >= 0.9999, "{label_cos}");
    assert!(
        (logit_scale - expected_scale).abs() <= 1e-5 * expected_scale,
        "{logit_scale} vs {expected_scale}"
    );
    assert!(worst_prob <= 1e-4, "{worst_prob}");
}

#[test]
fn inputs_no_graph_can_run_on_are_invalid_input_naming_each_graph() {
    let test = "inputs_no_graph_can_run_on_are_invalid_input_naming_each_graph";
    let Some((library, ..)) = assets(test) else {
        return;
    };
    let clip = load(library, &spec()).unwrap();
    let ids = Tensor::new(vec![1, 2], TensorData::Int64(vec![49406, 49407])).unwrap();
    let cases: Vec<(NamedTensors, &[&str])> = vec![
        (
            NamedTensors::new(),
            &[
                "vision_model.onnx",
                "text_model.onnx",
                PIXEL_VALUES,
                ATTENTION_MASK,
            ],
        ),
        // Half of the text graph's inputs: never silently dropped.
        (
            NamedTensors::from([(INPUT_IDS.to_owned(), ids.clone())]),
            &["text_model.onnx", ATTENTION_MASK],
        ),
        (
            NamedTensors::from([("token_type_ids".to_owned(), ids)]),
            &["no input named 'token_type_ids'", "vision_model.onnx"],
        ),
    ];
    for (inputs, needles) in cases {
        let err = clip.infer(&inputs).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{err}");
        for needle in needles {
            assert!(err.message.contains(needle), "{needle:?} not in: {err}");
        }
    }
}

#[test]
fn a_schema_tensor_no_graph_has_is_invalid_spec() {
    let test = "a_schema_tensor_no_graph_has_is_invalid_spec";
    let Some((library, ..)) = assets(test) else {
        return;
    };
    let mut spec = spec();
    spec.output_schema[2].name = "logits_per_image".to_owned();
    let err = load(library.clone(), &spec).err().unwrap();
    assert_eq!(err.error_code, ErrorCode::InvalidSpec, "{err}");
    assert!(err.message.contains("'logits_per_image'"), "{err}");
    // A graph input the input schema leaves out.
    let mut spec = self::spec();
    spec.input_schema.retain(|t| t.name != ATTENTION_MASK);
    let err = load(library, &spec).err().unwrap();
    assert_eq!(err.error_code, ErrorCode::InvalidSpec, "{err}");
    assert!(err.message.contains(ATTENTION_MASK), "{err}");
}
