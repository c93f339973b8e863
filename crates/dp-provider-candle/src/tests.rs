//! Unit tests on small generated models: a valid one runs; every kind of broken artifact
//! is a clear error naming the file, never a panic.

use std::path::Path;

use dp_spec::{ErrorCode, ModelSpec, SourceDocument, SourceFormat};
use serde_json::json;

use super::*;

const HIDDEN: usize = 8;
const VOCAB: usize = 20;
const POSITIONS: usize = 16;
const INTERMEDIATE: usize = 16;

/// Every tensor of a one-layer BERT, with small deterministic values.
fn tensors() -> Vec<(String, Vec<usize>)> {
    let mut t = vec![
        (
            "embeddings.word_embeddings.weight".to_owned(),
            vec![VOCAB, HIDDEN],
        ),
        (
            "embeddings.position_embeddings.weight".to_owned(),
            vec![POSITIONS, HIDDEN],
        ),
        (
            "embeddings.token_type_embeddings.weight".to_owned(),
            vec![2, HIDDEN],
        ),
        ("embeddings.LayerNorm.weight".to_owned(), vec![HIDDEN]),
        ("embeddings.LayerNorm.bias".to_owned(), vec![HIDDEN]),
    ];
    let p = "encoder.layer.0";
    for (name, out, inp) in [
        ("attention.self.query", HIDDEN, HIDDEN),
        ("attention.self.key", HIDDEN, HIDDEN),
        ("attention.self.value", HIDDEN, HIDDEN),
        ("attention.output.dense", HIDDEN, HIDDEN),
        ("intermediate.dense", INTERMEDIATE, HIDDEN),
        ("output.dense", HIDDEN, INTERMEDIATE),
    ] {
        t.push((format!("{p}.{name}.weight"), vec![out, inp]));
        t.push((format!("{p}.{name}.bias"), vec![out]));
    }
    for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        t.push((format!("{p}.{norm}.weight"), vec![HIDDEN]));
        t.push((format!("{p}.{norm}.bias"), vec![HIDDEN]));
    }
    t
}

