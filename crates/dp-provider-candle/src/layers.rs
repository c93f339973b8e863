//! The building blocks the hand-written encoders (BERT, CLIP) share: weights read by name
//! and checked against `config.json`, dense layers whose bias and residual are added in
//! place, layer normalization and the activations Hugging Face configs name.

use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rayon::prelude::*;
use safetensors::SafeTensors;

use crate::cpu_kernels::{
    add_bias_in_place, attention_per_item, exact_gelu, fits, quick_gelu, scaled_softmax_in_place,
    transposed,
};
use crate::error::CandleError;

/// Where a weight tensor comes from and what it must look like.
pub(crate) struct WeightSource<'a> {
    /// The validated safetensors view.
    pub(crate) tensors: &'a SafeTensors<'a>,
    /// The file, for error messages.
    pub(crate) file: &'a Path,
    /// Put before every name: `""`, `"bert."`, `"vision_model."`…
    pub(crate) prefix: &'a str,
    /// The dtype the model runs at.
    pub(crate) dtype: DType,
    /// A narrower dtype each weight is rounded through on its way to `dtype` (a bf16
    /// model computing in f32 on the CPU keeps bf16's values).
    pub(crate) rounding: Option<DType>,
    /// Where the tensors go.
    pub(crate) device: &'a Device,
}

impl WeightSource<'_> {
    /// The tensor `name`, checked to have `shape`, converted to the model's dtype.
    pub(crate) fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor, CandleError> {
        self.get_as(name, shape, self.dtype)
    }

    /// The tensor `name`, checked to have `shape`, converted to `dtype`.
    pub(crate) fn get_as(
        &self,
        name: &str,
        shape: &[usize],
        dtype: DType,
    ) -> Result<Tensor, CandleError> {
        let full = format!("{}{name}", self.prefix);
        let view = self.tensors.tensor(&full).map_err(|_| {
            CandleError::malformed(self.file, format!("tensor '{full}' is missing"))
        })?;
        if view.shape() != shape {
            return Err(CandleError::malformed(
                self.file,
                format!(
                    "tensor '{full}' has shape {:?}, but config.json implies {shape:?}",
                    view.shape()
                ),
            ));
        }
        let stored = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => {
                return Err(CandleError::malformed(
                    self.file,
                    format!("tensor '{full}' has dtype {other:?}; expected F32, F16 or BF16"),
                ));
            }
        };
        // The header validation already checked that the byte length matches shape and
        // dtype, so this copy cannot read out of bounds.
        let tensor = Tensor::from_raw_buffer(view.data(), stored, shape, &Device::Cpu)?;
        let tensor = match self.rounding {
            Some(rounding) if rounding != stored && rounding != dtype => {
                tensor.to_dtype(rounding)?
            }
            _ => tensor,
        };
        let tensor = if tensor.dtype() == dtype {
            tensor
        } else {
            tensor.to_dtype(dtype)?
        };
        Ok(tensor.to_device(self.device)?)
    }
}

/// A dense layer `y = x Wᵀ (+ b)`.
pub(crate) struct Linear {
    /// `[in, out]`, contiguous: checkpoints store `[out, in]`; see [`Self::from_weight`].
    weight_t: Tensor,
    /// `[out]`, where the layer has one.
    bias: Option<Tensor>,
    /// The bias's values where the layer runs in f32 on the CPU, for the in-place kernel.
    bias_values: Option<Vec<f32>>,
    /// CPU gemm has no bf16 kernel: bf16 models keep bf16-rounded weights in f32 and run
    /// the product in f32, as bf16 hardware accumulates in f32.
    widen_bf16: bool,
}

