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
fn cuda_without_the_feature_is_device_unavailable() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let err = load_at(root.path(), ResolvedDevice::Cuda(0), Precision::Fp32)
        .err()
        .unwrap();
    assert_error(&err, ErrorCode::DeviceUnavailable, &["cuda", "feature"]);
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
            json!("swish"),
            &["text_config.hidden_act", "'swish'", "quick_gelu", "onnx"][..],
        ),
        (
            "layer_norm_eps",
            json!(0.0),
            &["text_config.layer_norm_eps", "out of range"][..],
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
fn clip_activations_and_layer_norm_eps_come_from_the_config() {
    // LAION's and most OpenCLIP checkpoints use the exact GELU; each setting must reach
    // the towers (a different result), not only pass the config check.
    let pixels = Tensor::new(
        vec![1, 3, 8, 8],
        TensorData::Fp32((0..192).map(|i| (i % 7) as f32 * 0.3 - 1.0).collect()),
    )
    .unwrap();
    let run = |change: &dyn Fn(&mut serde_json::Value)| {
        let root = tempfile::tempdir().unwrap();
        let mut config = clip_config();
        change(&mut config);
        write_clip(root.path(), &config, None);
        let model = load_clip(root.path()).unwrap();
        let image = NamedTensors::from([("pixel_values".to_owned(), pixels.clone())]);
        let image = match model.infer(&image).unwrap()["image_embeds"].data() {
            TensorData::Fp32(v) => v.clone(),
            other => panic!("not fp32: {other:?}"),
        };
        (image, text_embeds(&*model, vec![1, 9, 5]))
    };
    let base = run(&|_| {});
    let differs = |a: &[f32], b: &[f32]| a.iter().zip(b).any(|(x, y)| (x - y).abs() > 1e-4);
    for act in ["gelu", "gelu_new", "relu"] {
        let vision = run(&|c| c["vision_config"]["hidden_act"] = json!(act));
        assert!(differs(&base.0, &vision.0), "vision {act}");
        assert_eq!(
            base.1, vision.1,
            "the text tower is untouched by vision_config"
        );
        let text = run(&|c| c["text_config"]["hidden_act"] = json!(act));
        assert!(differs(&base.1, &text.1), "text {act}");
    }
    let eps = run(&|c| c["vision_config"]["layer_norm_eps"] = json!(0.5));
    assert!(differs(&base.0, &eps.0));
}

#[test]
fn an_unsupported_model_type_names_it_and_what_is_supported() {
    let root = tempfile::tempdir().unwrap();
    write_model(root.path());
    let mut c = config();
    c["model_type"] = json!("gpt2");
    std::fs::write(root.path().join("tiny/config.json"), c.to_string()).unwrap();
    let err = load(root.path()).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &[
            "config.json",
            "'gpt2'",
            "bert, roberta, xlm-roberta, clip, t5, whisper",
            "engine onnx",
        ],
    );
    assert_eq!(err.details["model_type"], "gpt2");
    assert!(!err.message.contains("not implemented"), "{err}");
    // Validation says the same, without loading.
    let err = CandleProvider::new()
        .validate_local_artifacts(&spec(), &verified(root.path(), &spec()))
        .unwrap_err();
    assert_error(&err, ErrorCode::InvalidSpec, &["'gpt2'", "xlm-roberta"]);
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

// XLM-RoBERTa encoders and sequence-classification heads (cross-encoders), checked against
// a naive f64 reference written here from the Hugging Face definitions.

/// XLM-R's padding token (`pad_token_id`), below which no real token's position lies.
const PAD: i64 = 1;

/// Which model a generated checkpoint is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    /// `XLMRobertaModel` as sentence-transformers saves it (no prefix, `modules.json`).
    XlmrEncoder,
    /// `XLMRobertaForSequenceClassification` (`roberta.` prefix, `classifier.dense` and
    /// `classifier.out_proj`).
    XlmrClassifier,
    /// `BertForSequenceClassification` (`bert.` prefix, pooler and `classifier`).
    BertClassifier,
}

impl Kind {
    const fn is_roberta(self) -> bool {
        matches!(self, Self::XlmrEncoder | Self::XlmrClassifier)
    }