/// A safetensors file of `tensors` (f32, values from a simple counter).
fn safetensors_file(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let n: usize = shape.iter().product();
        let start = data.len();
        for j in 0..n {
            #[allow(clippy::cast_precision_loss, reason = "small test values")]
            let v = ((i * 31 + j * 7) % 17) as f32 / 17.0 - 0.5;
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn config() -> serde_json::Value {
    json!({
        "model_type": "bert", "vocab_size": VOCAB, "hidden_size": HIDDEN,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu", "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12
    })
}

/// Writes a valid model under `root/tiny/`.
fn write_model(root: &Path) {
    let dir = root.join("tiny");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.safetensors"), safetensors_file(&tensors())).unwrap();
    std::fs::write(dir.join("config.json"), config().to_string()).unwrap();
    std::fs::write(
        dir.join("modules.json"),
        r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"}]"#,
    )
    .unwrap();
}

fn spec() -> ModelSpec {
    let text = "model_name: tiny\nmodel_version: '1'\nrole: text_embedding\nruntime: inprocess\nengine: candle\n\
                local_artifacts:\n  - tiny/model.safetensors\n  - tiny/config.json\n  - tiny/modules.json\n\
                weights_digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    let doc = SourceDocument::parse_str("tiny.yaml", text, SourceFormat::Yaml).unwrap();
    dp_spec::validate_document(&doc).unwrap()
}

fn load(root: &Path) -> Result<Box<dyn LoadedModel>, ModelError> {
    load_at(root, ResolvedDevice::Cpu, Precision::Fp32)
}

fn load_at(
    root: &Path,
    device: ResolvedDevice,
    precision: Precision,
) -> Result<Box<dyn LoadedModel>, ModelError> {
    let spec = spec();
    let artifacts = verified(root, &spec);
    CandleProvider::new().load(&LoadRequest {
        spec: &spec,
        artifacts: &artifacts,
        models_root: root,
        device,
        precision,
    })
}

/// The spec's files as the manager hands them over: opened once through `dp-digest` (not
/// pinned here: these tests break files on purpose); the files that cannot be read are
/// simply absent, as the provider must then say.
fn verified(root: &Path, spec: &ModelSpec) -> VerifiedArtifacts {
    let present: Vec<String> = spec
        .local_artifacts
        .iter()
        .filter(|a| root.join(a).is_file())
        .cloned()
        .collect();
    dp_digest::open_verified(
        root,
        &present,
        &dp_digest::ArtifactPins::default(),
        &dp_digest::VerifyOptions::default(),
    )
    .unwrap()
    .artifacts
    .unwrap()
}

fn int64(shape: [usize; 2], values: Vec<i64>) -> Tensor {
    Tensor::new(shape.to_vec(), TensorData::Int64(values)).unwrap()
}

fn inputs(ids: Vec<i64>, mask: Vec<i64>, shape: [usize; 2]) -> NamedTensors {
    let n = ids.len();
    NamedTensors::from([
        ("input_ids".to_owned(), int64(shape, ids)),
        ("attention_mask".to_owned(), int64(shape, mask)),
        ("token_type_ids".to_owned(), int64(shape, vec![0; n])),
    ])
}

fn hidden(out: &NamedTensors) -> (Vec<usize>, Vec<f32>) {
    let t = &out[LAST_HIDDEN_STATE];
    match t.data() {
        TensorData::Fp32(v) => (t.shape().to_vec(), v.clone()),
        other => panic!("not fp32: {other:?}"),
    }
}

/// Asserts the error has `code` and its message mentions every one of `needles`.
fn assert_error(err: &ModelError, code: ErrorCode, needles: &[&str]) {
    assert_eq!(err.error_code, code, "{err}");
    for needle in needles {
        assert!(err.message.contains(needle), "{needle:?} not in: {err}");
    }
}

#[test]
fn a_valid_model_runs_and_padding_does_not_change_real_tokens() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let spec = spec();
    CandleProvider::new()
        .validate_local_artifacts(&spec, &verified(root.path(), &spec))
        .unwrap();
    let model = load(root.path()).unwrap();
    let alone = hidden(
        &model
            .infer(&inputs(vec![2, 5, 3], vec![1, 1, 1], [1, 3]))
            .unwrap(),
    );
    assert_eq!(alone.0, [1, 3, HIDDEN]);
    assert!(alone.1.iter().all(|v| v.is_finite()));
    let padded = hidden(
        &model
            .infer(&inputs(vec![2, 5, 3, 0, 0], vec![1, 1, 1, 0, 0], [1, 5]))
            .unwrap(),
    );
    for (a, b) in alone.1.iter().zip(&padded.1[..3 * HIDDEN]) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Different tokens give different states: the output depends on the input.
    let other = hidden(
        &model
            .infer(&inputs(vec![2, 7, 3], vec![1, 1, 1], [1, 3]))
            .unwrap(),
    );
    assert!(
        alone
            .1
            .iter()
            .zip(&other.1)
            .any(|(a, b)| (a - b).abs() > 1e-3)
    );
}

#[test]
fn half_precisions_stay_close_to_fp32() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let x = inputs(vec![2, 5, 3, 9], vec![1, 1, 1, 1], [1, 4]);
    let full = hidden(&load(root.path()).unwrap().infer(&x).unwrap()).1;
    for precision in [Precision::Fp16, Precision::Bf16] {
        let model = load_at(root.path(), ResolvedDevice::Cpu, precision).unwrap();
        let half = hidden(&model.infer(&x).unwrap()).1;
        let worst = full
            .iter()
            .zip(&half)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0_f32, f32::max);
        assert!(worst < 0.1, "{precision:?}: {worst}");
    }
}

#[test]
fn a_missing_weights_file_is_weights_missing_naming_it() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    std::fs::remove_file(root.path().join("tiny/model.safetensors")).unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(&err, ErrorCode::WeightsMissing, &["model.safetensors"]);
    assert!(
        err.details["file"]
            .as_str()
            .unwrap()
            .ends_with("model.safetensors")
    );
}

#[test]
fn bad_json_config_is_an_error_naming_config_json() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    std::fs::write(root.path().join("tiny/config.json"), "{ not json").unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(&err, ErrorCode::InvalidSpec, &["config.json", "malformed"]);
}

