//! How closely two models' embeddings of the same inputs agree (`dp parity`): the proof
//! that two builds of one model (candle, ONNX, Triton; two devices; two runtime versions)
//! compute the same vectors, as numbers a user can check on their own models.

use dp_spec::{ErrorCode, ModelError};
use serde::Serialize;

/// The agreement of two sets of vectors, input by input.
///
/// Cosines and differences are computed in `f64` from the `f32` vectors, so the figures
/// are the vectors' own and not the rounding of the comparison. A vector holding a NaN or
/// an infinity gives that input a NaN cosine, which makes [`Self::min_cosine`] NaN (JSON
/// `null`) and [`Self::within`] false: a model that produces non-numbers never passes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingParity {
    /// How many inputs were compared.
    pub inputs: usize,
    /// The vectors' dimension (the same on both sides).
    pub dimension: usize,
    /// The smallest cosine similarity of one input's two vectors.
    pub min_cosine: f64,
    /// The mean of the per-input cosine similarities.
    pub mean_cosine: f64,
    /// The largest absolute difference of one component, over all inputs.
    pub max_abs_diff: f64,
    /// The input (0-based, in input order) whose cosine is [`Self::min_cosine`].
    pub worst_input: usize,
}

impl EmbeddingParity {
    /// Compares `a` and `b`, the vectors two models gave for the same inputs in the same
    /// order.
    ///
    /// # Errors
    /// `invalid_input` when there is nothing to compare, when the two sides hold different
    /// numbers of vectors, or when their dimensions differ (two different models, not two
    /// builds of one).
    ///
    /// # Examples
    /// ```
    /// use dp_manager::EmbeddingParity;
    ///
    /// let a = vec![vec![1.0, 0.0], vec![0.6, 0.8]];
    /// let b = vec![vec![1.0, 0.0], vec![0.6, 0.79]];
    /// let parity = EmbeddingParity::compare(&a, &b)?;
    /// assert_eq!(parity.worst_input, 1);
    /// assert!(parity.within(0.999));
    /// assert!((parity.max_abs_diff - 0.01).abs() < 1e-6);
    /// # Ok::<(), dp_spec::ModelError>(())
    /// ```
    pub fn compare(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<Self, ModelError> {
        if a.len() != b.len() {
            return Err(invalid(format!(
                "the two models returned {} and {} vectors for the same inputs; compare the \
                 same inputs on both",
                a.len(),
                b.len()
            )));
        }
        let Some(first) = a.first() else {
            return Err(invalid(
                "there are no inputs to compare; give at least one text or image".to_owned(),
            ));
        };
        let dimension = first.len();
        let mut min_cosine = f64::INFINITY;
        let mut worst_input = 0;
        let mut cosine_sum = 0.0;
        let mut max_abs_diff = 0.0_f64;
        for (index, (x, y)) in a.iter().zip(b).enumerate() {
            if x.len() != dimension || y.len() != dimension {
                return Err(invalid(format!(
                    "the models' vectors have different sizes ({} and {} at input {index}); \
                     parity compares two builds of one model, which give vectors of one size",
                    x.len(),
                    y.len()
                ))
                .with_detail("dimensions", vec![x.len(), y.len()]));
            }
            let cosine = cosine(x, y);
            cosine_sum += cosine;
            // A NaN is the worst there is: it is taken, then kept (no comparison with it is
            // true); `f64::min`/`max` would drop it instead.
            if (cosine.is_nan() && !min_cosine.is_nan()) || cosine < min_cosine {
                min_cosine = cosine;
                worst_input = index;
            }
            for (p, q) in x.iter().zip(y) {
                let diff = (f64::from(*p) - f64::from(*q)).abs();
                if (diff.is_nan() && !max_abs_diff.is_nan()) || diff > max_abs_diff {
                    max_abs_diff = diff;
                }
            }
        }
        Ok(Self {
            inputs: a.len(),
            dimension,
            min_cosine,
            mean_cosine: cosine_sum / a.len() as f64,
            max_abs_diff,
            worst_input,
        })
    }

    /// Whether every input's cosine similarity is at least `min_cosine` (false when any
    /// is NaN).
    #[must_use]
    pub fn within(&self, min_cosine: f64) -> bool {
        self.min_cosine >= min_cosine
    }
}

/// The cosine similarity of two vectors of one size, in `f64`. Two zero vectors are the
/// same vector (1); a zero vector against another is 0.
fn cosine(x: &[f32], y: &[f32]) -> f64 {
    let (mut dot, mut xx, mut yy) = (0.0_f64, 0.0_f64, 0.0_f64);
    for (p, q) in x.iter().zip(y) {
        let (p, q) = (f64::from(*p), f64::from(*q));
        dot += p * q;
        xx += p * p;
        yy += q * q;
    }
    if xx == 0.0 && yy == 0.0 {
        return 1.0;
    }
    if xx == 0.0 || yy == 0.0 {
        return 0.0;
    }
    dot / (xx.sqrt() * yy.sqrt())
}

fn invalid(message: String) -> ModelError {
    ModelError::new(ErrorCode::InvalidInput, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identical_vectors_agree_exactly() {
        let a = vec![vec![0.3, -0.4, 0.5], vec![1.0, 2.0, 3.0]];
        let parity = EmbeddingParity::compare(&a, &a).unwrap();
        assert_eq!(parity.inputs, 2);
        assert_eq!(parity.dimension, 3);
        assert!((parity.min_cosine - 1.0).abs() < 1e-15);
        assert_eq!(parity.max_abs_diff, 0.0);
        assert!(parity.within(0.999_999));
    }

    #[test]
    fn the_worst_input_is_named() {
        let a = vec![vec![1.0, 0.0], vec![1.0, 0.0], vec![1.0, 0.0]];
        let b = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 0.1]];
        let parity = EmbeddingParity::compare(&a, &b).unwrap();
        assert_eq!(parity.worst_input, 1);
        assert!(parity.min_cosine.abs() < 1e-15);
        assert!((parity.max_abs_diff - 1.0).abs() < 1e-15);
        let mean = (1.0 + 0.0 + 1.0 / 1.01_f64.sqrt()) / 3.0;
        assert!((parity.mean_cosine - mean).abs() < 1e-6);
        assert!(!parity.within(0.5));
    }