    const fn prefix(self) -> &'static str {
        match self {
            Self::XlmrEncoder => "",
            Self::XlmrClassifier => "roberta.",
            Self::BertClassifier => "bert.",
        }
    }

    /// Rows of the position table: XLM-R's first `PAD + 1` are never a real token's.
    const fn positions(self) -> usize {
        if self.is_roberta() {
            POSITIONS + 2
        } else {
            POSITIONS
        }
    }

    const fn type_vocab(self) -> usize {
        if self.is_roberta() { 1 } else { 2 }
    }

    fn config(self, labels: usize) -> serde_json::Value {
        let mut c = json!({
            "vocab_size": VOCAB, "hidden_size": HIDDEN, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": INTERMEDIATE, "hidden_act": "gelu",
            "max_position_embeddings": self.positions(), "type_vocab_size": self.type_vocab(),
        });
        match self {
            Self::XlmrEncoder => {
                c["model_type"] = json!("xlm-roberta");
                c["architectures"] = json!(["XLMRobertaModel"]);
                c["pad_token_id"] = json!(PAD);
                c["layer_norm_eps"] = json!(1e-5);
            }
            Self::XlmrClassifier => {
                c["model_type"] = json!("xlm-roberta");
                c["architectures"] = json!(["XLMRobertaForSequenceClassification"]);
                c["pad_token_id"] = json!(PAD);
                c["layer_norm_eps"] = json!(1e-5);
                // No id2label: the count comes from num_labels.
                c["num_labels"] = json!(labels);
            }
            Self::BertClassifier => {
                c["model_type"] = json!("bert");
                c["architectures"] = json!(["BertForSequenceClassification"]);
                c["layer_norm_eps"] = json!(1e-12);
                let id2label: serde_json::Map<String, serde_json::Value> = (0..labels)
                    .map(|i| (i.to_string(), json!(format!("LABEL_{i}"))))
                    .collect();
                c["id2label"] = serde_json::Value::Object(id2label);
            }
        }
        c
    }

    /// Every tensor of the checkpoint, with its full name.
    fn tensors(self, labels: usize) -> Vec<(String, Vec<usize>)> {
        let mut t = tensors();
        for (name, shape) in &mut t {
            match name.as_str() {
                "embeddings.position_embeddings.weight" => shape[0] = self.positions(),
                "embeddings.token_type_embeddings.weight" => shape[0] = self.type_vocab(),
                _ => {}
            }
            name.insert_str(0, self.prefix());
        }
        let [dense, out] = match self {
            Self::XlmrEncoder => return t,
            Self::XlmrClassifier => ["classifier.dense", "classifier.out_proj"],
            Self::BertClassifier => ["bert.pooler.dense", "classifier"],
        };
        t.push((format!("{dense}.weight"), vec![HIDDEN, HIDDEN]));
        t.push((format!("{dense}.bias"), vec![HIDDEN]));
        t.push((format!("{out}.weight"), vec![labels, HIDDEN]));
        t.push((format!("{out}.bias"), vec![labels]));
        t
    }
}

