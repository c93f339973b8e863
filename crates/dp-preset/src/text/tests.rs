#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails loudly on any error"
)]

use std::path::Path;

use dp_spec::{ErrorCode, LoadedModel, ModelError};

use super::*;

/// A BERT-like tokenizer: lowercase, whitespace split, word-level vocabulary, `[CLS] …
/// [SEP]` around each text.
fn tokenizer_json() -> String {
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "[PAD]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "[UNK]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 2, "content": "[CLS]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 3, "content": "[SEP]", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "the": 4, "cat": 5, "sat": 6, "on": 7, "mat": 8}, "unk_token": "[UNK]"}
    })
    .to_string()
}

fn config(max_length: usize, pooling: Pooling, normalize: bool) -> SentenceEmbeddingConfig {
    SentenceEmbeddingConfig {
        max_length,
        pooling,
        normalize,
        query_prefix: None,
    }
}

fn preset(max_length: usize) -> SentenceEmbedding {
    SentenceEmbedding::from_tokenizer_json(
        tokenizer_json().as_bytes(),
        "t/tokenizer.json",
        config(max_length, Pooling::Mean, true),
    )
    .expect("valid tokenizer")
}

#[test]
fn tokenizes_pads_to_the_longest_and_truncates() {
    let p = preset(16);
    let batch = p.tokenize(&["The cat sat", "mat", "dog"]).expect("encodes");
    assert_eq!((batch.batch, batch.seq_len), (3, 5));
    #[rustfmt::skip]
    assert_eq!(batch.input_ids, vec![
        2, 4, 5, 6, 3,
        2, 8, 3, 0, 0,
        2, 1, 3, 0, 0,
    ]);
    #[rustfmt::skip]
    assert_eq!(batch.attention_mask, vec![
        1, 1, 1, 1, 1,
        1, 1, 1, 0, 0,
        1, 1, 1, 0, 0,
    ]);
    assert_eq!(batch.token_type_ids, vec![0; 15]);

    // max_length counts the special tokens: [CLS] the cat [SEP].
    let short = preset(4)
        .tokenize(&["the cat sat on the mat"])
        .expect("encodes");
    assert_eq!(short.input_ids, vec![2, 4, 5, 3]);
}

#[test]
fn tensors_follow_the_input_schema() {
    let mut p = preset(8);
    let batch = p.tokenize(&["the cat", "on"]).expect("encodes");
    let tensors = p.tensors(&batch).expect("tensors");
    assert_eq!(
        tensors.keys().collect::<Vec<_>>(),
        ["attention_mask", "input_ids", "token_type_ids"]
    );
    assert_eq!(tensors["input_ids"].shape(), &[2, 4]);
    p.inputs = [true, true, false];
    assert!(
        !p.tensors(&batch)
            .expect("tensors")
            .contains_key("token_type_ids")
    );
}

#[test]
fn pooling_matches_hand_computed_values() {
    // Two texts, three tokens, two dims; the second text has one padding token.
    #[rustfmt::skip]
    let hidden = [
        1.0, -2.0,   3.0, 4.0,   5.0, 0.0,
        2.0, 2.0,   -4.0, 8.0,   99.0, 99.0,
    ];
    let mask = [1, 1, 1, 1, 1, 0];
    assert_eq!(
        pool(Pooling::Mean, &hidden, [2, 3, 2], &mask),
        vec![vec![3.0, 2.0 / 3.0], vec![-1.0, 5.0]]
    );
    assert_eq!(
        pool(Pooling::Max, &hidden, [2, 3, 2], &mask),
        vec![vec![5.0, 4.0], vec![2.0, 8.0]]
    );
    assert_eq!(
        pool(Pooling::Cls, &hidden, [2, 3, 2], &mask),
        vec![vec![1.0, -2.0], vec![2.0, 2.0]]
    );
    // The last real token: the third of the first text, the second of the second.
    assert_eq!(
        pool(Pooling::LastToken, &hidden, [2, 3, 2], &mask),
        vec![vec![5.0, 0.0], vec![-4.0, 8.0]]
    );
    // Left padding (decoder tokenizers): still the last real token.
    assert_eq!(
        pool(Pooling::LastToken, &hidden, [2, 3, 2], &[0, 1, 1, 0, 1, 0]),
        vec![vec![5.0, 0.0], vec![-4.0, 8.0]]
    );
    // All padding: the mean is 0, not NaN; the last token is a zero vector (s-t's masked
    // gather), not the padding's values.
    assert_eq!(
        pool(Pooling::Mean, &[7.0, 7.0], [1, 1, 2], &[0]),
        vec![vec![0.0, 0.0]]
    );
    assert_eq!(
        pool(Pooling::LastToken, &[7.0, 7.0], [1, 1, 2], &[0]),
        vec![vec![0.0, 0.0]]
    );
}