impl Linear {
    /// `{name}.weight` `[out_dim, in_dim]` and `{name}.bias` `[out_dim]`.
    pub(crate) fn load(
        src: &WeightSource<'_>,
        name: &str,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Self, CandleError> {
        let mut layer = Self::load_no_bias(src, name, out_dim, in_dim)?;
        let bias = src.get(&format!("{name}.bias"), &[out_dim])?;
        layer.bias_values = Self::values_for_kernel(&bias)?;
        layer.bias = Some(bias);
        Ok(layer)
    }

    /// `{name}.weight` `[out_dim, in_dim]` alone (CLIP's projections).
    pub(crate) fn load_no_bias(
        src: &WeightSource<'_>,
        name: &str,
        out_dim: usize,
        in_dim: usize,
    ) -> Result<Self, CandleError> {
        Self::from_weight(src, src.get(&format!("{name}.weight"), &[out_dim, in_dim])?)
    }

    /// A layer of `weight` (`[out, in]`, at the source's dtype) without bias.
    pub(crate) fn from_weight(src: &WeightSource<'_>, weight: Tensor) -> Result<Self, CandleError> {
        let widen_bf16 = src.dtype == DType::BF16 && src.device.is_cpu();
        let weight = if widen_bf16 {
            weight.to_dtype(DType::F32)?
        } else {
            weight
        };
        Ok(Self {
            // Transposed once here rather than viewed transposed at each product: gemm then
            // reads the right-hand side row by row when it packs it.
            weight_t: transposed(&weight)?,
            bias: None,
            bias_values: None,
            widen_bf16,
        })
    }

    fn values_for_kernel(bias: &Tensor) -> Result<Option<Vec<f32>>, CandleError> {
        Ok(if fits(bias) {
            Some(bias.to_vec1::<f32>()?)
        } else {
            None
        })
    }

    /// Concatenates several biased layers with the same input along their outputs, so
    /// that one matrix product replaces several (query, key and value).
    pub(crate) fn fuse(parts: &[Self]) -> Result<Self, CandleError> {
        let weights: Vec<&Tensor> = parts.iter().map(|p| &p.weight_t).collect();
        let biases = parts
            .iter()
            .map(|p| p.bias.as_ref())
            .collect::<Option<Vec<&Tensor>>>()
            .ok_or_else(|| CandleError::InvalidInput("fusing a layer without bias".into()))?;
        let bias = Tensor::cat(&biases, 0)?;
        Ok(Self {
            weight_t: Tensor::cat(&weights, 1)?,
            bias_values: Self::values_for_kernel(&bias)?,
            bias: Some(bias),
            widen_bf16: parts.iter().any(|p| p.widen_bf16),
        })
    }

    /// `x`: `[rows, in]` → `[rows, out]`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, CandleError> {
        self.forward_with_residual(x, None)
    }

    /// `x Wᵀ + b`, plus `residual` (`[rows, out]`) where given; on f32 CPU tensors the
    /// bias and residual are added in place, in the product (see [`crate::cpu_kernels`]).
    pub(crate) fn forward_with_residual(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Tensor, CandleError> {
        let y = if self.widen_bf16 {
            x.to_dtype(DType::F32)?
                .matmul(&self.weight_t)?
                .to_dtype(DType::BF16)?
        } else {
            x.matmul(&self.weight_t)?
        };
        if let Some(values) = &self.bias_values
            && fits(&y)
            && y.is_contiguous()
            && residual.is_none_or(|r| fits(r) && r.is_contiguous())
        {
            add_bias_in_place(&y, values, residual)?;
            return Ok(y);
        }
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        Ok(match residual {
            Some(residual) => (y + residual)?,
            None => y,
        })
    }
}

/// Layer normalization over the last dimension.
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    /// `{name}.weight` and `{name}.bias`, both `[dim]`.
    pub(crate) fn load(
        src: &WeightSource<'_>,
        name: &str,
        dim: usize,
        eps: f64,
    ) -> Result<Self, CandleError> {
        Ok(Self {
            weight: src.get(&format!("{name}.weight"), &[dim])?,
            bias: src.get(&format!("{name}.bias"), &[dim])?,
            #[allow(clippy::cast_possible_truncation, reason = "eps is a small constant")]
            eps: eps as f32,
        })
    }

    /// Normalizes each row of `x` (`[.., dim]`).
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor, CandleError> {
        Ok(candle_nn::ops::layer_norm(
            &x.contiguous()?,
            &self.weight,
            &self.bias,
            self.eps,
        )?)
    }
}

/// The activation between a transformer layer's two feed-forward products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    /// Exact GELU (with erf), what Hugging Face calls `gelu`.
    GeluErf,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    GeluTanh,
    /// `x · sigmoid(1.702 x)`, OpenAI CLIP's `quick_gelu`.
    QuickGelu,
    /// ReLU.
    Relu,
}

impl Activation {
    /// The `hidden_act` names this crate runs, for messages.
    pub(crate) const NAMES: &'static str =
        "gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu";

    /// The activation a config's `hidden_act` names, as transformers' `ACT2FN` maps it.
    pub(crate) fn from_config_name(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::GeluErf),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Self::GeluTanh),
            "quick_gelu" => Some(Self::QuickGelu),
            "relu" => Some(Self::Relu),
            _ => None,
        }
    }

    /// Applies the activation to `xs`, a fresh result no other tensor shares: in place
    /// on contiguous f32 CPU tensors where a kernel exists.
    pub(crate) fn apply(self, xs: Tensor) -> Result<Tensor, CandleError> {
        Ok(match self {
            Self::GeluErf => exact_gelu(xs)?,
            Self::GeluTanh => xs.gelu()?,
            Self::QuickGelu => quick_gelu(xs)?,
            Self::Relu => xs.relu()?,
        })
    }
}

/// The fewest tokens (rows × padded length) of a pass run as groups of rows side by side
/// (see [`in_row_groups`]): 32 short texts of 7–14 tokens gained 10 % that way.
const ROW_GROUPS_FROM: usize = 128;

