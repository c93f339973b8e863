//! Golden outputs: a model run on fixed probe inputs, its outputs pinned in the lock file
//! (`dp verify --lock --golden`) and checked again later (`dp verify --golden`), so that a
//! change of numbers with unchanged bytes (another runtime version, provider or device, a
//! preprocessing bug) is caught as `output_drift`.
//!
//! Probe inputs come from the spec's `metadata.golden_inputs` (a list of texts; for a
//! cross-encoder the first is the query) or, by default, a few fixed texts per preset. A
//! generator's outputs are the token ids of a short greedy generation.

use dp_digest::GoldenOutputs;
use dp_preset::{PresetInputs, PresetOutput};
use dp_spec::{ErrorCode, ModelError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manager::ModelManager;

/// Default probes of text presets: short, mixed-language, one with digits and punctuation.
const DEFAULT_TEXTS: [&str; 3] = [
    "A man is playing a guitar on the street.",
    "Die Katze schläft auf dem Sofa.",
    "Invoice #4521: total due 1,250.00 EUR by 2026-03-31.",
];

/// Default probe of rerankers: a query, then its documents.
const DEFAULT_RERANK: [&str; 4] = [
    "How do plants make food?",
    "Plants make food by photosynthesis, using light, water and carbon dioxide.",
    "The stock market closed higher on Friday.",
    "Chlorophyll absorbs sunlight in the leaves.",
];

/// New tokens a generator's golden probe generates per text (greedy).
const GOLDEN_NEW_TOKENS: usize = 16;

/// Accepted per row by default: one build on one machine gives the same bits; other CPUs
/// (another SIMD width) move the last digits, around 1e-6.
const DEFAULT_MIN_COSINE: f64 = 0.999_999;
const DEFAULT_MAX_ABS_DIFF: f64 = 1e-5;

/// How a model's outputs compare with its golden outputs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GoldenCheck {
    /// Whether they are within the tolerances.
    pub within_tolerance: bool,
    /// The lowest cosine similarity of a row (1 when no row has more than one value).
    pub min_cosine: f64,
    /// The largest absolute difference of a value.
    pub max_abs_diff: f64,
    /// Whether the outputs are the golden ones bit for bit.
    pub identical: bool,
    /// The row with the lowest cosine (or largest difference).
    pub worst_input: usize,
}