#[test]
fn normalization_gives_unit_vectors_and_keeps_zero() {
    let mut v = [1.0_f32, 2.0, 2.0];
    l2_normalize(&mut v);
    assert_eq!(v, [1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]);
    let mut zero = [0.0_f32; 3];
    l2_normalize(&mut zero);
    assert_eq!(zero, [0.0; 3]);
}

/// A model whose `last_hidden_state` is token id and position: [id, pos].
struct Echo;

impl LoadedModel for Echo {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        let ids = &inputs["input_ids"];
        let [b, s] = *ids.shape() else {
            panic!("rank 2")
        };
        let TensorData::Int64(ids) = ids.data() else {
            panic!("int64")
        };
        #[allow(clippy::cast_precision_loss)]
        let data = ids
            .iter()
            .enumerate()
            .flat_map(|(i, &id)| [id as f32, (i % s) as f32])
            .collect();
        let t = Tensor::new(vec![b, s, 2], TensorData::Fp32(data))?;
        Ok(NamedTensors::from([(LAST_HIDDEN_STATE.to_owned(), t)]))
    }
}

#[test]
fn embed_pools_real_tokens_normalizes_and_batches() {
    let mut p = SentenceEmbedding::from_tokenizer_json(
        tokenizer_json().as_bytes(),
        "tokenizer.json",
        config(8, Pooling::Mean, false),
    )
    .expect("valid");
    p.batch_size = 1;
    // "mat": ids [2, 8, 3] at positions 0..3 → mean [13/3, 1]. "the cat": [2,4,5,3] →
    // mean [14/4, 1.5].
    let out = p
        .run(&Echo, PresetInputs::Texts(&["mat", "the cat"]))
        .expect("embeds")
        .into_rows();
    assert_eq!(out, vec![vec![13.0 / 3.0, 1.0], vec![3.5, 1.5]]);
    p.config.normalize = true;
    let out = p
        .run(&Echo, PresetInputs::Texts(&["the cat"]))
        .expect("embeds")
        .into_rows();
    let norm = 3.5_f32.hypot(1.5);
    assert_eq!(out, vec![vec![3.5 / norm, 1.5 / norm]]);
}

#[test]
fn a_bad_tokenizer_is_invalid_spec_naming_the_file() {
    let err = SentenceEmbedding::from_tokenizer_json(
        b"{not json",
        "m/tokenizer.json",
        config(8, Pooling::Mean, true),
    )
    .expect_err("bad json");
    let err = ModelError::from(err);
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
    assert!(err.message.contains("m/tokenizer.json"), "{}", err.message);
    assert_eq!(err.details["file"], "m/tokenizer.json");
}

fn spec_with(params: Value, artifacts: &[&str]) -> ModelSpec {
    serde_json::from_value(serde_json::json!({
        "model_name": "m", "model_version": "1", "role": "text_embedding",
        "runtime": "inprocess", "engine": "onnx", "local_artifacts": artifacts,
        "preprocess_preset": "sentence_embedding", "preprocess_params": params,
    }))
    .expect("valid spec")
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, text).expect("write");
}

