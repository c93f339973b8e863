//! CLIP on candle against transformers' reference outputs (`tests/data/reference/clip/`):
//! the tiny random-weight models `cargo xtask setup` makes (`tiny-clip`, and `tiny-clip-wide`
//! with other widths, depths, patch and image sizes), fed the reference token ids and the
//! processor's exact pixels.
//!
//! A missing model or reference fails under `CI=true`; elsewhere the test prints NOT RUN
//! and returns.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};

use dp_provider_candle::CandleProvider;
use dp_spec::tensor_names::{
    ATTENTION_MASK, IMAGE_EMBEDS, INPUT_IDS, LOGIT_SCALE, PIXEL_VALUES, TEXT_EMBEDS,
};
use dp_spec::{
    ErrorCode, LoadRequest, LoadedModel, ModelProvider, ModelSpec, NamedTensors, Precision,
    ResolvedDevice, Tensor, TensorData,
};
use dp_tests::clip_reference::{
    batch, dot, floats, fp32, ids_of, label_ids, normalized, pixel_values, worst_cosine,
    worst_zero_shot_error,
};
use serde_json::{Value, json};

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

/// The model folder and its reference outputs, or `None` (NOT RUN).
fn assets(model: &str, test: &str) -> Option<(PathBuf, Value, Value)> {
    let folder = required(models_root().join(model), test)?;
    let reference_dir = workspace_root().join("tests/data/reference/clip");
    let reference = required(reference_dir.join(format!("{model}.json")), test)?;
    let pixels = required(reference_dir.join("pixels.json"), test)?;
    let read = |p: &Path| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
    Some((folder, read(&reference), read(&pixels)))
}

fn spec(model: &str) -> ModelSpec {
    serde_json::from_value(json!({
        "model_name": model,
        "model_version": "1",
        "runtime": "inprocess",
        "engine": "candle",
        "local_artifacts": [
            format!("{model}/model.safetensors"),
            format!("{model}/config.json"),
        ],
    }))
    .unwrap()
}

fn load(model: &str, precision: Precision) -> Box<dyn LoadedModel> {
    let spec = spec(model);
    let artifacts = dp_digest::open_verified(
        &models_root(),
        &spec.local_artifacts,
        &dp_digest::ArtifactPins::default(),
        &dp_digest::VerifyOptions::default(),
    )
    .unwrap()
    .artifacts
    .unwrap();
    let provider = CandleProvider::new();
    provider
        .validate_local_artifacts(&spec, &artifacts)
        .unwrap();
    provider
        .load(&LoadRequest {
            spec: &spec,
            artifacts: &artifacts,
            models_root: &models_root(),
            device: ResolvedDevice::Cpu,
            precision,
        })
        .unwrap()
}

