//! Running a model's preset ([`ModelManager::run_preset`]: embeddings of texts or images,
//! zero-shot classification) and the embedding cache.
//!
//! One generic loop serves every preset: the manager never names one. The cache (`moka`,
//! bounded, with a time to live) maps a 128-bit SHA-256 prefix of (model signature, preset
//! signature, input bytes) to the vector. The model signature names the exact weights,
//! device and precision, so a cached vector is never served for another model or
//! configuration; 128 bits make an accidental collision negligible. A batch looks every
//! input up first and runs the model on the misses only (each distinct input once), then
//! returns the vectors in input order. Probabilities (which depend on the labels too) are
//! not cached.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dp_preset::{ImageInput, Preset, PresetInputs, PresetOutput};

use crate::persistent::PersistentEmbeddingCache;
use dp_signature::ModelsUsedEntry;
use dp_spec::{ModelError, WorkerSlot};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::cache::ModelHandle;
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
    /// Of `hits`, those read from the persistent cache (after a restart, or written by
    /// another process).
    pub persistent_hits: u64,
    /// The persistent cache's file, when one is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_file: Option<std::path::PathBuf>,
}

/// The vectors of an [`ModelManager::embed`] call and what made them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingOutput {
    /// One vector per input (text or image), in input order.
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
    /// The on-disk second level, behind `vectors`.
    store: Option<PersistentEmbeddingCache>,
    hits: AtomicU64,
    misses: AtomicU64,
    persistent_hits: AtomicU64,
}

impl EmbeddingCache {
    pub(crate) fn new(
        config: EmbeddingCacheConfig,
        store: Option<PersistentEmbeddingCache>,
    ) -> Self {
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
            store: store.filter(|_| config.enabled),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            persistent_hits: AtomicU64::new(0),
        }
    }

    /// Drops every cached vector, in memory and on disk; returns how many the persistent
    /// cache held.
    fn clear(&self) -> Result<u64, ModelError> {
        if let Some(vectors) = &self.vectors {
            vectors.invalidate_all();
            vectors.run_pending_tasks();
        }
        match &self.store {
            Some(store) => store.clear(None),
            None => Ok(0),
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
            persistent_hits: self.persistent_hits.load(Ordering::Relaxed),
            persistent_file: self.store.as_ref().map(|s| s.path().to_path_buf()),
        }
    }
}

/// What [`ModelManager::run_preset`] produced and what made it.
#[derive(Debug, Clone, PartialEq)]
pub struct PresetRun {
    /// The preset's output: vectors or probabilities, one row per input.
    pub output: PresetOutput,
    /// The model that made them, as resolved (device, precision) with its signatures.
    pub models_used: Vec<ModelsUsedEntry>,
    /// The canonical signature of that model (the same as in `models_used`).
    pub model_signature: String,
}

/// The hash state after the model and preset signatures: each input's key continues it.
fn key_prefix(model_signature: &str, preprocess_signature: &str) -> Sha256 {
    let mut prefix = Sha256::new();
    // Length-prefixed, so no two (signature, input) pairs give the same byte stream.
    for part in [model_signature, preprocess_signature] {
        prefix.update((part.len() as u64).to_le_bytes());
        prefix.update(part.as_bytes());
    }
    prefix
}

fn key_of(prefix: &Sha256, input: &[u8]) -> u128 {
    let digest = prefix.clone().chain_update(input).finalize();
    let mut first = [0_u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}

/// The bytes that identify each input of a cacheable request (texts and images are told
/// apart by a tag, so a text never shares a key with an image); `None` when the request's
/// results are not cached.
fn identities(inputs: &PresetInputs<'_>) -> Option<Vec<Vec<u8>>> {
    match inputs {
        PresetInputs::Texts(texts) => Some(
            texts
                .iter()
                .map(|t| [b"text\0".as_slice(), t.as_bytes()].concat())
                .collect(),
        ),
        PresetInputs::Images(images) => Some(images.iter().map(ImageInput::identity).collect()),
        PresetInputs::ImagesWithLabels { .. }
        | PresetInputs::QueryWithDocuments { .. }
        | PresetInputs::Audio(_) => None,
    }
}

/// How one task-API call runs a preset, beyond its inputs.
#[derive(Clone, Copy, Default)]
pub(crate) struct PresetCall<'a> {
    /// The model's named prompt to prepend (`None`: its default prompt, if any).
    pub(crate) prompt_name: Option<&'a str>,
    /// The caller's way to give up: `cancelled` when cancelled before the model call
    /// starts (while queued for a batch included, which it then leaves at once).
    pub(crate) cancel: Option<&'a crate::CancelToken>,
    /// Calls the model's batching queue runs at once, from now on (`None`: the spec's
    /// `num_workers`, else 1).
    pub(crate) num_workers: Option<usize>,
}