/// A safetensors file of `tensors` with f32 values from a seeded xorshift in [-0.5, 0.5):
/// irregular enough that a swapped row or transposed matrix changes the output.
fn random_safetensors(tensors: &[(String, Vec<usize>)], seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in tensors {
        let start = data.len();
        for _ in 0..shape.iter().product::<usize>() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            #[allow(clippy::cast_precision_loss, reason = "24 random bits")]
            let v = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
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

/// Writes a `kind` checkpoint under `root/m/` (with `modules.json` for the encoder only,
/// as the two are saved) and returns its spec, which lists the folder.
fn write_kind(root: &Path, kind: Kind, labels: usize) -> ModelSpec {
    let dir = root.join("m");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("model.safetensors"),
        random_safetensors(&kind.tensors(labels), 7),
    )
    .unwrap();
    std::fs::write(dir.join("config.json"), kind.config(labels).to_string()).unwrap();
    if kind == Kind::XlmrEncoder {
        std::fs::write(
            dir.join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"}]"#,
        )
        .unwrap();
    }
    folder_spec()
}

/// A spec listing the folder `m/` (so `modules.json` is expected of encoders).
fn folder_spec() -> ModelSpec {
    let text = "model_name: m\nmodel_version: '1'\nrole: text_embedding\nruntime: inprocess\nengine: candle\n\
                local_artifacts:\n  - m/\n\
                weights_digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
    let doc = SourceDocument::parse_str("m.yaml", text, SourceFormat::Yaml).unwrap();
    dp_spec::validate_document(&doc).unwrap()
}

/// The folder's files as the manager hands them over.
fn verified_folder(root: &Path) -> VerifiedArtifacts {
    dp_digest::open_verified(
        root,
        &["m/".to_owned()],
        &dp_digest::ArtifactPins::default(),
        &dp_digest::VerifyOptions::default(),
    )
    .unwrap()
    .artifacts
    .unwrap()
}

/// Validates then loads `spec`'s model from `root` on the CPU at fp32.
fn load_spec(root: &Path, spec: &ModelSpec) -> Result<Box<dyn LoadedModel>, ModelError> {
    load_spec_on(&CandleProvider::new(), root, spec)
}

/// [`load_spec`] by `provider`.
fn load_spec_on(
    provider: &CandleProvider,
    root: &Path,
    spec: &ModelSpec,
) -> Result<Box<dyn LoadedModel>, ModelError> {
    let artifacts = verified_folder(root);
    provider.validate_local_artifacts(spec, &artifacts)?;
    provider.load(&LoadRequest {
        spec,
        artifacts: &artifacts,
        models_root: root,
        device: ResolvedDevice::Cpu,
        precision: Precision::Fp32,
    })
}

/// `input_ids` and `attention_mask` only, as a caller of an XLM-R model passes them.
fn ids_and_mask(ids: Vec<i64>, mask: Vec<i64>, shape: [usize; 2]) -> NamedTensors {
    NamedTensors::from([
        ("input_ids".to_owned(), int64(shape, ids)),
        ("attention_mask".to_owned(), int64(shape, mask)),
    ])
}

/// The single fp32 output `name`, with its shape.
fn output(out: &NamedTensors, name: &str) -> (Vec<usize>, Vec<f32>) {
    assert_eq!(out.keys().collect::<Vec<_>>(), [name]);
    match out[name].data() {
        TensorData::Fp32(v) => (out[name].shape().to_vec(), v.clone()),
        other => panic!("not fp32: {other:?}"),
    }
}

fn assert_close(got: &[f32], want: &[f64], tolerance: f64) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(*g) - w).abs() < tolerance,
            "element {i}: {g} vs reference {w}"
        );
    }
}

/// A naive f64 forward pass of one sequence through a one-layer checkpoint, straight from
/// the Hugging Face definitions: loops, no batching, no fused projections.
struct Reference {
    tensors: std::collections::HashMap<String, Vec<f64>>,
    kind: Kind,
    eps: f64,
}