/// The SHA-256 of rows as little-endian f32.
fn digest_rows(rows: &[Vec<f32>]) -> String {
    let mut hash = Sha256::new();
    for v in rows.iter().flatten() {
        hash.update(v.to_le_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return if na == nb { 1.0 } else { 0.0 };
    }
    dot / (na * nb)
}

impl ModelManager {
    /// Runs `model` on its probe inputs and returns the outputs to pin as golden.
    ///
    /// # Errors
    /// As [`Self::run_preset`]; `invalid_input` for a model without a preset this build
    /// runs, or whose spec's `metadata.golden_inputs` is not a list of texts.
    pub fn golden_outputs(&self, model: &str) -> Result<GoldenOutputs, ModelError> {
        let handle = self.get(model)?;
        let spec = handle.spec();
        let preset = handle.preset().ok_or_else(|| {
            ModelError::new(
                ErrorCode::InvalidInput,
                format!(
                    "model {} has no preset this build runs, so it has no golden outputs",
                    spec.model_name
                ),
            )
        })?;
        let rerank = preset.accepts(dp_preset::InputKind::QueryWithDocuments);
        let inputs: Vec<String> = match spec.metadata.get("golden_inputs") {
            None => {
                let defaults: &[&str] = if rerank {
                    &DEFAULT_RERANK
                } else {
                    &DEFAULT_TEXTS
                };
                defaults.iter().map(|s| (*s).to_owned()).collect()
            }
            Some(value) => value
                .as_array()
                .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
                .filter(|v: &Vec<String>| v.len() >= if rerank { 2 } else { 1 })
                .ok_or_else(|| {
                    ModelError::new(
                        ErrorCode::InvalidInput,
                        format!(
                            "model {}: metadata.golden_inputs must be a list of texts (for a \
                             reranker, the query then at least one document)",
                            spec.model_name
                        ),
                    )
                })?,
        };
        let outputs = self.probe(model, rerank, &inputs)?;
        Ok(GoldenOutputs {
            preprocess_signature: preset.preprocess_signature().to_owned(),
            outputs_digest: digest_rows(&outputs),
            inputs,
            outputs,
            min_cosine: DEFAULT_MIN_COSINE,
            max_abs_diff: DEFAULT_MAX_ABS_DIFF,
        })
    }

    /// Runs `model` on the probe inputs of `golden` and compares.
    ///
    /// # Errors
    /// `output_drift` (with the figures in its details) when outside the tolerances;
    /// otherwise as [`Self::run_preset`].
    pub fn check_golden(
        &self,
        model: &str,
        golden: &GoldenOutputs,
    ) -> Result<GoldenCheck, ModelError> {
        let rerank = {
            let handle = self.get(model)?;
            handle
                .preset()
                .is_some_and(|p| p.accepts(dp_preset::InputKind::QueryWithDocuments))
        };
        let outputs = self.probe(model, rerank, &golden.inputs)?;
        let mut check = GoldenCheck {
            within_tolerance: true,
            min_cosine: 1.0,
            max_abs_diff: 0.0,
            identical: digest_rows(&outputs) == golden.outputs_digest,
            worst_input: 0,
        };
        if outputs.len() != golden.outputs.len()
            || outputs
                .iter()
                .zip(&golden.outputs)
                .any(|(a, b)| a.len() != b.len())
        {
            check.within_tolerance = false;
            check.min_cosine = 0.0;
            check.max_abs_diff = f64::INFINITY;
        } else {
            for (i, (got, want)) in outputs.iter().zip(&golden.outputs).enumerate() {
                let diff = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| f64::from((a - b).abs()))
                    .fold(0.0, f64::max);
                let c = if got.len() > 1 {
                    cosine(got, want)
                } else {
                    1.0
                };
                if c < check.min_cosine || (c == check.min_cosine && diff > check.max_abs_diff) {
                    check.worst_input = i;
                }
                check.min_cosine = check.min_cosine.min(c);
                check.max_abs_diff = check.max_abs_diff.max(diff);
            }
            check.within_tolerance =
                check.min_cosine >= golden.min_cosine && check.max_abs_diff <= golden.max_abs_diff;
        }
        if check.within_tolerance {
            return Ok(check);
        }
        Err(ModelError::new(
            ErrorCode::OutputDrift,
            format!(
                "model {model}: its outputs on the golden probe inputs moved (min cosine {:.8}, \
                 max |Δ| {:.3e}; accepted: cosine ≥ {}, |Δ| ≤ {}) while its files may all match: \
                 check the runtime, provider, device and preprocessing; if the change is \
                 intended, record new golden outputs with `dp verify --lock --golden`",
                check.min_cosine, check.max_abs_diff, golden.min_cosine, golden.max_abs_diff
            ),
        )
        .with_detail("model", model)
        .with_detail("min_cosine", check.min_cosine)
        .with_detail("max_abs_diff", check.max_abs_diff)
        .with_detail("worst_input", check.worst_input))
    }

    /// The rows of `inputs` through `model`'s preset (scores as one-value rows), computed
    /// now: never from the embedding caches, which would hide a change of numbers.
    fn probe(
        &self,
        model: &str,
        rerank: bool,
        inputs: &[String],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let handle = self.get(model)?;
        let preset = handle.preset().ok_or_else(|| {
            ModelError::new(
                ErrorCode::InvalidInput,
                format!("model {model} has no preset this build runs: no golden outputs"),
            )
        })?;
        let texts: Vec<&str> = inputs.iter().map(String::as_str).collect();
        if preset.seq2seq().is_some() {
            // A generator's outputs are its token ids (exact in f32): greedy, a fixed length,
            // so any change of one id is a difference of at least 1.
            let options = crate::GenerationOptions {
                max_new_tokens: Some(GOLDEN_NEW_TOKENS),
                ..crate::GenerationOptions::default()
            };
            let generated = self.generate(model, &texts, &options)?;
            #[allow(clippy::cast_precision_loss, reason = "token ids are below 2^24")]
            return Ok(generated
                .token_ids
                .iter()
                .map(|ids| ids.iter().map(|&id| id as f32).collect())
                .collect());
        }
        let output = if rerank {
            let (query, documents) = texts.split_first().ok_or_else(|| {
                ModelError::new(ErrorCode::InvalidInput, "golden probe without a query")
            })?;
            preset.run(
                handle.model(),
                PresetInputs::QueryWithDocuments { query, documents },
            )?
        } else {
            preset.run(handle.model(), PresetInputs::Texts(&texts))?
        };
        match output {
            PresetOutput::Tensors(_) => Err(ModelError::new(
                ErrorCode::InvalidInput,
                format!("model {model}'s preset returns raw tensors: no golden outputs"),
            )),
            other => Ok(other.into_rows()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_cosines_of_rows() {
        let rows = vec![vec![1.0_f32, 0.0], vec![0.5]];
        assert_eq!(digest_rows(&rows), digest_rows(&rows.clone()));
        assert_ne!(
            digest_rows(&rows),
            digest_rows(&[vec![1.0, 0.0], vec![0.25]])
        );
        assert!((cosine(&[1.0, 0.0], &[0.0, 2.0])).abs() < 1e-12);
        assert!((cosine(&[1.0, 1.0], &[2.0, 2.0]) - 1.0).abs() < 1e-12);
        assert!((cosine(&[0.0, 0.0], &[0.0, 0.0]) - 1.0).abs() < 1e-12);
    }
}