impl ModelManager {
    /// Runs `inputs` through the preset of the model `model` (a name or alias): texts or
    /// images to vectors, images and labels to probabilities, with the `models_used`
    /// record and model signature the output must carry.
    ///
    /// Cached vectors are not computed again; the rest are computed in batches of the
    /// preset's batch size, each distinct input once.
    ///
    /// # Errors
    /// As [`ModelManager::get`]; `invalid_input` when the model has no preset this build
    /// runs, or one that does not take this kind of input (a text-only model asked for
    /// images: reason `images_unsupported`); the preset's and the model's errors.
    pub fn run_preset(
        &self,
        model: &str,
        inputs: PresetInputs<'_>,
    ) -> Result<PresetRun, ModelError> {
        self.run_preset_with_prompt(model, inputs, None)
    }

    /// [`Self::run_preset`] with the model's named prompt `prompt_name` prepended to the
    /// texts (E5's `query` or `passage`); `None` uses the model's default prompt, if any.
    /// The prompt used is named in `models_used` and part of its preprocess signature (and
    /// of the embedding cache's keys).
    ///
    /// # Errors
    /// As [`Self::run_preset`]; `invalid_input` (reason `unknown_prompt`) for a prompt name
    /// the model does not define.
    pub fn run_preset_with_prompt(
        &self,
        model: &str,
        inputs: PresetInputs<'_>,
        prompt_name: Option<&str>,
    ) -> Result<PresetRun, ModelError> {
        self.run_preset_as(
            model,
            inputs,
            &PresetCall {
                prompt_name,
                ..PresetCall::default()
            },
        )
    }

