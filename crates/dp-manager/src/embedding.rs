//! Text embeddings: [`ModelManager::embed`] and its cache.
//!
//! The cache (`moka`, bounded, with a time to live) maps a 128-bit SHA-256 prefix of
//! (model signature, preset signature, text) to the vector. The model signature names the
//! exact weights, device and precision, so a cached vector is never served for another
//! model or configuration; 128 bits make an accidental collision negligible. A batch looks
//! every text up first and runs the model on the misses only (each distinct text once),
//! then returns the vectors in input order.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dp_signature::ModelsUsedEntry;
use dp_spec::ModelError;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::ManagerError;
use crate::manager::ModelManager;

/// Settings of the embedding cache ([`crate::ManagerBuilder::embedding_cache`]).
///
/// ```
/// use std::time::Duration;
/// use dp_manager::EmbeddingCacheConfig;
///
/// let config = EmbeddingCacheConfig { max_entries: 10_000, ..EmbeddingCacheConfig::default() };
/// assert!(config.enabled);
/// assert_eq!(config.ttl, Some(Duration::from_secs(3600)));
/// assert!(!EmbeddingCacheConfig::disabled().enabled);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingCacheConfig {
    /// Whether vectors are cached at all.
    pub enabled: bool,
    /// At most this many vectors (least recently/frequently used go first).
    pub max_entries: u64,
    /// How long a vector stays after it was computed (`None`: until evicted for room).
    pub ttl: Option<Duration>,
}

impl Default for EmbeddingCacheConfig {
    /// On, 100 000 vectors (about 150 MB of 384-dimension vectors), one hour.
    fn default() -> Self {
        Self {
            enabled: true,
            max_entries: 100_000,
            ttl: Some(Duration::from_secs(3600)),
        }
    }
}

impl EmbeddingCacheConfig {
    /// No caching: every text is embedded every time.
    #[must_use]
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// The embedding cache's part of [`crate::ManagerStatus`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingCacheStatus {
    /// Whether the cache is on.
    pub enabled: bool,
    /// Vectors held (approximate while evictions are pending).
    pub entries: u64,
    /// The entry limit.
    pub max_entries: u64,
    /// The time to live, in seconds.
    pub ttl_s: Option<f64>,
    /// Texts served from the cache.
    pub hits: u64,
    /// Texts that had to be embedded.
    pub misses: u64,
}

/// The vectors of an [`ModelManager::embed`] call and what made them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingOutput {
    /// One vector per input text, in input order.
    pub embeddings: Vec<Vec<f32>>,
    /// The model that made them, as resolved (device, precision) with its signatures.
    pub models_used: Vec<ModelsUsedEntry>,
    /// The canonical signature of that model (the same as in `models_used`).
    pub model_signature: String,
}

