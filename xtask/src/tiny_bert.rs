//! `cargo xtask tiny-bert`: generates the tiny BERT that `dp demo` embeds in the binary.
//!
//! Everything is a pure function of the constants below: weights come from a seeded
//! SplitMix64 generator mapped to floats with exact arithmetic only (no libm calls, whose
//! results may differ between platforms), the safetensors file is written by hand with a
//! fixed tensor order, and JSON keys keep insertion order. So the command reproduces the
//! committed bytes exactly; `--check` (and a unit test) fail when they differ.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::fsutil::{sha256_hex, write_atomic};

/// Where the model files go, relative to the workspace root.
pub(crate) const MODEL_DIR: &str = "crates/dp-cli/demo/models/tiny-bert";

/// Where its spec goes, relative to the workspace root.
pub(crate) const SPEC_PATH: &str = "crates/dp-cli/demo/catalog/text_embedding/tiny-bert.yaml";

/// The generator's seed.
const SEED: u64 = 0x0d70_6d6f_6465_6c73;
const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const HEADS: usize = 4;
const INTERMEDIATE: usize = 64;
const MAX_POSITIONS: usize = 64;
const TYPE_VOCAB: usize = 2;

/// Whole words the demo sentences use, so they tokenize into words rather than letters.
const WORDS: &[&str] = &[
    "the",
    "a",
    "an",
    "is",
    "are",
    "on",
    "in",
    "of",
    "and",
    "to",
    "with",
    "cat",
    "cats",
    "dog",
    "dogs",
    "sat",
    "sits",
    "mat",
    "rug",
    "car",
    "road",
    "fast",
    "slow",
    "red",
    "blue",
    "model",
    "models",
    "data",
    "pipeline",
    "offline",
    "runs",
    "text",
    "embedding",
    "weather",
    "sunny",
    "rain",
    "today",
    "tomorrow",
    "music",
    "plays",
    "loud",
    "quiet",
    "kitten",
    "puppy",
];

/// One generated file: its path relative to the workspace root and its bytes.
pub(crate) struct GeneratedFile {
    /// Relative path.
    pub(crate) path: String,
    /// Content.
    pub(crate) bytes: Vec<u8>,
}

/// SplitMix64: tiny, well distributed, and the same on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`, from the top 24 bits (exactly representable in f32).
    fn uniform(&mut self, scale: f32) -> f32 {
        #[allow(
            clippy::cast_precision_loss,
            reason = "a 24-bit integer is exact in f32"
        )]
        let unit = (self.next_u64() >> 40) as f32 / (1_u32 << 24) as f32;
        (unit * 2.0 - 1.0) * scale
    }
}

/// The WordPiece vocabulary: special tokens, whole words, characters and their `##` forms.
fn vocabulary() -> Vec<String> {
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let chars: Vec<char> = ('a'..='z').chain('0'..='9').collect();
    let punctuation = ['.', ',', '!', '?', '\'', '-', ':', ';', '(', ')'];
    vocab.extend(WORDS.iter().map(|w| (*w).to_owned()));
    vocab.extend(chars.iter().chain(&punctuation).map(char::to_string));
    vocab.extend(chars.iter().map(|c| format!("##{c}")));
    vocab
}