    /// [`Self::run_preset_with_prompt`] with the task API's settings of one call (see
    /// [`PresetCall`]).
    pub(crate) fn run_preset_as(
        &self,
        model: &str,
        inputs: PresetInputs<'_>,
        call: &PresetCall<'_>,
    ) -> Result<PresetRun, ModelError> {
        let PresetCall {
            prompt_name,
            cancel,
            num_workers,
        } = *call;
        let handle = self.get(model)?;
        let spec = handle.spec();
        let preset = handle.preset().ok_or_else(|| {
            let status = dp_preset::status(spec.preprocess_preset.as_deref());
            let why = match status {
                dp_preset::PresetStatus::NotImplemented => "which this build cannot run yet",
                _ => "none",
            };
            ModelError::from(ManagerError::BadTask {
                message: format!(
                    "model {} has preprocess_preset {} ({why}); use an infer task for raw tensors",
                    spec.model_name,
                    spec.preprocess_preset.as_deref().unwrap_or("(none)")
                ),
            })
        })?;
        if !preset.accepts(inputs.kind()) {
            let err = dp_preset::refused(preset.name(), inputs.kind());
            return Err(ModelError::from(err).with_detail("model_name", spec.model_name.as_str()));
        }
        let prompted = match prompt_name {
            Some(name) => Some(preset.with_prompt(name).map_err(|e| {
                ModelError::from(e).with_detail("model_name", spec.model_name.as_str())
            })?),
            None => None,
        };
        let preset: &dyn Preset = match &prompted {
            Some(prompted) => prompted.as_ref(),
            None => preset,
        };
        // The record of the loaded instance that ran (its signature already covers the
        // preset's settings as resolved from the spec *and* the model's own files), with
        // the prompt used.
        let record = |instance: &ModelHandle| {
            let mut entry = instance.models_used().clone();
            if let Some(prompted) = &prompted {
                entry.preprocess_signature = prompted.preprocess_signature().to_owned();
                entry.prompt_name = prompted.prompt_name().map(str::to_owned);
            }
            entry
        };
        let entry = record(&handle);
        let inner = self.inner();
        let cache = &inner.embedding_cache;
        let model = handle.model();
        // Texts made into vectors go through the model's batching queue, shared with
        // concurrent callers of the same model and preprocessing.
        let workers = num_workers.unwrap_or_else(|| {
            spec.resource_requirements
                .num_workers
                .map_or(1, |n| usize::try_from(n).unwrap_or(usize::MAX))
        });
        let batch_key = crate::batcher::QueueKey {
            model: &spec.model_name,
            model_signature: &entry.model_signature,
            preprocess_signature: preset.preprocess_signature(),
        };
        // Worker `w` of the queue runs on the model's `w mod n`-th device (its GPUs in turn
        // when the policy spreads it, else the one instance): which one ran the call decides
        // the record.
        let route = handle.resident().route();
        let ran_on = std::cell::Cell::new(0_usize);
        let compute = |inputs: PresetInputs<'_>| -> Result<PresetOutput, ModelError> {
            match inputs {
                PresetInputs::Texts(texts)
                    if inner.batchers.enabled() && preset.makes_vectors() =>
                {
                    let run = |slot: WorkerSlot, texts: &[&str]| {
                        let on = route.for_worker(slot.index);
                        let replica = if Arc::ptr_eq(on, route) {
                            None
                        } else {
                            Some(inner.get_route(on)?)
                        };
                        // The worker's own share of the instance (its CPU threads).
                        let model = replica.as_ref().map_or(model, ModelHandle::model);
                        preset
                            .run(&model.on_worker(slot), PresetInputs::Texts(texts))
                            .map(PresetOutput::into_rows)
                    };
                    let served = inner.batchers.run(
                        &batch_key,
                        preset.batch_size(),
                        workers,
                        texts,
                        cancel,
                        &run,
                    )?;
                    ran_on.set(served.worker);
                    Ok(PresetOutput::Vectors(served.rows))
                }
                _ => {
                    cancel.map_or(Ok(()), crate::CancelToken::check)?;
                    preset.run(model, inputs)
                }
            }
        };
        let output = match (&cache.vectors, identities(&inputs)) {
            (Some(vectors), Some(ids)) if preset.makes_vectors() => {
                let prefix = key_prefix(&entry.model_signature, preset.preprocess_signature());
                cached_vectors(
                    cache,
                    vectors,
                    &prefix,
                    &ids,
                    &spec.model_name,
                    &compute,
                    &inputs,
                )?
            }
            _ => compute(inputs)?,
        };
        let on = route.for_worker(ran_on.get());
        let entry = if Arc::ptr_eq(on, route) {
            entry
        } else {
            // Loaded: its call just ran (a hit, unless evicted since).
            record(&inner.get_route(on)?)
        };
        Ok(PresetRun {
            output,
            model_signature: entry.model_signature.clone(),
            models_used: vec![entry],
        })
    }

    /// Empties the embedding cache (and its persistent level, if any): every text is
    /// embedded again. The hit and miss counters keep counting.
    ///
    /// # Errors
    /// `io` when the persistent cache's file cannot be written.
    pub fn clear_embedding_cache(&self) -> Result<(), ModelError> {
        self.inner().embedding_cache.clear().map(drop)
    }

    /// Embeds `texts` with the model `model` (its preset takes texts: `sentence_embedding`,
    /// or `image_clip`'s text tower): one vector per text, in input order.
    ///
    /// # Errors
    /// As [`Self::run_preset`].
    pub fn embed(&self, model: &str, texts: &[&str]) -> Result<EmbeddingOutput, ModelError> {
        self.embed_inputs(model, PresetInputs::Texts(texts), None)
    }

    /// [`Self::embed`] with the model's named prompt `prompt_name` (E5's `query` or
    /// `passage`) prepended to every text; `None` is the model's default prompt, if any.
    ///
    /// # Errors
    /// As [`Self::run_preset_with_prompt`].
    pub fn embed_with_prompt(
        &self,
        model: &str,
        texts: &[&str],
        prompt_name: Option<&str>,
    ) -> Result<EmbeddingOutput, ModelError> {
        self.embed_inputs(model, PresetInputs::Texts(texts), prompt_name)
    }

    /// Embeds `images` with the model `model` (its preset takes images: `image_clip`): one
    /// vector per image, in input order.
    ///
    /// # Errors
    /// As [`Self::run_preset`]; `invalid_input` with a reason (`image_decode_failed`,
    /// `image_too_large`, …) for an image that cannot be decoded.
    pub fn embed_images(
        &self,
        model: &str,
        images: &[ImageInput],
    ) -> Result<EmbeddingOutput, ModelError> {
        self.embed_inputs(model, PresetInputs::Images(images), None)
    }

    fn embed_inputs(
        &self,
        model: &str,
        inputs: PresetInputs<'_>,
        prompt_name: Option<&str>,
    ) -> Result<EmbeddingOutput, ModelError> {
        let run = self.run_preset_with_prompt(model, inputs, prompt_name)?;
        match run.output {
            PresetOutput::Vectors(embeddings) => Ok(EmbeddingOutput {
                embeddings,
                models_used: run.models_used,
                model_signature: run.model_signature,
            }),
            _ => Err(ModelError::from(ManagerError::BadTask {
                message: format!("model {model}'s preset does not make embeddings"),
            })),
        }
    }
}

