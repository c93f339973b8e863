//! `SentenceEmbedding::encode` cuts long texts before tokenizing them: the ids must be
//! exactly those of the whole text tokenized then truncated, for real tokenizers (the demo
//! tiny BERT, and the real all-MiniLM-L6-v2 when `cargo xtask setup` has fetched it).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};

use super::*;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real tokenizers present: the tiny BERT always, MiniLM after `cargo xtask setup`.
fn tokenizers() -> Vec<(String, Vec<u8>)> {
    let mut found = Vec::new();
    for relative in [
        "crates/dp-cli/demo/models/tiny-bert/tokenizer.json",
        ".dp-assets/models/all-minilm-l6-v2/tokenizer.json",
    ] {
        match std::fs::read(workspace_root().join(relative)) {
            Ok(bytes) => found.push((relative.to_owned(), bytes)),
            Err(err) => eprintln!("skipping {relative} ({err}); `cargo xtask setup` fetches it"),
        }
    }
    assert!(!found.is_empty(), "the demo tokenizer is committed");
    found
}

fn preset(json: &[u8], max_length: usize, query_prefix: Option<&str>) -> SentenceEmbedding {
    SentenceEmbedding::from_tokenizer_json(
        json,
        "tokenizer.json",
        SentenceEmbeddingConfig {
            query_prefix: query_prefix.map(str::to_owned),
            ..SentenceEmbeddingConfig::new(max_length, Pooling::Mean, true)
        },
    )
    .unwrap()
}

/// What `encode` returned before the cut: the whole text tokenized, then truncated.
fn reference(preset: &SentenceEmbedding, text: &str) -> (Vec<i64>, Vec<i64>, Vec<i64>) {
    let whole = match &preset.config.query_prefix {
        Some(prefix) => format!("{prefix}{text}"),
        None => text.to_owned(),
    };
    let encoding = preset.tokenizer.tokenizer.encode(whole, true).unwrap();
    let wide = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    (
        wide(encoding.get_ids()),
        wide(encoding.get_attention_mask()),
        wide(encoding.get_type_ids()),
    )
}

/// A deterministic pseudo-random sequence (no dependency needed for a test corpus).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from(self.0 >> 33).unwrap() % n
    }
}

/// Words that stress a cut: multi-byte characters, combining accents, CJK (one token per
/// character), emoji, punctuation runs, words longer than WordPiece's 100 characters,
/// whitespace runs, and tokens the vocabulary has.
const PIECES: &[&str] = &[
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "The",
    "WEATHER",
    "tomorrow",
    "café",
    "naïve",
    "e\u{301}t\u{e9}",
    "中文字符",
    "日本語",
    "🙂🙃",
    "...",
    "!?",
    "—",
    "can't",
    "x1y2z3",
    "\t",
    "  ",
    "\n",
    "[SEP]",
    "[MASK]",
    "unbelievably",
    "ÅÄÖ",
    "ß",
    "İstanbul",
    "\u{200b}",
];

/// A text of about `len` bytes drawn from `PIECES` (and, with `long_words`, words of 90 to
/// 210 letters, around WordPiece's limit of 100 characters per word).
fn text(rng: &mut Lcg, len: usize, long_words: bool) -> String {
    let mut out = String::with_capacity(len + 256);
    while out.len() < len {
        if long_words && rng.below(8) == 0 {
            let n = 90 + rng.below(120);
            out.extend(std::iter::repeat_n('a', n));
        } else {
            out.push_str(PIECES[rng.below(PIECES.len())]);
        }
        let sep = [" ", " ", " ", "", ", "][rng.below(5)];
        out.push_str(sep);
    }
    out
}

