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
    SentenceEmbeddingConfig::new(max_length, pooling, normalize)
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

/// [`Echo`] that records the `[batch, seq]` shape of every call and charges `overhead`.
struct ShapeRecorder {
    shapes: std::sync::Mutex<Vec<(usize, usize)>>,
    overhead: Option<usize>,
}

impl LoadedModel for ShapeRecorder {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        let [b, s] = *inputs["input_ids"].shape() else {
            panic!("rank 2")
        };
        self.shapes.lock().unwrap().push((b, s));
        Echo.infer(inputs)
    }

    fn call_overhead_tokens(&self) -> Option<usize> {
        self.overhead
    }
}

/// A text of 30 words (32 tokens with `[CLS]` and `[SEP]`).
fn long_text() -> String {
    "the cat sat on the mat ".repeat(5)
}

/// Three copies of `long` interleaved with three texts of 3–4 tokens.
fn mixed_lengths(long: &str) -> [&str; 6] {
    [long, "cat", long, "mat", "the cat", long]
}

#[test]
fn texts_of_mixed_lengths_run_in_length_groups_and_come_back_in_order() {
    let p = preset(64);
    let long = long_text();
    // Long and short texts interleaved: two groups pad far less than one call.
    let texts = mixed_lengths(&long);
    let grouped = ShapeRecorder {
        shapes: std::sync::Mutex::new(Vec::new()),
        overhead: Some(4),
    };
    let out = p
        .run(&grouped, PresetInputs::Texts(&texts))
        .expect("embeds")
        .into_rows();
    // Each row is the text's own, whatever it ran with (Echo ignores padding).
    for (text, row) in texts.iter().zip(&out) {
        let alone = p
            .run(&Echo, PresetInputs::Texts(&[text]))
            .expect("embeds")
            .into_rows();
        assert_eq!(&alone[0], row, "{text:?}");
    }
    let shapes = grouped.shapes.into_inner().unwrap();
    assert_eq!(shapes, vec![(3, 4), (3, 32)]);
    // A served model (no overhead given) gets one call in input order.
    let served = ShapeRecorder {
        shapes: std::sync::Mutex::new(Vec::new()),
        overhead: None,
    };
    let same = p
        .run(&served, PresetInputs::Texts(&texts))
        .expect("embeds")
        .into_rows();
    assert_eq!(same, out);
    assert_eq!(served.shapes.into_inner().unwrap(), vec![(6, 32)]);
}