/// `(name, shape, values)` of every tensor, in file order.
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn weights(vocab_size: usize) -> Tensors {
    let mut rng = SplitMix64(SEED);
    let mut tensors: Tensors = Vec::new();
    let mut random = |name: String, shape: Vec<usize>, scale: f32, tensors: &mut Tensors| {
        let n = shape.iter().product();
        let values = (0..n).map(|_| rng.uniform(scale)).collect();
        tensors.push((name, shape, values));
    };
    random(
        "embeddings.word_embeddings.weight".into(),
        vec![vocab_size, HIDDEN],
        0.5,
        &mut tensors,
    );
    random(
        "embeddings.position_embeddings.weight".into(),
        vec![MAX_POSITIONS, HIDDEN],
        0.1,
        &mut tensors,
    );
    random(
        "embeddings.token_type_embeddings.weight".into(),
        vec![TYPE_VOCAB, HIDDEN],
        0.1,
        &mut tensors,
    );
    for layer in 0..LAYERS {
        let p = format!("encoder.layer.{layer}");
        for (name, out_dim, in_dim) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", INTERMEDIATE, HIDDEN),
            ("output.dense", HIDDEN, INTERMEDIATE),
        ] {
            // ±1/√fan_in keeps activations of order one through the layers; fan_in is a
            // perfect square here, so the scale is exact.
            let scale = match in_dim {
                32 => 0.176_776_7,
                _ => 0.125,
            };
            random(
                format!("{p}.{name}.weight"),
                vec![out_dim, in_dim],
                scale,
                &mut tensors,
            );
            random(
                format!("{p}.{name}.bias"),
                vec![out_dim],
                0.02,
                &mut tensors,
            );
        }
    }
    // Layer norms start as the identity, as in a freshly initialised BERT.
    let mut norms = vec!["embeddings.LayerNorm".to_owned()];
    for layer in 0..LAYERS {
        norms.push(format!("encoder.layer.{layer}.attention.output.LayerNorm"));
        norms.push(format!("encoder.layer.{layer}.output.LayerNorm"));
    }
    for norm in norms {
        tensors.push((format!("{norm}.weight"), vec![HIDDEN], vec![1.0; HIDDEN]));
        tensors.push((format!("{norm}.bias"), vec![HIDDEN], vec![0.0; HIDDEN]));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// A safetensors file: 8-byte little-endian header length, the JSON header padded with
/// spaces to a multiple of 8, then the tensors' bytes in header order.
fn safetensors_bytes(tensors: &Tensors) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        json!({"format": "pt", "generator": "cargo xtask tiny-bert"}),
    );
    let mut offset = 0_usize;
    for (name, shape, values) in tensors {
        let end = offset + values.len() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut header = Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    for (_, _, values) in tensors {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn tokenizer_json(vocab: &[String]) -> Value {
    let mut ids = serde_json::Map::new();
    for (i, token) in vocab.iter().enumerate() {
        ids.insert(token.clone(), json!(i));
    }
    let id = |t: &str| vocab.iter().position(|v| v == t).unwrap_or(0);
    let special = |t: &str| {
        json!({"id": id(t), "content": t, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    let added_tokens: Vec<Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(special)
        .to_vec();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}}
            ],
            "pair": [
                {"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "[SEP]", "type_id": 1}}
            ],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [id("[CLS]")], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [id("[SEP]")], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": Value::Object(ids)}
    })
}

fn pretty(value: &Value) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text.into_bytes()
}

fn spec_yaml(weights_sha256: &str) -> String {
    let mut spec = String::new();
    let files = [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
        "sentence_bert_config.json",
    ];
    spec.push_str(
        "# Generated by `cargo xtask tiny-bert`; do not edit (the command reproduces it).\n\
         model_name: tiny-bert\n\
         model_version: \"1.0.0\"\n\
         display_name: \"tiny BERT (random weights, built into dp for `dp demo`)\"\n\
         role: text_embedding\n\
         capabilities:\n  text: true\n  embedding: true\n\
         runtime: inprocess\nengine: candle\nprecision: fp32\ndevice_policy: cpu\n\
         local_artifacts:\n",
    );
    for file in files {
        let _ = writeln!(spec, "  - tiny-bert/{file}");
    }
    let _ = write!(
        spec,
        "weights_digest: sha256:{weights_sha256}\n\
         preprocess_preset: sentence_embedding\n\
         preprocess_params:\n  max_length: {MAX_POSITIONS}\n  pooling: mean\n  normalize: true\n\
         input_schema:\n\
         \x20 - name: input_ids\n    dtype: int64\n    shape: [-1, -1]\n\
         \x20 - name: attention_mask\n    dtype: int64\n    shape: [-1, -1]\n\
         \x20 - name: token_type_ids\n    dtype: int64\n    shape: [-1, -1]\n\
         output_schema:\n\
         \x20 - name: last_hidden_state\n    dtype: fp32\n    shape: [-1, -1, {HIDDEN}]\n\
         resource_requirements:\n  ram_bytes: 4000000\n  max_batch_size: 64\n\
         tier: 2\n\
         license: MIT OR Apache-2.0\n\
         source: \"generated by cargo xtask tiny-bert (seeded, deterministic)\"\n\
         metadata:\n  embedding_dim: {HIDDEN}\n  architecture: bert\n  num_layers: {LAYERS}\n"
    );
    spec
}