#[test]
fn settings_come_from_params_then_files_and_must_agree() {
    /// The preset over the files as verified (unpinned): what a load does.
    fn from_spec(spec: &ModelSpec, root: &Path) -> Result<SentenceEmbedding, ModelError> {
        let opened = dp_digest::open_verified(
            root,
            &spec.local_artifacts,
            &dp_digest::ArtifactPins::default(),
            &dp_digest::VerifyOptions::default(),
        )
        .expect("walk");
        let artifacts = opened
            .artifacts
            .unwrap_or_else(|| VerifiedArtifacts::empty(root));
        SentenceEmbedding::from_spec(spec, &artifacts).map_err(ModelError::from)
    }

    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    write(root, "m/tokenizer.json", &tokenizer_json());
    write(
        root,
        "m/sentence_bert_config.json",
        r#"{"max_seq_length": 6}"#,
    );
    write(
        root,
        "m/1_Pooling/config.json",
        r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    );
    write(
        root,
        "m/modules.json",
        r#"[{"type": "sentence_transformers.models.Transformer"},
            {"type": "sentence_transformers.models.Normalize"}]"#,
    );
    // sentence-transformers' last-token pooling (decoder embedders), and a mode the preset
    // does not compute, refused naming the ones it does.
    write(root, "l/tokenizer.json", &tokenizer_json());
    write(
        root,
        "l/1_Pooling/config.json",
        r#"{"pooling_mode_lasttoken": true, "pooling_mode_mean_tokens": false}"#,
    );
    let last = from_spec(&spec_with(serde_json::json!({}), &["l"]), root).expect("loads");
    assert_eq!(last.config().pooling, Pooling::LastToken);
    write(
        root,
        "l/1_Pooling/config.json",
        r#"{"pooling_mode_weightedmean_tokens": true}"#,
    );
    let err = from_spec(&spec_with(serde_json::json!({}), &["l"]), root).expect_err("mode");
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
    assert!(
        err.message.contains("(mean, cls, max, last_token)"),
        "{}",
        err.message
    );
    // Files only: a directory artifact is searched.
    let from_files = from_spec(&spec_with(serde_json::json!({}), &["m"]), root).expect("loads");
    assert_eq!(from_files.config(), &config(6, Pooling::Cls, true));
    // Params that agree give the same signature.
    let params = serde_json::json!({"max_length": 6, "pooling": "cls", "normalize": true});
    let listed = [
        "m/tokenizer.json",
        "m/sentence_bert_config.json",
        "m/1_Pooling/config.json",
        "m/modules.json",
    ];
    let both = from_spec(&spec_with(params, &listed), root).expect("loads");
    assert_eq!(
        both.preprocess_signature(),
        from_files.preprocess_signature()
    );
    // Params that contradict a file name it.
    let err = from_spec(
        &spec_with(serde_json::json!({"pooling": "mean"}), &listed),
        root,
    )
    .expect_err("disagrees");
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
    assert!(
        err.message.contains("1_Pooling/config.json"),
        "{}",
        err.message
    );
    // A bad parameter.
    let err = from_spec(
        &spec_with(
            serde_json::json!({"pooling": "median"}),
            &["m/tokenizer.json"],
        ),
        root,
    )
    .expect_err("bad pooling");
    assert!(
        err.message.contains("preprocess_params.pooling"),
        "{}",
        err.message
    );
    // No tokenizer.
    let err = from_spec(&spec_with(serde_json::json!({}), &["x"]), root).expect_err("no tokenizer");
    assert!(err.message.contains("tokenizer.json"), "{}", err.message);
    // A malformed pooling file.
    write(root, "n/tokenizer.json", &tokenizer_json());
    write(root, "n/1_Pooling/config.json", "{");
    let err = from_spec(&spec_with(serde_json::json!({}), &["n"]), root).expect_err("bad json");
    assert_eq!(
        err.details["file"],
        root.join("n/1_Pooling/config.json").display().to_string()
    );
}