#[test]
fn cut_texts_give_exactly_the_ids_of_whole_texts() {
    let mut rng = Lcg(7);
    for (name, json) in tokenizers() {
        for max_length in [8, 64, 128] {
            let preset = preset(&json, max_length, None);
            let first_cut = max_length * 64;
            let mut cut = 0;
            let mut texts = Vec::new();
            // Lengths around the first cut and the next ones (where the cut moves), with
            // and without over-long words.
            for step in 0..48 {
                let len = first_cut / 2 + step * first_cut / 12 + rng.below(64);
                texts.push(text(&mut rng, len, step % 2 == 0));
            }
            // Texts whose first cut lands inside one long word, or on text with no spaces.
            texts.push(format!(
                "{} {}",
                "b".repeat(first_cut + 3),
                text(&mut rng, first_cut * 3, false)
            ));
            texts.push("中文字符日本語".repeat(first_cut / 8));
            texts.push("a".repeat(first_cut * 3));
            // Words just over WordPiece's 100 characters: one [UNK] each, whole, but up to
            // 100 tokens when a cut leaves fewer than 101 of their characters, so a cut
            // inside one adds tokens the whole text does not have.
            for word_len in [101, 120, 150, 199, 250] {
                let word = "a".repeat(word_len);
                let count = first_cut * 4 / word_len;
                texts.push(vec![word.as_str(); count].join(" "));
            }
            texts.push(format!(
                "{}{}",
                "🙂".repeat(first_cut / 4 + 1),
                text(&mut rng, first_cut, true)
            ));
            for text in &texts {
                let used = preset.tokenizer.truncation_prefix(text).unwrap();
                assert!(text.starts_with(used));
                if used.len() < text.len() {
                    cut += 1;
                }
                let batch = preset.tokenize(&[text.as_str()]).unwrap();
                let (ids, mask, types) = reference(&preset, text);
                assert_eq!(
                    batch.input_ids,
                    ids,
                    "{name}, max_length {max_length}, text of {} bytes cut at {}",
                    text.len(),
                    used.len()
                );
                assert_eq!(batch.attention_mask, mask, "{name}");
                assert_eq!(batch.token_type_ids, types, "{name}");
            }
            // Most texts above are long enough to be cut: the comparison tested the cut.
            assert!(
                cut >= texts.len() / 2,
                "{name}, max_length {max_length}: only {cut} of {} texts cut",
                texts.len()
            );
        }
    }
}

#[test]
fn batches_and_query_prefixes_are_cut_exactly_too() {
    let mut rng = Lcg(11);
    for (name, json) in tokenizers() {
        let preset = preset(&json, 16, Some("query: "));
        let pad = i64::from(preset.tokenizer.tokenizer.get_padding().unwrap().pad_id);
        let long = text(&mut rng, 5_000, true);
        let longer = text(&mut rng, 20_000, false);
        let texts = ["short one", long.as_str(), longer.as_str(), ""];
        let batch = preset.tokenize(&texts).unwrap();
        assert_eq!(batch.seq_len, 16, "{name}");
        let (mut ids, mut mask) = (Vec::new(), Vec::new());
        for text in texts {
            let (mut row_ids, mut row_mask, _) = reference(&preset, text);
            row_ids.resize(batch.seq_len, pad);
            row_mask.resize(batch.seq_len, 0);
            ids.extend(row_ids);
            mask.extend(row_mask);
        }
        assert_eq!(batch.input_ids, ids, "{name}");
        assert_eq!(batch.attention_mask, mask, "{name}");
    }
}

#[test]
fn a_huge_text_is_not_tokenized_whole() {
    let (_, json) = tokenizers().swap_remove(0);
    let preset = preset(&json, 64, None);
    let sentence = "The cat sat on the mat, and the weather is sunny today. ";
    let huge = sentence.repeat(50_000_000 / sentence.len());
    assert!(huge.len() > 49_000_000);
    let used = preset.tokenizer.truncation_prefix(&huge).unwrap();
    // The first cut (64 bytes per token) already holds enough words.
    assert_eq!(used.len(), 64 * 64);
    // And the ids are those of any long-enough prefix of it, whole.
    let batch = preset.tokenize(&[huge.as_str()]).unwrap();
    let (ids, ..) = reference(&preset, &huge[..100_000]);
    assert_eq!(batch.input_ids, ids);
    assert_eq!(batch.seq_len, 64);
}