#[test]
fn a_token_budget_bounds_every_call_for_in_process_and_served_models() {
    let mut p = preset(64);
    let long = long_text();
    let texts = mixed_lengths(&long);
    let free = p
        .run(&Echo, PresetInputs::Texts(&texts))
        .expect("embeds")
        .into_rows();
    // 40 padded tokens a call: no two texts of 32 tokens fit together; the three short
    // ones (at most 4 tokens) do.
    p.max_batch_tokens = Some(40);
    for overhead in [Some(4), None] {
        let model = ShapeRecorder {
            shapes: std::sync::Mutex::new(Vec::new()),
            overhead,
        };
        let out = p
            .run(&model, PresetInputs::Texts(&texts))
            .expect("embeds")
            .into_rows();
        assert_eq!(out, free, "overhead {overhead:?}");
        let shapes = model.shapes.into_inner().unwrap();
        assert_eq!(
            shapes,
            vec![(3, 4), (1, 32), (1, 32), (1, 32)],
            "overhead {overhead:?}"
        );
    }
    // A budget the whole batch fits in: a served model keeps its one call, in order.
    p.max_batch_tokens = Some(6 * 32);
    let served = ShapeRecorder {
        shapes: std::sync::Mutex::new(Vec::new()),
        overhead: None,
    };
    p.run(&served, PresetInputs::Texts(&texts)).expect("embeds");
    assert_eq!(served.shapes.into_inner().unwrap(), vec![(6, 32)]);
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

/// The preset of `spec` over the files under `root`, as a load builds it.
fn preset_from_files<P>(
    spec: &ModelSpec,
    root: &Path,
    build: impl FnOnce(&ModelSpec, &VerifiedArtifacts) -> Result<P, PresetError>,
) -> Result<P, ModelError> {
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
    build(spec, &artifacts).map_err(ModelError::from)
}

#[test]
fn named_prompts_come_from_the_model_and_each_call_picks_one() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    write(root, "e5/tokenizer.json", &tokenizer_json());
    write(
        root,
        "e5/config_sentence_transformers.json",
        r#"{"prompts": {"query": "the ", "passage": "on "}, "default_prompt_name": null}"#,
    );
    let load = |params: Value| {
        preset_from_files(
            &spec_with(params, &["e5"]),
            root,
            SentenceEmbedding::from_spec,
        )
    };
    let p = load(serde_json::json!({})).expect("loads");
    assert_eq!(p.prompt_name(), None);
    let plain = p.encode(PresetInputs::Texts(&["cat"])).expect("encodes");
    assert_eq!(
        plain.tensors["input_ids"].data(),
        &TensorData::Int64(vec![2, 5, 3])
    );

    // The prompt's text goes before each text, and the signature names it.
    let query = p.with_prompt("query").expect("known prompt");
    assert_eq!(query.prompt_name(), Some("query"));
    let prompted = query
        .encode(PresetInputs::Texts(&["cat", "mat"]))
        .expect("encodes");
    assert_eq!(
        prompted.tensors["input_ids"].data(),
        &TensorData::Int64(vec![2, 4, 5, 3, 2, 4, 8, 3])
    );
    assert_eq!(query.params()["prompt"], "the ");
    assert_eq!(query.params()["prompt_name"], "query");
    let passage = p.with_prompt("passage").expect("known prompt");
    let signatures = [
        p.preprocess_signature(),
        query.preprocess_signature(),
        passage.preprocess_signature(),
    ];
    assert!(signatures.iter().all(|s| s.starts_with("pp1:")));
    assert_ne!(signatures[0], signatures[1]);
    assert_ne!(signatures[1], signatures[2]);

    // An unknown name lists the model's prompts.
    let err = ModelError::from(p.with_prompt("document").expect_err("unknown"));
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(err.details["reason"], "unknown_prompt");
    assert!(err.message.contains("passage, query"), "{}", err.message);

    // The spec may add a prompt and pick a default; the default applies to plain calls
    // and is the same computation as naming it.
    let p = load(serde_json::json!({
        "prompts": {"title": "mat "}, "default_prompt_name": "query"
    }))
    .expect("loads");
    assert_eq!(p.prompt_name(), Some("query"));
    assert_eq!(
        p.preprocess_signature(),
        p.with_prompt("query")
            .expect("known")
            .preprocess_signature()
    );
    let title = p.with_prompt("title").expect("added by the spec");
    let encoded = title
        .encode(PresetInputs::Texts(&["cat"]))
        .expect("encodes");
    assert_eq!(
        encoded.tensors["input_ids"].data(),
        &TensorData::Int64(vec![2, 8, 5, 3])
    );

    // The spec may not change a prompt the model has, nor name a default it lacks.
    let err = load(serde_json::json!({"prompts": {"query": "query: "}})).expect_err("changes");
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
    assert!(
        err.message.contains("config_sentence_transformers.json"),
        "{}",
        err.message
    );
    let err = load(serde_json::json!({"default_prompt_name": "nope"})).expect_err("no such");
    assert!(
        err.message.contains("not among its prompts"),
        "{}",
        err.message
    );

    // A model with no prompts: any name is unknown.
    write(root, "plain/tokenizer.json", &tokenizer_json());
    let p = preset_from_files(
        &spec_with(serde_json::json!({}), &["plain"]),
        root,
        SentenceEmbedding::from_spec,
    )
    .expect("loads");
    let err = p.with_prompt("query").expect_err("none");
    assert!(err.to_string().contains("defines none"), "{err}");
}

/// A cross-encoder whose logit is the sum of its input ids.
struct SumOfIds;

impl LoadedModel for SumOfIds {
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
            .chunks(s)
            .map(|row| row.iter().sum::<i64>() as f32 / 10.0)
            .collect();
        let t = Tensor::new(vec![b, 1], TensorData::Fp32(data))?;
        Ok(NamedTensors::from([(
            dp_spec::tensor_names::LOGITS.to_owned(),
            t,
        )]))
    }
}