fn parity(model: &str, test: &str) {
    let Some((folder, reference, pixels)) = assets(model, test) else {
        return;
    };
    let clip = load(model, Precision::Fp32);
    let dim = reference["config"]["projection_dim"].as_u64().unwrap() as usize;

    // Texts one by one, then all in one right-padded batch.
    let texts = reference["texts"].as_array().unwrap();
    let rows: Vec<Vec<i64>> = texts.iter().map(|t| ids_of(&t["input_ids"])).collect();
    let expected: Vec<Vec<f32>> = texts.iter().map(|t| floats(&t["embedding"])).collect();
    let mut one_by_one = Vec::new();
    for row in &rows {
        let out = clip.infer(&batch(std::slice::from_ref(row))).unwrap();
        assert_eq!(out[TEXT_EMBEDS].shape(), &[1, dim]);
        assert!(!out.contains_key(IMAGE_EMBEDS));
        one_by_one.extend(fp32(&out[TEXT_EMBEDS]));
    }
    let text_cos = worst_cosine(&one_by_one, dim, &expected);
    let batched = clip.infer(&batch(&rows)).unwrap();
    assert_eq!(batched[TEXT_EMBEDS].shape(), &[rows.len(), dim]);
    let batch_cos = worst_cosine(&fp32(&batched[TEXT_EMBEDS]), dim, &expected);

    // Images in one batch, together with the labels: all three outputs at once.
    let images = reference["images"].as_array().unwrap();
    let mut values = Vec::new();
    let mut side = 0;
    for image in images {
        let (v, s) = pixel_values(&pixels, image["image"].as_str().unwrap(), model);
        values.extend(v);
        side = s;
    }
    let labels = label_ids(&folder, &reference["labels"]);
    let mut inputs = batch(&labels);
    inputs.insert(
        PIXEL_VALUES.to_owned(),
        Tensor::new(vec![images.len(), 3, side, side], TensorData::Fp32(values)).unwrap(),
    );
    let out = clip.infer(&inputs).unwrap();
    let image_embeds = fp32(&out[IMAGE_EMBEDS]);
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
        "{model}: worst cosine texts {text_cos:.7} (batched {batch_cos:.7}), images \
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
fn tiny_clip_matches_transformers() {
    parity("tiny-clip", "tiny_clip_matches_transformers");
}

#[test]
fn tiny_clip_wide_matches_transformers() {
    parity("tiny-clip-wide", "tiny_clip_wide_matches_transformers");
}

#[test]
fn half_precisions_stay_close_to_fp32() {
    let test = "half_precisions_stay_close_to_fp32";
    let Some((_, reference, pixels)) = assets("tiny-clip", test) else {
        return;
    };
    let rows: Vec<Vec<i64>> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| ids_of(&t["input_ids"]))
        .collect();
    let image = reference["images"][0]["image"].as_str().unwrap();
    let (values, side) = pixel_values(&pixels, image, "tiny-clip");
    let mut inputs = batch(&rows);
    inputs.insert(
        PIXEL_VALUES.to_owned(),
        Tensor::new(vec![1, 3, side, side], TensorData::Fp32(values)).unwrap(),
    );
    let dim = reference["config"]["projection_dim"].as_u64().unwrap() as usize;
    let full = load("tiny-clip", Precision::Fp32).infer(&inputs).unwrap();
    for precision in [Precision::Fp16, Precision::Bf16] {
        let half = load("tiny-clip", precision).infer(&inputs).unwrap();
        for name in [TEXT_EMBEDS, IMAGE_EMBEDS] {
            let a = fp32(&full[name]);
            let b = fp32(&half[name]);
            let worst = a
                .chunks(dim)
                .zip(b.chunks(dim))
                .map(|(x, y)| dot(&normalized(x), &normalized(y)))
                .fold(1.0_f32, f32::min);
            assert!(worst > 0.99, "{precision:?} {name}: cosine {worst}");
        }
    }
}

#[test]
fn inputs_that_do_not_fit_are_invalid_input() {
    let test = "inputs_that_do_not_fit_are_invalid_input";
    if required(models_root().join("tiny-clip"), test).is_none() {
        return;
    }
    let clip = load("tiny-clip", Precision::Fp32);
    let int64 = |shape: Vec<usize>, v: Vec<i64>| Tensor::new(shape, TensorData::Int64(v)).unwrap();
    let pixels = |shape: Vec<usize>| {
        let n = shape.iter().product();
        Tensor::new(shape, TensorData::Fp32(vec![0.0; n])).unwrap()
    };
    let cases: Vec<(NamedTensors, &[&str])> = vec![
        (NamedTensors::new(), &[PIXEL_VALUES, INPUT_IDS]),
        (
            NamedTensors::from([(PIXEL_VALUES.to_owned(), pixels(vec![1, 3, 16, 16]))]),
            &[PIXEL_VALUES, "[batch, 3, 32, 32]"],
        ),
        (
            NamedTensors::from([(INPUT_IDS.to_owned(), int64(vec![1, 2], vec![49406, 49408]))]),
            &["outside 0..49408"],
        ),
        (
            NamedTensors::from([(INPUT_IDS.to_owned(), int64(vec![1, 78], vec![1; 78]))]),
            &["77 positions"],
        ),
        (
            NamedTensors::from([
                (
                    INPUT_IDS.to_owned(),
                    int64(vec![1, 3], vec![49406, 320, 49407]),
                ),
                (ATTENTION_MASK.to_owned(), int64(vec![1, 3], vec![0, 2, 1])),
            ]),
            &[ATTENTION_MASK, "outside 0..2"],
        ),
        (
            NamedTensors::from([("token_type_ids".to_owned(), int64(vec![1, 1], vec![0]))]),
            &["token_type_ids"],
        ),
    ];
    for (inputs, needles) in cases {
        let err = clip.infer(&inputs).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{err}");
        for needle in needles {
            assert!(err.message.contains(needle), "{needle:?} not in: {err}");
        }
    }
    // An empty batch is an empty result, not an error.
    let out = clip
        .infer(&NamedTensors::from([(
            PIXEL_VALUES.to_owned(),
            pixels(vec![0, 3, 32, 32]),
        )]))
        .unwrap();
    assert_eq!(out[IMAGE_EMBEDS].shape(), &[0, 24]);
}

