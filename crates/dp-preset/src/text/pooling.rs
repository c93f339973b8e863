//! How token vectors become one sentence vector, as sentence-transformers pools them.

use dp_spec::tensor_names::LAST_HIDDEN_STATE;
use dp_spec::{Tensor, TensorData};

use crate::error::PresetError;

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pooling {
    /// The mean of the real tokens' vectors.
    Mean,
    /// The first token's vector (`[CLS]`).
    Cls,
    /// The element-wise maximum over the real tokens.
    Max,
    /// The last real token's vector (decoder-style embedders, e.g. Qwen3-Embedding).
    LastToken,
}

impl Pooling {
    /// The name used in `preprocess_params.pooling`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Cls => "cls",
            Self::Max => "max",
            Self::LastToken => "last_token",
        }
    }

    /// The pooling named `text` (`mean`, `cls`, `max`, `last_token`).
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "mean" => Some(Self::Mean),
            "cls" => Some(Self::Cls),
            "max" => Some(Self::Max),
            "last_token" => Some(Self::LastToken),
            _ => None,
        }
    }
}

/// Pools `hidden` (`[batch, seq, hidden]` row-major) over the tokens whose `mask`
/// (`[batch, seq]`) is non-zero, as sentence-transformers does: the mean divides by the
/// number of real tokens (at least 1e-9), the maximum ignores padding, `cls` takes token 0,
/// `last_token` the last token whose mask is non-zero (a zero vector when there is none,
/// as sentence-transformers' masked gather gives).
///
/// ```
/// use dp_preset::text::{Pooling, pool};
///
/// // One text, three tokens (the last is padding), two dimensions.
/// let hidden = [1.0, 2.0, 3.0, 6.0, 100.0, 100.0];
/// let mask = [1, 1, 0];
/// assert_eq!(pool(Pooling::Mean, &hidden, [1, 3, 2], &mask), vec![vec![2.0, 4.0]]);
/// assert_eq!(pool(Pooling::Max, &hidden, [1, 3, 2], &mask), vec![vec![3.0, 6.0]]);
/// assert_eq!(pool(Pooling::Cls, &hidden, [1, 3, 2], &mask), vec![vec![1.0, 2.0]]);
/// assert_eq!(pool(Pooling::LastToken, &hidden, [1, 3, 2], &mask), vec![vec![3.0, 6.0]]);
/// ```
///
/// # Panics
/// When `hidden` or `mask` is shorter than the shape says.
#[must_use]
pub fn pool(pooling: Pooling, hidden: &[f32], shape: [usize; 3], mask: &[i64]) -> Vec<Vec<f32>> {
    let [batch, seq, dim] = shape;
    (0..batch)
        .map(|b| {
            let tokens = &hidden[b * seq * dim..(b + 1) * seq * dim];
            let mask = &mask[b * seq..(b + 1) * seq];
            match pooling {
                Pooling::Cls => tokens[..dim].to_vec(),
                Pooling::Mean => {
                    let mut sum = vec![0.0_f32; dim];
                    let mut count = 0.0_f32;
                    for (token, &m) in tokens.chunks_exact(dim).zip(mask) {
                        if m != 0 {
                            count += 1.0;
                            sum.iter_mut().zip(token).for_each(|(s, v)| *s += v);
                        }
                    }
                    let count = count.max(1e-9);
                    sum.iter_mut().for_each(|s| *s /= count);
                    sum
                }
                Pooling::Max => {
                    // sentence-transformers sets padding to -1e9 before the maximum.
                    let mut max = vec![-1e9_f32; dim];
                    for (token, &m) in tokens.chunks_exact(dim).zip(mask) {
                        if m != 0 {
                            max.iter_mut().zip(token).for_each(|(x, v)| *x = x.max(*v));
                        }
                    }
                    max
                }
                Pooling::LastToken => mask.iter().rposition(|&m| m != 0).map_or_else(
                    || vec![0.0; dim],
                    |last| tokens[last * dim..(last + 1) * dim].to_vec(),
                ),
            }
        })
        .collect()
}

/// Pools a model's `last_hidden_state` for a batch of `batch` texts of `seq_len` tokens.
pub(crate) fn pool_tensor(
    pooling: Pooling,
    hidden: &Tensor,
    batch: usize,
    seq_len: usize,
    mask: &[i64],
) -> Result<Vec<Vec<f32>>, PresetError> {
    let TensorData::Fp32(values) = hidden.data() else {
        return Err(PresetError::output(format!(
            "{LAST_HIDDEN_STATE} is {:?}; a text encoder's output must be fp32",
            hidden.dtype()
        )));
    };
    match *hidden.shape() {
        [b, s, h] if b == batch && s == seq_len => Ok(pool(pooling, values, [b, s, h], mask)),
        _ => Err(PresetError::output(format!(
            "{LAST_HIDDEN_STATE} has shape {:?} but the batch is [{batch}, {seq_len}, hidden]",
            hidden.shape(),
        ))),
    }
}