#[test]
fn a_bad_module_list_is_an_error_naming_modules_json() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    std::fs::write(root.path().join("tiny/modules.json"), "[]").unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(&err, ErrorCode::InvalidSpec, &["modules.json", "empty"]);
}

#[test]
fn a_truncated_weights_file_is_an_error_naming_it() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let path = root.path().join("tiny/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for keep in [0, 5, 40, bytes.len() - 4] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load(root.path()).err().unwrap();
        assert_error(&err, ErrorCode::InvalidSpec, &["model.safetensors"]);
    }
}

#[test]
fn a_header_claiming_an_enormous_length_is_refused_without_allocating_it() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(root.path().join("tiny/model.safetensors"), bytes).unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &["model.safetensors", "header"],
    );
}

#[test]
fn a_missing_tensor_is_named() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let mut t = tensors();
    t.retain(|(name, _)| name != "encoder.layer.0.attention.self.key.weight");
    std::fs::write(
        root.path().join("tiny/model.safetensors"),
        safetensors_file(&t),
    )
    .unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &[
            "model.safetensors",
            "encoder.layer.0.attention.self.key.weight",
            "missing",
        ],
    );
    // Validation alone finds it too, without loading.
    let err = CandleProvider::new()
        .validate_local_artifacts(&spec(), &verified(root.path(), &spec()))
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named_with_both_shapes() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let mut t = tensors();
    for (name, shape) in &mut t {
        if name == "encoder.layer.0.intermediate.dense.weight" {
            *shape = vec![INTERMEDIATE + 1, HIDDEN];
        }
    }
    std::fs::write(
        root.path().join("tiny/model.safetensors"),
        safetensors_file(&t),
    )
    .unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &["intermediate.dense.weight", "[17, 8]", "[16, 8]"],
    );
}

#[test]
fn a_config_that_contradicts_itself_is_refused() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let mut c = config();
    c["num_attention_heads"] = json!(3);
    std::fs::write(root.path().join("tiny/config.json"), c.to_string()).unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &["config.json", "num_attention_heads"],
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_is_provider_unavailable() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let err = load_at(root.path(), ResolvedDevice::Cuda(0), Precision::Fp32)
        .err()
        .unwrap();
    assert_error(&err, ErrorCode::ProviderUnavailable, &["cuda", "feature"]);
}

#[test]
fn inputs_that_do_not_fit_are_invalid_input() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let model = load(root.path()).unwrap();
    let cases: Vec<(NamedTensors, &str)> = vec![
        (inputs(vec![2, 99], vec![1, 1], [1, 2]), "outside 0..20"),
        (inputs(vec![2, -1], vec![1, 1], [1, 2]), "outside"),
        (inputs(vec![2, 3], vec![1, 7], [1, 2]), "attention_mask"),
        (NamedTensors::new(), "input_ids"),
        (
            NamedTensors::from([(
                "input_ids".to_owned(),
                Tensor::new(vec![2], TensorData::Int64(vec![1, 2])).unwrap(),
            )]),
            "[batch, seq]",
        ),
        (
            NamedTensors::from([(
                "input_ids".to_owned(),
                Tensor::new(vec![1, 1], TensorData::Fp32(vec![1.0])).unwrap(),
            )]),
            "int64",
        ),
        (
            inputs(
                vec![1; POSITIONS + 1],
                vec![1; POSITIONS + 1],
                [1, POSITIONS + 1],
            ),
            "positions",
        ),
    ];
    for (input, needle) in cases {
        let err = model.infer(&input).unwrap_err();
        assert_error(&err, ErrorCode::InvalidInput, &[needle]);
    }
    let mut mismatched = inputs(vec![2, 3], vec![1, 1], [1, 2]);
    mismatched.insert("token_type_ids".into(), int64([2, 1], vec![0, 0]));
    let err = model.infer(&mismatched).unwrap_err();
    assert_error(&err, ErrorCode::InvalidInput, &["token_type_ids", "shape"]);
}

#[test]
fn an_empty_batch_gives_an_empty_output() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let model = load(root.path()).unwrap();
    let out = hidden(&model.infer(&inputs(vec![], vec![], [0, 3])).unwrap());
    assert_eq!(out.0, [0, 3, HIDDEN]);
    assert!(out.1.is_empty());
}