/// The cache itself.
pub(crate) struct EmbeddingCache {
    config: EmbeddingCacheConfig,
    vectors: Option<moka::sync::Cache<u128, Arc<[f32]>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl EmbeddingCache {
    pub(crate) fn new(config: EmbeddingCacheConfig) -> Self {
        let vectors = config.enabled.then(|| {
            let builder = moka::sync::Cache::builder().max_capacity(config.max_entries);
            match config.ttl {
                Some(ttl) => builder.time_to_live(ttl).build(),
                None => builder.build(),
            }
        });
        Self {
            config,
            vectors,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub(crate) fn status(&self) -> EmbeddingCacheStatus {
        EmbeddingCacheStatus {
            enabled: self.config.enabled,
            entries: self
                .vectors
                .as_ref()
                .map_or(0, moka::sync::Cache::entry_count),
            max_entries: self.config.max_entries,
            ttl_s: self.config.ttl.map(|d| d.as_secs_f64()),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

/// The hash state after the model and preset signatures: each text's key continues it.
fn key_prefix(model_signature: &str, preprocess_signature: &str) -> Sha256 {
    let mut prefix = Sha256::new();
    // Length-prefixed, so no two (signature, text) pairs give the same byte stream.
    for part in [model_signature, preprocess_signature] {
        prefix.update((part.len() as u64).to_le_bytes());
        prefix.update(part.as_bytes());
    }
    prefix
}

fn key_of(prefix: &Sha256, text: &str) -> u128 {
    let digest = prefix.clone().chain_update(text.as_bytes()).finalize();
    let mut first = [0_u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

impl ModelManager {
    /// Embeds `texts` with the model `model` (a name or alias whose spec uses the
    /// `sentence_embedding` preset): one vector per text, in input order, with the
    /// `models_used` record and model signature the output must carry.
    ///
    /// Cached texts are not embedded again; the rest are embedded in batches of the
    /// model's `max_batch_size`, each distinct text once.
    ///
    /// # Errors
    /// As [`ModelManager::get`]; `invalid_input` when the model has no `sentence_embedding`
    /// preset; the preset's and the model's errors.
    pub fn embed(&self, model: &str, texts: &[&str]) -> Result<EmbeddingOutput, ModelError> {
        let handle = self.get(model)?;
        let preset = handle.sentence_embedding().ok_or_else(|| {
            ModelError::from(ManagerError::BadTask {
                message: format!(
                    "model {} has preprocess_preset {}; embedding needs sentence_embedding (use an \
                     infer task for raw tensors)",
                    handle.spec().model_name,
                    handle
                        .spec()
                        .preprocess_preset
                        .as_deref()
                        .unwrap_or("(none)")
                ),
            })
        })?;
        // The record of the loaded instance: its signature already covers the preset's
        // settings as resolved from the spec *and* the model's own files.
        let entry = handle.models_used().clone();
        let cache = &self.inner().embedding_cache;
        let embeddings = match &cache.vectors {
            None => preset.embed(handle.model(), texts)?,
            Some(vectors) => {
                let prefix = key_prefix(&entry.model_signature, preset.preprocess_signature());
                let mut out: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
                // Distinct missing texts, by key: where each goes.
                let mut missing: HashMap<u128, Vec<usize>> = HashMap::new();
                let mut order: Vec<(u128, &str)> = Vec::new();
                for (i, text) in texts.iter().enumerate() {
                    let key = key_of(&prefix, text);
                    if let Some(vector) = vectors.get(&key) {
                        out[i] = Some(vector.to_vec());
                    } else {
                        let slots = missing.entry(key).or_default();
                        if slots.is_empty() {
                            order.push((key, text));
                        }
                        slots.push(i);
                    }
                }
                let hits = texts.len() - missing.values().map(Vec::len).sum::<usize>();
                cache.hits.fetch_add(hits as u64, Ordering::Relaxed);
                cache
                    .misses
                    .fetch_add((texts.len() - hits) as u64, Ordering::Relaxed);
                if !order.is_empty() {
                    let batch: Vec<&str> = order.iter().map(|(_, t)| *t).collect();
                    let computed = preset.embed(handle.model(), &batch)?;
                    for ((key, _), vector) in order.iter().zip(computed) {
                        vectors.insert(*key, Arc::from(vector.as_slice()));
                        for &i in &missing[key] {
                            out[i] = Some(vector.clone());
                        }
                    }
                }
                out.into_iter().map(Option::unwrap_or_default).collect()
            }
        };
        Ok(EmbeddingOutput {
            embeddings,
            model_signature: entry.model_signature.clone(),
            models_used: vec![entry],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_models_presets_and_texts() {
        let a = key_prefix("dp1:a", "pp1:x");
        let b = key_prefix("dp1:b", "pp1:x");
        let c = key_prefix("dp1:a", "pp1:y");
        let k = key_of(&a, "hello");
        assert_eq!(k, key_of(&key_prefix("dp1:a", "pp1:x"), "hello"));
        assert_ne!(k, key_of(&b, "hello"));
        assert_ne!(k, key_of(&c, "hello"));
        assert_ne!(k, key_of(&a, "hello "));
        // Moving bytes between the signature and the text changes the key.
        assert_ne!(
            key_of(&key_prefix("dp1:ab", "p"), "c"),
            key_of(&key_prefix("dp1:a", "p"), "bc")
        );
    }
}