impl Reference {
    fn new(root: &Path, kind: Kind) -> Self {
        let bytes = std::fs::read(root.join("m/model.safetensors")).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let tensors = file
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                    .collect();
                (name, values)
            })
            .collect();
        let eps = if kind.is_roberta() { 1e-5 } else { 1e-12 };
        Self { tensors, kind, eps }
    }

    fn w(&self, name: &str) -> &[f64] {
        let full = format!("{}{name}", self.kind.prefix());
        self.tensors
            .get(&full)
            .or_else(|| self.tensors.get(name))
            .unwrap_or_else(|| panic!("{full}"))
    }

    fn linear(&self, name: &str, x: &[f64]) -> Vec<f64> {
        let (w, b) = (
            self.w(&format!("{name}.weight")),
            self.w(&format!("{name}.bias")),
        );
        b.iter()
            .enumerate()
            .map(|(o, bias)| bias + (0..x.len()).map(|i| w[o * x.len() + i] * x[i]).sum::<f64>())
            .collect()
    }

    fn layer_norm(&self, name: &str, x: &[f64]) -> Vec<f64> {
        #[allow(clippy::cast_precision_loss, reason = "small widths")]
        let n = x.len() as f64;
        let mean = x.iter().sum::<f64>() / n;
        let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let (w, b) = (
            self.w(&format!("{name}.weight")),
            self.w(&format!("{name}.bias")),
        );
        x.iter()
            .enumerate()
            .map(|(i, v)| (v - mean) / (var + self.eps).sqrt() * w[i] + b[i])
            .collect()
    }

    /// The last hidden state of one sequence (segment ids `types`, `mask` false at
    /// padding), token by token.
    fn hidden(&self, ids: &[usize], types: &[usize], mask: &[bool]) -> Vec<Vec<f64>> {
        let pad = usize::try_from(PAD).unwrap();
        let mut real = 0;
        let x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                // RoBERTa: real tokens count up from PAD + 1; padding sits at PAD.
                let position = if !self.kind.is_roberta() {
                    i
                } else if id == pad {
                    pad
                } else {
                    real += 1;
                    pad + real
                };
                let e: Vec<f64> = (0..HIDDEN)
                    .map(|d| {
                        self.w("embeddings.word_embeddings.weight")[id * HIDDEN + d]
                            + self.w("embeddings.position_embeddings.weight")[position * HIDDEN + d]
                            + self.w("embeddings.token_type_embeddings.weight")
                                [types[i] * HIDDEN + d]
                    })
                    .collect();
                self.layer_norm("embeddings.LayerNorm", &e)
            })
            .collect();
        let p = "encoder.layer.0";
        let q: Vec<_> = x
            .iter()
            .map(|t| self.linear(&format!("{p}.attention.self.query"), t))
            .collect();
        let k: Vec<_> = x
            .iter()
            .map(|t| self.linear(&format!("{p}.attention.self.key"), t))
            .collect();
        let v: Vec<_> = x
            .iter()
            .map(|t| self.linear(&format!("{p}.attention.self.value"), t))
            .collect();
        let (heads, d) = (2, HIDDEN / 2);
        #[allow(clippy::cast_precision_loss, reason = "small widths")]
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = Vec::new();
        for (t, x_t) in x.iter().enumerate() {
            let mut context = vec![0.0; HIDDEN];
            for h in 0..heads {
                let r = h * d..(h + 1) * d;
                let scores: Vec<f64> = (0..ids.len())
                    .map(|s| {
                        if mask[s] {
                            q[t][r.clone()]
                                .iter()
                                .zip(&k[s][r.clone()])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                * scale
                        } else {
                            f64::NEG_INFINITY
                        }
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exp: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = exp.iter().sum();
                for (s, e) in exp.iter().enumerate() {
                    for j in r.clone() {
                        context[j] += e / total * v[s][j];
                    }
                }
            }
            let attended = self.linear(&format!("{p}.attention.output.dense"), &context);
            let attended: Vec<f64> = attended.iter().zip(x_t).map(|(a, b)| a + b).collect();
            let attended = self.layer_norm(&format!("{p}.attention.output.LayerNorm"), &attended);
            let inner: Vec<f64> = self
                .linear(&format!("{p}.intermediate.dense"), &attended)
                .into_iter()
                .map(|u| 0.5 * u * (1.0 + erf(u / std::f64::consts::SQRT_2)))
                .collect();
            let y = self.linear(&format!("{p}.output.dense"), &inner);
            let y: Vec<f64> = y.iter().zip(&attended).map(|(a, b)| a + b).collect();
            out.push(self.layer_norm(&format!("{p}.output.LayerNorm"), &y));
        }
        out
    }

    /// The classifier's logits for one sequence: `out(tanh(dense(h[0])))`.
    fn logits(&self, ids: &[usize], types: &[usize], mask: &[bool]) -> Vec<f64> {
        let first = &self.hidden(ids, types, mask)[0];
        let [dense, out] = match self.kind {
            Kind::BertClassifier => ["pooler.dense", "classifier"],
            _ => ["classifier.dense", "classifier.out_proj"],
        };
        let pooled: Vec<f64> = self
            .linear(dense, first)
            .into_iter()
            .map(f64::tanh)
            .collect();
        self.linear(out, &pooled)
    }
}

/// erf by Abramowitz and Stegun 7.1.26 (error below 1.5e-7), enough for a reference.
fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    (1.0 - poly * (-x * x).exp()).copysign(x)
}

fn usizes(ids: &[i64]) -> Vec<usize> {
    ids.iter().map(|&i| usize::try_from(i).unwrap()).collect()
}

#[test]
fn roberta_position_ids_count_real_tokens_from_past_the_padding_index() {
    // Two rows of 5: right padding, then left padding; padding_idx 1.
    let ids = [0, 7, 2, 1, 1, 1, 1, 0, 9, 2];
    assert_eq!(
        crate::bert::roberta_position_ids(&ids, 5, 1),
        [2, 3, 4, 1, 1, 1, 1, 2, 3, 4]
    );
    // Another padding index shifts every real position with it.
    assert_eq!(
        crate::bert::roberta_position_ids(&[3, 3, 5], 3, 0),
        [1, 2, 3]
    );
}