#[test]
fn a_cross_encoder_scores_pairs_with_the_models_activation() {
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let spec = |params: Value, dir: &str| -> ModelSpec {
        serde_json::from_value(serde_json::json!({
            "model_name": "r", "model_version": "1", "role": "reranking",
            "runtime": "inprocess", "engine": "onnx", "local_artifacts": [dir],
            "preprocess_preset": "cross_encoder", "preprocess_params": params,
        }))
        .expect("valid spec")
    };
    write(root, "r/tokenizer.json", &tokenizer_json());
    write(
        root,
        "r/tokenizer_config.json",
        r#"{"model_max_length": 5}"#,
    );
    write(
        root,
        "r/config.json",
        r#"{"architectures": ["BertForSequenceClassification"], "id2label": {"0": "LABEL_0"}}"#,
    );
    let load = |params: Value, dir: &str| {
        preset_from_files(&spec(params, dir), root, CrossEncoder::from_spec)
    };
    let p = load(serde_json::json!({}), "r").expect("loads");
    assert_eq!(p.activation(), ScoreActivation::Sigmoid);
    assert_eq!(p.params()["max_length"], 5);
    assert!(p.accepts(InputKind::QueryWithDocuments));
    assert!(!p.accepts(InputKind::Texts));
    // The test tokenizer pairs as `A B` with segment ids 0 and 1; longest-first
    // truncation to 5 tokens trims the longer text.
    let (batch, truncated) = p
        .tokenizer()
        .encode_pairs("the cat", &["mat", "on the mat sat the cat"])
        .expect("encodes");
    assert_eq!(batch.seq_len, 5);
    #[rustfmt::skip]
    assert_eq!(batch.input_ids, vec![
        4, 5, 8, 0, 0,
        4, 5, 7, 4, 8,
    ]);
    assert_eq!(batch.token_type_ids, vec![0, 0, 1, 0, 0, 0, 0, 1, 1, 1]);
    assert_eq!(truncated, [false, true]);
    let out = p
        .run(
            &SumOfIds,
            PresetInputs::QueryWithDocuments {
                query: "the cat",
                documents: &["mat", "cat"],
            },
        )
        .expect("scores");
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    assert_eq!(out, PresetOutput::Scores(vec![sigmoid(1.7), sigmoid(1.4)]));
    // Pairs of mixed lengths run in length groups when calls cost nothing; the scores
    // still come back in document order.
    struct Grouped(std::sync::Mutex<usize>);
    impl LoadedModel for Grouped {
        fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
            *self.0.lock().unwrap() += 1;
            SumOfIds.infer(inputs)
        }
        fn call_overhead_tokens(&self) -> Option<usize> {
            Some(0)
        }
    }
    let documents = ["mat", "on the mat sat the cat", "cat", "on the mat"];
    let grouped = Grouped(std::sync::Mutex::new(0));
    let out = p
        .run(
            &grouped,
            PresetInputs::QueryWithDocuments {
                query: "the cat",
                documents: &documents,
            },
        )
        .expect("scores");
    assert!(*grouped.0.lock().unwrap() >= 2);
    let alone: Vec<f32> = documents
        .iter()
        .map(|d| {
            let one = p.run(
                &SumOfIds,
                PresetInputs::QueryWithDocuments {
                    query: "the cat",
                    documents: &[d],
                },
            );
            match one.expect("scores") {
                PresetOutput::Scores(s) => s[0],
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(out, PresetOutput::Scores(alone));

    // The activation sentence-transformers recorded, and a spec restating it.
    write(
        root,
        "i/config.json",
        r#"{"architectures": ["XLMRobertaForSequenceClassification"], "num_labels": 1,
            "sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}"#,
    );
    write(root, "i/tokenizer.json", &tokenizer_json());
    let p = load(serde_json::json!({"activation": "identity"}), "i").expect("loads");
    let out = p
        .run(
            &SumOfIds,
            PresetInputs::QueryWithDocuments {
                query: "the",
                documents: &["cat"],
            },
        )
        .expect("scores");
    assert_eq!(out, PresetOutput::Scores(vec![0.9]));
    let err = load(serde_json::json!({"activation": "sigmoid"}), "i").expect_err("disagrees");
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);

    // An embedding model (no classification head) and a many-label classifier are refused
    // at load, naming the fix.
    write(root, "e/tokenizer.json", &tokenizer_json());
    write(root, "e/config.json", r#"{"architectures": ["BertModel"]}"#);
    let err = load(serde_json::json!({}), "e").expect_err("no head");
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
    assert!(
        err.message.contains("classification head"),
        "{}",
        err.message
    );
    write(
        root,
        "e/config.json",
        r#"{"architectures": ["BertForSequenceClassification"], "num_labels": 3}"#,
    );
    let err = load(serde_json::json!({}), "e").expect_err("three labels");
    assert!(err.message.contains("3 labels"), "{}", err.message);

    // Outputs without logits are refused as bad output.
    let err = p
        .run(
            &Echo,
            PresetInputs::QueryWithDocuments {
                query: "the",
                documents: &["cat"],
            },
        )
        .expect_err("no logits");
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert!(err.message.contains("\"logits\""), "{}", err.message);
}