// CLIP: a tiny generated model (the parity tests against transformers are in tests/clip.rs).

/// A one-layer CLIP `config.json`; `eos_token_id` 5 pools at the first 5 (not the argmax).
fn clip_config() -> serde_json::Value {
    json!({
        "model_type": "clip", "projection_dim": 6,
        "text_config": {
            "vocab_size": VOCAB, "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 8,
            "eos_token_id": 5
        },
        "vision_config": {
            "hidden_size": HIDDEN, "intermediate_size": 12, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 8, "patch_size": 4
        }
    })
}

fn clip_spec() -> ModelSpec {
    let text = "model_name: clip\nmodel_version: '1'\nrole: image_embedding\nruntime: inprocess\nengine: candle\n\
                local_artifacts:\n  - clip/model.safetensors\n  - clip/config.json\n\
                weights_digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    let doc = SourceDocument::parse_str("clip.yaml", text, SourceFormat::Yaml).unwrap();
    dp_spec::validate_document(&doc).unwrap()
}

/// Writes `config` and the weights it implies (minus `drop`) under `root/clip/`.
fn write_clip(root: &Path, config: &serde_json::Value, drop: Option<&str>) {
    let dir = root.join("clip");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let spec = clip_spec();
    let artifacts = verified(root, &spec);
    let file = artifacts.get("clip/config.json").unwrap();
    let config = crate::clip::ClipConfig::read(&crate::artifacts::ModelFile {
        path: dir.join("config.json"),
        bytes: file.bytes().clone(),
    })
    .unwrap();
    let mut tensors = config.expected_tensors();
    tensors.retain(|(name, _)| Some(name.as_str()) != drop);
    std::fs::write(dir.join("model.safetensors"), safetensors_file(&tensors)).unwrap();
}

fn load_clip(root: &Path) -> Result<Box<dyn LoadedModel>, ModelError> {
    let spec = clip_spec();
    let artifacts = verified(root, &spec);
    CandleProvider::new().validate_local_artifacts(&spec, &artifacts)?;
    CandleProvider::new().load(&LoadRequest {
        spec: &spec,
        artifacts: &artifacts,
        models_root: root,
        device: ResolvedDevice::Cpu,
        precision: Precision::Fp32,
    })
}

fn text_embeds(model: &dyn LoadedModel, ids: Vec<i64>) -> Vec<f32> {
    let input = NamedTensors::from([("input_ids".to_owned(), int64([1, ids.len()], ids))]);
    let out = model.infer(&input).unwrap();
    assert_eq!(
        out.keys().collect::<Vec<_>>(),
        ["logit_scale", "text_embeds"]
    );
    assert_eq!(out["text_embeds"].shape(), &[1, 6]);
    match out["text_embeds"].data() {
        TensorData::Fp32(v) => v.clone(),
        other => panic!("not fp32: {other:?}"),
    }
}

#[test]
fn a_clip_config_is_served_by_clip_without_modules_json() {
    let root = tempfile::tempdir().unwrap();
    write_clip(root.path(), &clip_config(), None);
    let model = load_clip(root.path()).unwrap();
    let pixels = Tensor::new(vec![2, 3, 8, 8], TensorData::Fp32(vec![0.25; 2 * 3 * 64])).unwrap();
    let both = NamedTensors::from([
        ("pixel_values".to_owned(), pixels),
        (
            "input_ids".to_owned(),
            int64([2, 3], vec![1, 5, 0, 1, 9, 5]),
        ),
        (
            "attention_mask".to_owned(),
            int64([2, 3], vec![1, 1, 0, 1, 1, 1]),
        ),
    ]);
    let out = model.infer(&both).unwrap();
    assert_eq!(out["image_embeds"].shape(), &[2, 6]);
    assert_eq!(out["text_embeds"].shape(), &[2, 6]);
    assert_eq!(out["logit_scale"].shape(), &[1]);
    // Pooled at the first eos_token_id (5), as transformers does when it is not 2: what
    // follows it changes nothing, although a larger id there would be the argmax.
    let a = text_embeds(&*model, vec![1, 9, 5, 12]);
    let b = text_embeds(&*model, vec![1, 9, 5]);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
    let c = text_embeds(&*model, vec![1, 9, 7, 5]);
    assert!(a.iter().zip(&c).any(|(x, y)| (x - y).abs() > 1e-4));
}