#[test]
fn an_xlmr_encoder_matches_a_naive_reference() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrEncoder, 0);
    let model = load_spec(root.path(), &spec).unwrap();
    let ids = vec![0, 5, 17, 9, 2];
    let (shape, got) = output(
        &model
            .infer(&ids_and_mask(ids.clone(), vec![1; 5], [1, 5]))
            .unwrap(),
        LAST_HIDDEN_STATE,
    );
    assert_eq!(shape, [1, 5, HIDDEN]);
    let want: Vec<f64> = Reference::new(root.path(), Kind::XlmrEncoder)
        .hidden(&usizes(&ids), &[0; 5], &[true; 5])
        .concat();
    assert_close(&got, &want, 1e-4);
}

#[test]
fn an_xlmr_text_gives_the_same_vectors_alone_and_padded_on_either_side() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrEncoder, 0);
    let model = load_spec(root.path(), &spec).unwrap();
    let alone = output(
        &model
            .infer(&ids_and_mask(vec![0, 5, 17, 2], vec![1; 4], [1, 4]))
            .unwrap(),
        LAST_HIDDEN_STATE,
    )
    .1;
    // Row 0 padded on the right, row 1 on the left (positions follow the real tokens,
    // not the column), row 2 a longer text that sets the batch's width.
    let batch = ids_and_mask(
        vec![
            0, 5, 17, 2, PAD, PAD, //
            PAD, PAD, 0, 5, 17, 2, //
            0, 5, 17, 9, 11, 2,
        ],
        vec![
            1, 1, 1, 1, 0, 0, //
            0, 0, 1, 1, 1, 1, //
            1, 1, 1, 1, 1, 1,
        ],
        [3, 6],
    );
    let (shape, padded) = output(&model.infer(&batch).unwrap(), LAST_HIDDEN_STATE);
    assert_eq!(shape, [3, 6, HIDDEN]);
    let row = |r: usize, from: usize| &padded[(r * 6 + from) * HIDDEN..(r * 6 + from + 4) * HIDDEN];
    for (a, b) in alone.iter().zip(row(0, 0)) {
        assert!((a - b).abs() < 1e-5, "right padding: {a} vs {b}");
    }
    for (a, b) in alone.iter().zip(row(1, 2)) {
        assert!((a - b).abs() < 1e-5, "left padding: {a} vs {b}");
    }
    // token_type_ids of zeros, as a generic text preset passes them, change nothing.
    let mut with_types = ids_and_mask(vec![0, 5, 17, 2], vec![1; 4], [1, 4]);
    with_types.insert("token_type_ids".into(), int64([1, 4], vec![0; 4]));
    let typed = output(&model.infer(&with_types).unwrap(), LAST_HIDDEN_STATE).1;
    assert_eq!(typed, alone);
}

#[test]
fn rows_run_in_parallel_groups_equal_each_row_alone_and_the_reference() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrEncoder, 0);
    let model = load_spec(root.path(), &spec).unwrap();
    // 9 rows of 16 tokens (144, enough for groups of rows on each of the pool's
    // threads), of every length in a shuffled order (the model runs them shortest first),
    // padded on the right.
    let (rows, seq) = (9, POSITIONS);
    let mut ids = Vec::new();
    let mut mask = Vec::new();
    let mut texts = Vec::new();
    for row in 0..rows {
        let pad = (row * 4) % rows;
        let real = seq - pad;
        let text: Vec<i64> = (0..real)
            .map(|i| i64::try_from((row * 7 + i * 3) % (VOCAB - 2)).unwrap() + 2)
            .collect();
        ids.extend(text.iter().copied().chain(std::iter::repeat_n(PAD, pad)));
        mask.extend(std::iter::repeat_n(1, real).chain(std::iter::repeat_n(0, pad)));
        texts.push(text);
    }
    let (shape, batched) = output(
        &model.infer(&ids_and_mask(ids, mask, [rows, seq])).unwrap(),
        LAST_HIDDEN_STATE,
    );
    assert_eq!(shape, [rows, seq, HIDDEN]);
    let reference = Reference::new(root.path(), Kind::XlmrEncoder);
    for (row, text) in texts.iter().enumerate() {
        let n = text.len();
        let alone = output(
            &model
                .infer(&ids_and_mask(text.clone(), vec![1; n], [1, n]))
                .unwrap(),
            LAST_HIDDEN_STATE,
        )
        .1;
        let in_batch = &batched[row * seq * HIDDEN..(row * seq + n) * HIDDEN];
        for (a, b) in alone.iter().zip(in_batch) {
            assert!(
                (a - b).abs() <= 1e-5,
                "row {row}: {a} alone, {b} in the batch"
            );
        }
        let want = reference
            .hidden(&usizes(text), &vec![0; n], &vec![true; n])
            .concat();
        assert_close(in_batch, &want, 1e-4);
        // The padding after the last real token is cut, not computed.
        let padding = &batched[(row * seq + n) * HIDDEN..(row + 1) * seq * HIDDEN];
        assert!(padding.iter().all(|&v| v == 0.0), "row {row}: {padding:?}");
    }
}