/// Tokens a group of rows aims at (see [`in_row_groups`]): a group's largest activation
/// (MiniLM's 1536-wide feed-forward) then stays in a core's L2 cache. 32 texts of 256
/// tokens on MiniLM, 2 threads: 48 texts/s as two groups of 16, 52/s as groups of two;
/// groups of 1, 4 and 8 texts were no faster.
const GROUP_TOKENS: usize = 512;

/// `run` over the rows `0..rows` of a pass, about `tokens` long each: on f32 CPU passes
/// (`cpu_f32`) of at least [`ROW_GROUPS_FROM`] tokens, as groups of consecutive rows (at
/// least one per rayon thread, about [`GROUP_TOKENS`] tokens each) run side by side;
/// otherwise at once. Outputs are joined in row order; no rows give no output (`run` is
/// not called).
///
/// Within one pass every matrix product is split over the threads and waited for, and the
/// steps between products run while the other threads wait: on MiniLM with 32 texts of 256
/// tokens ~15 % of the two cores' time went idle or to waking threads (`perf`). Groups
/// never wait for each other, and each row's arithmetic is the same in any group (every
/// operation of an encoder works row by row or within one sequence).
pub(crate) fn in_row_groups<T: Send>(
    rows: usize,
    tokens: usize,
    cpu_f32: bool,
    run: impl Fn(Range<usize>) -> Result<Vec<T>, CandleError> + Sync,
) -> Result<Vec<T>, CandleError> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    let threads = rayon::current_num_threads();
    if !cpu_f32 || threads.min(rows) <= 1 || rows * tokens < ROW_GROUPS_FROM {
        return run(0..rows);
    }
    // A whole number of groups per thread, so that no thread is left with the last one.
    let groups = ((rows * tokens).div_ceil(GROUP_TOKENS * threads) * threads).min(rows);
    let (each, extra) = (rows / groups, rows % groups);
    let bounds: Vec<Range<usize>> = (0..groups)
        .scan(0, |start, group| {
            let range = *start..*start + each + usize::from(group < extra);
            *start = range.end;
            Some(range)
        })
        .collect();
    let outputs = bounds
        .into_par_iter()
        .map(&run)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(outputs.into_iter().flatten().collect())
}

/// The shortest padded sequence whose attention runs item by item: on MiniLM, 32 texts of
/// 256 tokens gain 26 % that way, while 32 texts of 10–20 tokens were 3 % slower in an
/// A/B (their score tensors are small enough for candle's batched products).
const PER_ITEM_ATTENTION_FROM: usize = 64;

/// Which keys each query may attend to.
pub(crate) struct AttentionMask {
    /// `[batch, seq]`: 0 for a real key, `f32::MIN` for padding (finite, so that a row with
    /// no real key stays finite instead of NaN); `None` when every key is real.
    key_bias: Option<Vec<f32>>,
    /// Whether query `i` is also kept from the keys after it.
    causal: bool,
    /// The same as an additive tensor for candle's operations, made once per forward pass
    /// where the CPU kernels cannot run (another device or dtype): `[batch, 1, 1, seq]`,
    /// or `[batch, 1, seq, seq]` when causal.
    tensor: Option<Tensor>,
}