/// Masks that hide tokens before the pooled one (left padding, a hidden word): the padding
/// mask is added to the causal one, as transformers does (`masked-text.json`, made by
/// `make_masked_reference.py`); each row alone, then all in one batch padded on the right.
#[test]
fn masks_hiding_tokens_before_the_pooled_one_match_transformers() {
    let test = "masks_hiding_tokens_before_the_pooled_one_match_transformers";
    let reference_dir = workspace_root().join("tests/data/reference/clip");
    let Some(path) = required(reference_dir.join("masked-text.json"), test) else {
        return;
    };
    let reference: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    for model in ["tiny-clip", "tiny-clip-wide"] {
        if required(models_root().join(model), test).is_none() {
            return;
        }
        let clip = load(model, Precision::Fp32);
        let rows = reference["models"][model]["rows"].as_array().unwrap();
        let int64 =
            |shape: Vec<usize>, v: Vec<i64>| Tensor::new(shape, TensorData::Int64(v)).unwrap();
        let embeds = |out: &NamedTensors| match out[TEXT_EMBEDS].data() {
            TensorData::Fp32(v) => v.clone(),
            other => panic!("not fp32: {other:?}"),
        };
        let seq = rows
            .iter()
            .map(|r| ids_of(&r["input_ids"]).len())
            .max()
            .unwrap();
        let (mut all_ids, mut all_mask) = (Vec::new(), Vec::new());
        let mut expected = Vec::new();
        for row in rows {
            let ids = ids_of(&row["input_ids"]);
            let mask = ids_of(&row["attention_mask"]);
            let want = floats(&row["embedding"]);
            let out = clip
                .infer(&NamedTensors::from([
                    (INPUT_IDS.to_owned(), int64(vec![1, ids.len()], ids.clone())),
                    (
                        ATTENTION_MASK.to_owned(),
                        int64(vec![1, ids.len()], mask.clone()),
                    ),
                ]))
                .unwrap();
            let got = normalized(&embeds(&out));
            assert!(
                dot(&got, &want) >= 0.9999,
                "{model} {ids:?} {mask:?}: {}",
                dot(&got, &want)
            );
            // Padded on the right to the batch's length: id 0, masked.
            let pad = seq - ids.len();
            all_ids.extend(ids.iter().copied().chain(std::iter::repeat_n(0, pad)));
            all_mask.extend(mask.iter().copied().chain(std::iter::repeat_n(0, pad)));
            expected.push(want);
        }
        let out = clip
            .infer(&NamedTensors::from([
                (INPUT_IDS.to_owned(), int64(vec![rows.len(), seq], all_ids)),
                (
                    ATTENTION_MASK.to_owned(),
                    int64(vec![rows.len(), seq], all_mask),
                ),
            ]))
            .unwrap();
        let batch = embeds(&out);
        for (got, want) in batch.chunks(expected[0].len()).zip(&expected) {
            let got = normalized(got);
            assert!(
                dot(&got, want) >= 0.9999,
                "{model} batched: {}",
                dot(&got, want)
            );
        }
    }
}