#[test]
fn clip_settings_candle_cannot_run_are_refused_naming_them() {
    let root = tempfile::tempdir().unwrap();
    for (path, value, needles) in [
        (
            "hidden_act",
            json!("gelu"),
            &["text_config.hidden_act", "gelu", "quick_gelu"][..],
        ),
        (
            "layer_norm_eps",
            json!(1e-6),
            &["text_config.layer_norm_eps", "1e-5"][..],
        ),
        (
            "num_attention_heads",
            json!(3),
            &["text_config.hidden_size", "3"][..],
        ),
    ] {
        let mut config = clip_config();
        config["text_config"][path] = value;
        write_clip(root.path(), &clip_config(), None);
        std::fs::write(root.path().join("clip/config.json"), config.to_string()).unwrap();
        let err = load_clip(root.path()).err().unwrap();
        assert_error(&err, ErrorCode::InvalidSpec, needles);
        assert_error(&err, ErrorCode::InvalidSpec, &["config.json"]);
    }
}

#[test]
fn an_unsupported_model_type_names_it_and_what_is_supported() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let mut c = config();
    c["model_type"] = json!("t5");
    std::fs::write(root.path().join("tiny/config.json"), c.to_string()).unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &["config.json", "'t5'", "bert, clip"],
    );
}

#[test]
fn a_missing_clip_tensor_is_named() {
    let root = tempfile::tempdir().unwrap();
    write_clip(
        root.path(),
        &clip_config(),
        Some("vision_model.embeddings.class_embedding"),
    );
    let err = load_clip(root.path()).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &[
            "model.safetensors",
            "vision_model.embeddings.class_embedding",
            "missing",
        ],
    );
}

#[test]
fn a_clip_schema_that_disagrees_with_the_model_is_invalid_spec() {
    let root = tempfile::tempdir().unwrap();
    write_clip(root.path(), &clip_config(), None);
    let artifacts = verified(root.path(), &clip_spec());
    let schema = |json: serde_json::Value| serde_json::from_value(json).unwrap();
    let cases = [
        (
            "input_schema",
            json!([{ "name": "pixel_values", "dtype": "fp32", "shape": [-1, 3, 224, 224] }]),
            "'pixel_values'",
        ),
        (
            "input_schema",
            json!([{ "name": "token_type_ids", "dtype": "int64", "shape": [-1, -1] }]),
            "'token_type_ids'",
        ),
        (
            "output_schema",
            json!([{ "name": "image_embeds", "dtype": "fp32", "shape": [-1, 512] }]),
            "'image_embeds'",
        ),
        (
            "output_schema",
            json!([{ "name": "logit_scale", "dtype": "fp16", "shape": [1] }]),
            "'logit_scale'",
        ),
    ];
    for (field, tensors, needle) in cases {
        let mut spec = clip_spec();
        match field {
            "input_schema" => spec.input_schema = schema(tensors),
            _ => spec.output_schema = schema(tensors),
        }
        let err = CandleProvider::new()
            .validate_local_artifacts(&spec, &artifacts)
            .unwrap_err();
        assert_error(&err, ErrorCode::InvalidSpec, &[needle, field]);
    }
    // The contract itself, with the model's sizes or -1, is accepted.
    let mut spec = clip_spec();
    spec.input_schema = schema(json!([
        { "name": "pixel_values", "dtype": "fp32", "shape": [-1, 3, 8, -1] },
        { "name": "input_ids", "dtype": "int64", "shape": [-1, -1] },
        { "name": "attention_mask", "dtype": "int64", "shape": [-1, -1] },
    ]));
    spec.output_schema = schema(json!([
        { "name": "image_embeds", "dtype": "fp32", "shape": [-1, 6] },
        { "name": "text_embeds", "dtype": "fp32", "shape": [-1, -1] },
        { "name": "logit_scale", "dtype": "fp32", "shape": [1] },
    ]));
    CandleProvider::new()
        .validate_local_artifacts(&spec, &artifacts)
        .unwrap();
}