impl AttentionMask {
    /// The mask of `batch` rows of `seq` tokens, `keep` (`[batch, seq]`) true for real
    /// tokens (`None`: all real), for a model computing in `dtype` on `device`.
    pub(crate) fn new(
        keep: Option<&[bool]>,
        causal: bool,
        (batch, seq): (usize, usize),
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CandleError> {
        let key_bias: Option<Vec<f32>> = keep.filter(|keep| keep.contains(&false)).map(|keep| {
            keep.iter()
                .map(|&real| if real { 0.0 } else { f32::MIN })
                .collect()
        });
        let tensor = if device.is_cpu() && dtype == DType::F32 {
            None
        } else if causal {
            let mut mask = vec![0.0_f32; batch * seq * seq];
            for (i, value) in mask.iter_mut().enumerate() {
                let (b, query, key) = (i / (seq * seq), (i / seq) % seq, i % seq);
                let padded = key_bias
                    .as_ref()
                    .is_some_and(|bias| bias[b * seq + key] != 0.0);
                if padded || key > query {
                    *value = f32::MIN;
                }
            }
            Some(Tensor::from_vec(mask, (batch, 1, seq, seq), device)?)
        } else {
            key_bias
                .as_ref()
                .map(|bias| Tensor::from_slice(bias, (batch, 1, 1, seq), device))
                .transpose()?
        };
        Ok(Self {
            key_bias,
            causal,
            tensor,
        })
    }
}

/// Multi-head self-attention of a fused `[q | k | v]` projection (`[batch · seq, 3 ·
/// hidden]`): `softmax(q kᵀ / √head_dim + mask) v` with the heads joined again,
/// `[batch · seq, hidden]`. On f32 CPU tensors the scale, mask and softmax are one
/// in-place pass, and long sequences run item by item (see [`attention_per_item`]).
pub(crate) fn self_attention(
    qkv: &Tensor,
    (batch, seq): (usize, usize),
    heads: usize,
    mask: &AttentionMask,
) -> Result<Tensor, CandleError> {
    let hidden = qkv.dim(1)? / 3;
    let head_dim = hidden / heads.max(1);
    let qkv = qkv
        .reshape((batch, seq, 3, heads, head_dim))?
        .permute((2, 0, 3, 1, 4))?
        .contiguous()?;
    let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
    #[allow(clippy::cast_precision_loss, reason = "head widths are small")]
    let scale = 1.0 / (head_dim as f64).sqrt();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "as candle's affine rounds it"
    )]
    let scale_f32 = scale as f32;
    let key_bias = mask.key_bias.as_deref();
    let context = if fits(&q) && batch > 1 && seq >= PER_ITEM_ATTENTION_FROM {
        attention_per_item(&q, &k, &v, scale_f32, key_bias, mask.causal)?
    } else if fits(&q) && batch == 1 && seq >= PER_ITEM_ATTENTION_FROM {
        // One long text: its heads are the items, each head's key bias the text's.
        let per_head = (heads, 1, seq, head_dim);
        let key_bias = key_bias.map(|bias| bias.repeat(heads));
        attention_per_item(
            &q.reshape(per_head)?,
            &k.reshape(per_head)?,
            &v.reshape(per_head)?,
            scale_f32,
            key_bias.as_deref(),
            mask.causal,
        )?
        .reshape((1, heads, seq, head_dim))?
    } else {
        let scores = q.matmul(&k.t()?)?;
        let probs = if fits(&scores) {
            // One pass where candle's ops take three, each with a fresh allocation.
            scaled_softmax_in_place(&scores, scale_f32, key_bias, mask.causal)?;
            scores
        } else {
            let scores = scores.to_dtype(DType::F32)?.affine(scale, 0.0)?;
            let scores = match &mask.tensor {
                Some(tensor) => scores.broadcast_add(tensor)?,
                None => scores,
            };
            candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(q.dtype())?
        };
        probs.matmul(&v)?
    };
    Ok(context.transpose(1, 2)?.reshape((batch * seq, hidden))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `softmax(q kᵀ / √d + mask) v` of one text with candle's operations alone.
    fn attention_by_candle(
        qkv: &Tensor,
        seq: usize,
        heads: usize,
        keep: Option<&[bool]>,
        causal: bool,
    ) -> candle_core::Result<Tensor> {
        let hidden = qkv.dim(1)? / 3;
        let head_dim = hidden / heads;
        let qkv = qkv
            .reshape((1, seq, 3, heads, head_dim))?
            .permute((2, 0, 3, 1, 4))?
            .contiguous()?;
        let (q, k, v) = (qkv.get(0)?, qkv.get(1)?, qkv.get(2)?);
        #[allow(clippy::cast_precision_loss, reason = "small widths")]
        let scale = 1.0 / (head_dim as f64).sqrt();
        let mut mask = vec![0.0_f32; seq * seq];
        for (i, value) in mask.iter_mut().enumerate() {
            let (query, key) = (i / seq, i % seq);
            if keep.is_some_and(|keep| !keep[key]) || (causal && key > query) {
                *value = f32::MIN;
            }
        }
        let mask = Tensor::from_vec(mask, (1, 1, seq, seq), qkv.device())?;
        let scores = q
            .matmul(&k.t()?)?
            .affine(scale, 0.0)?
            .broadcast_add(&mask)?;
        candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((seq, hidden))
    }

    #[test]
    fn one_long_text_attends_head_by_head_as_candle_does() -> Result<(), CandleError> {
        let (heads, head_dim) = (3, 8);
        let seq = PER_ITEM_ATTENTION_FROM + 6;
        let device = Device::Cpu;
        let qkv = Tensor::randn(0_f32, 1.0, (seq, 3 * heads * head_dim), &device)?;
        // The last five tokens padding.
        let keep: Vec<bool> = (0..seq).map(|i| i < seq - 5).collect();
        for (keep, causal) in [
            (None, false),
            (Some(keep.as_slice()), false),
            (None, true),
            (Some(keep.as_slice()), true),
        ] {
            let mask = AttentionMask::new(keep, causal, (1, seq), DType::F32, &device)?;
            let got = self_attention(&qkv, (1, seq), heads, &mask)?;
            let want = attention_by_candle(&qkv, seq, heads, keep, causal)?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(
                diff <= 1e-5,
                "padding {}, causal {causal}: {diff}",
                keep.is_some()
            );
        }
        Ok(())
    }
}