#[test]
fn every_worker_of_a_pool_computes_what_the_model_computes_alone() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrEncoder, 0);
    // Three threads: two workers get shares of 2 and 1, eight workers one each.
    let provider = CandleProvider::with_config(CandleProviderConfig {
        threads: NonZeroUsize::new(3),
    });
    let model = load_spec_on(&provider, root.path(), &spec).unwrap();
    // Rows of every length, enough of them to be cut into groups on each share's threads.
    let (rows, seq) = (9, POSITIONS);
    let ids: Vec<i64> = (0..rows * seq)
        .map(|i| i64::try_from((i * 5) % (VOCAB - 2)).unwrap() + 2)
        .collect();
    let mask: Vec<i64> = (0..rows * seq)
        .map(|i| i64::from(i % seq < seq - (i / seq) % 7))
        .collect();
    let batch = ids_and_mask(ids, mask, [rows, seq]);
    let alone = output(&model.infer(&batch).unwrap(), LAST_HIDDEN_STATE).1;
    assert!(alone.iter().any(|&v| v != 0.0));
    for (index, count, running) in [(0, 2, 2), (1, 2, 2), (5, 8, 3), (1, 2, 1), (0, 1, 1)] {
        let slot = WorkerSlot {
            index,
            count,
            running,
        };
        let direct = output(&model.infer_on(&batch, slot).unwrap(), LAST_HIDDEN_STATE).1;
        // As a preset sees it: the model bound to the worker.
        let bound = output(
            &model.as_ref().on_worker(slot).infer(&batch).unwrap(),
            LAST_HIDDEN_STATE,
        )
        .1;
        assert_eq!(direct, alone, "worker {index} of {count}");
        assert_eq!(bound, alone, "worker {index} of {count}, bound");
    }
    // Bad input is refused the same way on a worker.
    let err = model
        .infer_on(
            &NamedTensors::new(),
            WorkerSlot {
                index: 1,
                count: 2,
                running: 2,
            },
        )
        .unwrap_err();
    assert_error(&err, ErrorCode::InvalidInput, &["input_ids"]);
}

#[test]
fn an_xlmr_sequence_takes_as_many_tokens_as_positions_past_the_padding_index() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrEncoder, 0);
    let model = load_spec(root.path(), &spec).unwrap();
    // POSITIONS + 2 rows, the first two (0 and PAD) never a real token's.
    let fits = model.infer(&ids_and_mask(
        vec![5; POSITIONS],
        vec![1; POSITIONS],
        [1, POSITIONS],
    ));
    assert!(fits.is_ok(), "{fits:?}");
    let err = model
        .infer(&ids_and_mask(
            vec![5; POSITIONS + 1],
            vec![1; POSITIONS + 1],
            [1, POSITIONS + 1],
        ))
        .unwrap_err();
    assert_error(
        &err,
        ErrorCode::InvalidInput,
        &["17 tokens", "16 positions"],
    );
    // type_vocab_size 1: a segment id of 1 is refused, not read past the table.
    let mut typed = ids_and_mask(vec![0, 2], vec![1, 1], [1, 2]);
    typed.insert("token_type_ids".into(), int64([1, 2], vec![0, 1]));
    let err = model.infer(&typed).unwrap_err();
    assert_error(&err, ErrorCode::InvalidInput, &["token_type_ids", "0..1"]);
}