    #[test]
    fn a_non_number_never_passes() {
        let a = vec![vec![1.0, 0.0], vec![1.0, 0.0]];
        let b = vec![vec![f32::NAN, 0.0], vec![1.0, 0.0]];
        let parity = EmbeddingParity::compare(&a, &b).unwrap();
        assert!(parity.min_cosine.is_nan());
        assert!(parity.max_abs_diff.is_nan());
        assert_eq!(parity.worst_input, 0);
        assert!(!parity.within(-1.0));
        let json = serde_json::to_value(&parity).unwrap();
        assert!(json["min_cosine"].is_null(), "{json}");
    }

    #[test]
    fn different_sizes_and_nothing_are_refused() {
        let err = EmbeddingParity::compare(&[vec![1.0; 3]], &[vec![1.0; 4]]).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::InvalidInput);
        assert!(err.message.contains("3 and 4"), "{err}");
        let err = EmbeddingParity::compare(&[], &[]).unwrap_err();
        assert!(err.message.contains("no inputs"), "{err}");
        let err = EmbeddingParity::compare(&[vec![1.0]], &[]).unwrap_err();
        assert!(err.message.contains("1 and 0 vectors"), "{err}");
    }

    #[test]
    fn zero_vectors() {
        let parity = EmbeddingParity::compare(&[vec![0.0, 0.0]], &[vec![0.0, 0.0]]).unwrap();
        assert_eq!(parity.min_cosine, 1.0);
        let parity = EmbeddingParity::compare(&[vec![0.0, 0.0]], &[vec![0.0, 1.0]]).unwrap();
        assert_eq!(parity.min_cosine, 0.0);
    }

    proptest! {
        /// Scaling one side changes no cosine; the figures stay in their ranges.
        #[test]
        fn cosine_ignores_scale(
            vectors in proptest::collection::vec(
                proptest::collection::vec(-100.0_f32..100.0, 4), 1..8),
            scale in 0.01_f32..100.0,
        ) {
            let scaled: Vec<Vec<f32>> =
                vectors.iter().map(|v| v.iter().map(|x| x * scale).collect()).collect();
            let parity = EmbeddingParity::compare(&vectors, &scaled).unwrap();
            prop_assert!(parity.min_cosine > 0.999_99);
            prop_assert!(parity.min_cosine <= 1.0 + 1e-12);
            prop_assert!(parity.mean_cosine >= parity.min_cosine - 1e-12);
            prop_assert!(parity.worst_input < vectors.len());
        }
    }
}