/// Looks every input up, runs the preset on the distinct misses, caches what it made.
fn cached_vectors(
    cache: &EmbeddingCache,
    vectors: &moka::sync::Cache<u128, Arc<[f32]>>,
    prefix: &Sha256,
    ids: &[Vec<u8>],
    model_name: &str,
    compute: &dyn Fn(PresetInputs<'_>) -> Result<PresetOutput, ModelError>,
    inputs: &PresetInputs<'_>,
) -> Result<PresetOutput, ModelError> {
    let mut out: Vec<Option<Vec<f32>>> = vec![None; ids.len()];
    // Distinct missing inputs, by key: where each goes.
    let mut missing: HashMap<u128, Vec<usize>> = HashMap::new();
    let mut order: Vec<(u128, usize)> = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let key = key_of(prefix, id);
        if let Some(vector) = vectors.get(&key) {
            out[i] = Some(vector.to_vec());
        } else {
            let slots = missing.entry(key).or_default();
            if slots.is_empty() {
                order.push((key, i));
            }
            slots.push(i);
        }
    }
    // The second level: vectors another run (or process) stored.
    if let Some(store) = &cache.store
        && !order.is_empty()
    {
        let keys: Vec<u128> = order.iter().map(|(key, _)| *key).collect();
        let mut found: HashMap<u128, Vec<f32>> = keys
            .iter()
            .copied()
            .zip(store.get_many(&keys))
            .filter_map(|(key, vector)| vector.map(|v| (key, v)))
            .collect();
        let mut from_disk = 0;
        order.retain(|(key, _)| {
            let Some(vector) = found.remove(key) else {
                return true;
            };
            let slots = missing.remove(key).unwrap_or_default();
            from_disk += slots.len();
            for &i in &slots {
                out[i] = Some(vector.clone());
            }
            // Into the first level too, unless it holds nothing at all.
            if cache.config.max_entries > 0 {
                vectors.insert(*key, Arc::from(vector.as_slice()));
            }
            false
        });
        cache
            .persistent_hits
            .fetch_add(from_disk as u64, Ordering::Relaxed);
    }
    let hits = ids.len() - missing.values().map(Vec::len).sum::<usize>();
    cache.hits.fetch_add(hits as u64, Ordering::Relaxed);
    cache
        .misses
        .fetch_add((ids.len() - hits) as u64, Ordering::Relaxed);
    if !order.is_empty() {
        let computed = if order.len() == ids.len() {
            // Every input is a distinct miss (the usual case): no copy.
            compute(*inputs)?.into_rows()
        } else {
            let first = order.iter().map(|(_, i)| *i);
            match inputs {
                PresetInputs::Texts(all) => {
                    let texts: Vec<&str> = first.map(|i| all[i]).collect();
                    compute(PresetInputs::Texts(&texts))?.into_rows()
                }
                PresetInputs::Images(all) => {
                    let images: Vec<ImageInput> = first.map(|i| all[i].clone()).collect();
                    compute(PresetInputs::Images(&images))?.into_rows()
                }
                PresetInputs::ImagesWithLabels { .. }
                | PresetInputs::QueryWithDocuments { .. }
                | PresetInputs::Audio(_) => compute(*inputs)?.into_rows(),
            }
        };
        for ((key, _), vector) in order.iter().zip(&computed) {
            vectors.insert(*key, Arc::from(vector.as_slice()));
            for &i in &missing[key] {
                out[i] = Some(vector.clone());
            }
        }
        if let Some(store) = &cache.store {
            let rows: Vec<(u128, &str, &[f32])> = order
                .iter()
                .zip(&computed)
                .map(|((key, _), vector)| (*key, model_name, vector.as_slice()))
                .collect();
            store.put_many(&rows);
        }
    }
    Ok(PresetOutput::Vectors(
        out.into_iter().map(Option::unwrap_or_default).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_models_presets_and_texts() {
        let a = key_prefix("dp1:a", "pp1:x");
        let b = key_prefix("dp1:b", "pp1:x");
        let c = key_prefix("dp1:a", "pp1:y");
        let k = key_of(&a, b"hello");
        assert_eq!(k, key_of(&key_prefix("dp1:a", "pp1:x"), b"hello"));
        assert_ne!(k, key_of(&b, b"hello"));
        assert_ne!(k, key_of(&c, b"hello"));
        assert_ne!(k, key_of(&a, b"hello "));
        // Moving bytes between the signature and the text changes the key.
        assert_ne!(
            key_of(&key_prefix("dp1:ab", "p"), b"c"),
            key_of(&key_prefix("dp1:a", "p"), b"bc")
        );
    }
}