#[test]
fn roberta_and_task_head_prefixes_load_as_xlm_roberta_does() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrEncoder, 0);
    let input = ids_and_mask(vec![0, 5, 17, 2], vec![1; 4], [1, 4]);
    let xlmr = output(
        &load_spec(root.path(), &spec)
            .unwrap()
            .infer(&input)
            .unwrap(),
        LAST_HIDDEN_STATE,
    )
    .1;
    // model_type roberta: the same model; the weights under `roberta.` (as a task head
    // saves them) and no architectures: the same encoder and output.
    let mut config = Kind::XlmrEncoder.config(0);
    config["model_type"] = json!("roberta");
    config.as_object_mut().unwrap().remove("architectures");
    std::fs::write(root.path().join("m/config.json"), config.to_string()).unwrap();
    let mut tensors = Kind::XlmrEncoder.tensors(0);
    for (name, _) in &mut tensors {
        name.insert_str(0, "roberta.");
    }
    std::fs::write(
        root.path().join("m/model.safetensors"),
        random_safetensors(&tensors, 7),
    )
    .unwrap();
    let roberta = output(
        &load_spec(root.path(), &spec)
            .unwrap()
            .infer(&input)
            .unwrap(),
        LAST_HIDDEN_STATE,
    )
    .1;
    assert_eq!(xlmr, roberta);
}

#[test]
fn an_xlmr_cross_encoder_returns_logits_from_its_classification_head() {
    let root = tempfile::tempdir().unwrap();
    // No modules.json although the spec lists the folder: cross-encoders have none.
    let spec = write_kind(root.path(), Kind::XlmrClassifier, 3);
    assert!(!root.path().join("m/modules.json").exists());
    let model = load_spec(root.path(), &spec).unwrap();
    let a = [0, 5, 17, 2, 2, 9, 2];
    let b = [0, 12, 2, 2, 4, 2];
    let mut ids = a.to_vec();
    ids.extend(b);
    ids.push(PAD);
    let mut mask = vec![1; 13];
    mask.push(0);
    let (shape, got) = output(
        &model.infer(&ids_and_mask(ids, mask, [2, 7])).unwrap(),
        LOGITS,
    );
    assert_eq!(shape, [2, 3]);
    let reference = Reference::new(root.path(), Kind::XlmrClassifier);
    // Row b is padded: the reference sees it alone.
    let mut want = reference.logits(&usizes(&a), &[0; 7], &[true; 7]);
    want.extend(reference.logits(&usizes(&b), &[0; 6], &[true; 6]));
    assert_close(&got, &want, 1e-4);
}

#[test]
fn a_bert_cross_encoder_returns_logits_from_its_pooler_and_classifier() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::BertClassifier, 1);
    let model = load_spec(root.path(), &spec).unwrap();
    // A query-passage pair: segment ids 0 then 1.
    let ids = vec![1, 5, 3, 7, 9, 3];
    let types = vec![0, 0, 0, 1, 1, 1];
    let mut input = ids_and_mask(ids.clone(), vec![1; 6], [1, 6]);
    input.insert("token_type_ids".into(), int64([1, 6], types.clone()));
    let (shape, got) = output(&model.infer(&input).unwrap(), LOGITS);
    assert_eq!(shape, [1, 1]);
    let reference = Reference::new(root.path(), Kind::BertClassifier);
    let want = reference.logits(&usizes(&ids), &usizes(&types), &[true; 6]);
    assert_close(&got, &want, 1e-4);
    // Segment ids matter to a BERT cross-encoder: without them (zeros) the score differs.
    let plain = output(
        &model
            .infer(&ids_and_mask(ids.clone(), vec![1; 6], [1, 6]))
            .unwrap(),
        LOGITS,
    )
    .1;
    assert_close(
        &plain,
        &reference.logits(&usizes(&ids), &[0; 6], &[true; 6]),
        1e-4,
    );
    assert!((got[0] - plain[0]).abs() > 1e-5, "{got:?} vs {plain:?}");
}

#[test]
fn a_missing_classifier_tensor_is_named() {
    let root = tempfile::tempdir().unwrap();
    for (kind, name) in [
        (Kind::XlmrClassifier, "classifier.out_proj.weight"),
        (Kind::XlmrClassifier, "classifier.dense.bias"),
        (Kind::BertClassifier, "bert.pooler.dense.weight"),
        (Kind::BertClassifier, "classifier.bias"),
    ] {
        let spec = write_kind(root.path(), kind, 2);
        let mut tensors = kind.tensors(2);
        tensors.retain(|(n, _)| n != name);
        std::fs::write(
            root.path().join("m/model.safetensors"),
            random_safetensors(&tensors, 7),
        )
        .unwrap();
        // Validation finds it (load_spec validates first), and so does a load alone.
        let err = load_spec(root.path(), &spec).err().unwrap();
        assert_error(
            &err,
            ErrorCode::InvalidSpec,
            &["model.safetensors", &format!("'{name}'"), "missing"],
        );
        let artifacts = verified_folder(root.path());
        let err = CandleProvider::new()
            .load(&LoadRequest {
                spec: &spec,
                artifacts: &artifacts,
                models_root: root.path(),
                device: ResolvedDevice::Cpu,
                precision: Precision::Fp32,
            })
            .err()
            .unwrap();
        assert_error(&err, ErrorCode::InvalidSpec, &[name, "missing"]);
    }
}