/// Every file of the tiny model and its spec.
pub(crate) fn generate() -> Vec<GeneratedFile> {
    let vocab = vocabulary();
    let weights = safetensors_bytes(&weights(vocab.len()));
    let weights_sha256 = sha256_hex(&weights);
    let config = json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab.len(),
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": TYPE_VOCAB,
        "layer_norm_eps": 1e-12,
        "position_embedding_type": "absolute",
        "pad_token_id": 0
    });
    let modules = json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    let pooling = json!({
        "word_embedding_dimension": HIDDEN,
        "pooling_mode_cls_token": false,
        "pooling_mode_mean_tokens": true,
        "pooling_mode_max_tokens": false,
        "pooling_mode_mean_sqrt_len_tokens": false
    });
    let sentence_bert = json!({"max_seq_length": MAX_POSITIONS, "do_lower_case": false});
    let in_model = |name: &str, bytes: Vec<u8>| GeneratedFile {
        path: format!("{MODEL_DIR}/{name}"),
        bytes,
    };
    vec![
        in_model("model.safetensors", weights),
        in_model("config.json", pretty(&config)),
        in_model("tokenizer.json", pretty(&tokenizer_json(&vocab))),
        in_model("modules.json", pretty(&modules)),
        in_model("1_Pooling/config.json", pretty(&pooling)),
        in_model("sentence_bert_config.json", pretty(&sentence_bert)),
        GeneratedFile {
            path: SPEC_PATH.into(),
            bytes: spec_yaml(&weights_sha256).into_bytes(),
        },
    ]
}

/// `cargo xtask tiny-bert`: writes the files (atomically), or with `check` compares them.
pub(crate) fn run(root: &Path, check: bool) -> Result<()> {
    let files = generate();
    if check {
        let stale: Vec<&str> = files
            .iter()
            .filter(|f| std::fs::read(root.join(&f.path)).ok().as_deref() != Some(&f.bytes[..]))
            .map(|f| f.path.as_str())
            .collect();
        if !stale.is_empty() {
            bail!(
                "the committed tiny BERT differs from what `cargo xtask tiny-bert` generates: \
                 {stale:?}; run `cargo xtask tiny-bert` and commit the result"
            );
        }
        println!("tiny-bert: {} files up to date", files.len());
        return Ok(());
    }
    for file in &files {
        let path = root.join(&file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        write_atomic(&path, &file.bytes)?;
    }
    let total: usize = files.iter().map(|f| f.bytes.len()).sum();
    println!("tiny-bert: wrote {} files ({total} bytes)", files.len());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn the_committed_files_are_what_the_generator_makes() {
        let root = crate::workspace_root().unwrap();
        run(&root, true).unwrap();
    }

    #[test]
    fn the_model_is_small_and_its_spec_is_valid_and_pins_the_weights() {
        let files = generate();
        let total: usize = files.iter().map(|f| f.bytes.len()).sum();
        assert!(total < 1 << 20, "{total} bytes");
        let spec_text = String::from_utf8(files.last().unwrap().bytes.clone()).unwrap();
        let doc = dp_spec::SourceDocument::parse_str(
            "tiny-bert.yaml",
            &spec_text,
            dp_spec::SourceFormat::Yaml,
        )
        .unwrap();
        let spec = dp_spec::validate_document(&doc).unwrap();
        assert_eq!(
            spec.weights_digest.unwrap().to_string(),
            format!("sha256:{}", sha256_hex(&files[0].bytes))
        );
    }

    #[test]
    fn the_generator_is_deterministic() {
        let a = generate();
        let b = generate();
        assert!(a.iter().zip(&b).all(|(x, y)| x.bytes == y.bytes));
    }
}