#[test]
fn a_classifier_whose_labels_disagree_with_its_weights_is_named() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrClassifier, 2);
    // config.json says 4 labels; the out_proj rows are 2.
    let mut config = Kind::XlmrClassifier.config(4);
    std::fs::write(root.path().join("m/config.json"), config.to_string()).unwrap();
    let err = load_spec(root.path(), &spec).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &["classifier.out_proj.weight", "[2, 8]", "[4, 8]"],
    );
    // id2label and num_labels that disagree are refused, naming both.
    config["id2label"] = json!({"0": "a", "1": "b"});
    std::fs::write(root.path().join("m/config.json"), config.to_string()).unwrap();
    let err = load_spec(root.path(), &spec).err().unwrap();
    assert_error(
        &err,
        ErrorCode::InvalidSpec,
        &["config.json", "id2label", "num_labels"],
    );
    // id2label alone sets the count (2 here, matching the weights).
    config.as_object_mut().unwrap().remove("num_labels");
    std::fs::write(root.path().join("m/config.json"), config.to_string()).unwrap();
    let model = load_spec(root.path(), &spec).unwrap();
    let out = model
        .infer(&ids_and_mask(vec![0, 5, 2], vec![1; 3], [1, 3]))
        .unwrap();
    assert_eq!(out[LOGITS].shape(), &[1, 2]);
}

#[test]
fn a_classifier_schema_naming_another_output_is_invalid_spec() {
    let root = tempfile::tempdir().unwrap();
    let mut spec = write_kind(root.path(), Kind::BertClassifier, 1);
    let schema = |json: serde_json::Value| serde_json::from_value(json).unwrap();
    for (tensors, needle) in [
        (
            json!([{ "name": "last_hidden_state", "dtype": "fp32", "shape": [-1, -1, 8] }]),
            "'last_hidden_state'",
        ),
        (
            json!([{ "name": "logits", "dtype": "fp16", "shape": [-1, 1] }]),
            "Fp16",
        ),
        (
            json!([{ "name": "logits", "dtype": "fp32", "shape": [-1, 2] }]),
            "[-1, 1]",
        ),
    ] {
        spec.output_schema = schema(tensors);
        let err = load_spec(root.path(), &spec).err().unwrap();
        assert_error(&err, ErrorCode::InvalidSpec, &[needle, "output_schema"]);
    }
    // The contract itself is accepted; the output is named logits whatever the schema.
    spec.output_schema = schema(json!([{ "name": "logits", "dtype": "fp32", "shape": [-1, 1] }]));
    let model = load_spec(root.path(), &spec).unwrap();
    let out = model
        .infer(&ids_and_mask(vec![1, 5, 3], vec![1; 3], [1, 3]))
        .unwrap();
    assert_eq!(out.keys().collect::<Vec<_>>(), [LOGITS]);
}

#[test]
fn a_classifier_answers_an_empty_batch_and_refuses_empty_rows() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrClassifier, 3);
    let model = load_spec(root.path(), &spec).unwrap();
    let (shape, values) = output(
        &model.infer(&ids_and_mask(vec![], vec![], [0, 4])).unwrap(),
        LOGITS,
    );
    assert_eq!(shape, [0, 3]);
    assert!(values.is_empty());
    let err = model
        .infer(&ids_and_mask(vec![], vec![], [2, 0]))
        .unwrap_err();
    assert_error(
        &err,
        ErrorCode::InvalidInput,
        &["input_ids", "at least one token"],
    );
}

#[test]
fn an_xlmr_encoder_still_needs_its_module_list() {
    let root = tempfile::tempdir().unwrap();
    let spec = write_kind(root.path(), Kind::XlmrEncoder, 0);
    std::fs::remove_file(root.path().join("m/modules.json")).unwrap();
    let err = load_spec(root.path(), &spec).err().unwrap();
    assert_error(&err, ErrorCode::WeightsMissing, &["modules.json"]);
}
