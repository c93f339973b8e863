//! T5 (Hugging Face `T5ForConditionalGeneration` layout) as a [`Seq2SeqGenerator`]: the
//! encoder runs once per request, then the decoder one token per row with a key/value
//! cache that the session owns.
//!
//! Written on candle's tensor operations rather than on candle-transformers' `t5`, which
//! cannot serve the generation contract: it keeps one key/value cache inside the model
//! (`&mut self`, so one request at a time), takes no encoder attention mask (a padded batch
//! attends to its padding), cannot reorder its cache for beam search, and buckets the
//! decoder's relative positions as if they were bidirectional (transformers buckets them
//! one-way), which changes the decoder's position bias. Its `Config` shape is followed.
//!
//! Every size comes from `config.json`: T5 v1.0 (ReLU feed-forward, head tied to the
//! embedding and its input scaled by `d_model^-0.5`) and v1.1 / flan (gated GELU, untied
//! `lm_head`), any `d_model`, `d_kv`, `num_heads`, `d_ff`, layer counts and relative
//! attention buckets. Arithmetic follows transformers' `modeling_t5.py`: RMS layer norm
//! without mean or bias, no attention scaling, the relative-position bias computed once per
//! stack (in f32, as torch does: a bucket edge like `log(2)/log(16) * 8 = 2` must truncate
//! the same way) and shared by its layers, padding masked by adding `f32::MIN`.

use std::path::Path;

use candle_core::{D, DType, Device, IndexOp, Module, Tensor as CandleTensor};
use candle_nn::{Activation, Embedding, Linear, VarBuilder};
use dp_spec::tensor_names::{ATTENTION_MASK, INPUT_IDS, LOGITS};
use dp_spec::{DecoderInfo, DecodingSession, ModelError, NamedTensors, Seq2SeqGenerator};
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::artifacts::{ModelFile, check_tensor, small, verified_var_builder};
use crate::decoding::{KeysValues, check_step, row_index, select_cache_rows};
use crate::error::CandleError;
use crate::{indices, same_shape};

/// The fields of a Hugging Face T5 `config.json` the model needs; absent keys take
/// transformers' `T5Config` defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct T5Config {
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_layers: usize,
    num_decoder_layers: Option<usize>,
    num_heads: usize,
    relative_attention_num_buckets: usize,
    relative_attention_max_distance: usize,
    layer_norm_epsilon: f64,
    feed_forward_proj: String,
    tie_word_embeddings: bool,
    /// Whether the decoder's output is scaled by `d_model^-0.5` before the head (newer
    /// transformers writes it; older configs imply it by a tied head).
    scale_decoder_outputs: Option<bool>,
    pad_token_id: u32,
    eos_token_id: EosTokenIds,
    decoder_start_token_id: Option<u32>,
    /// The encoder's input limit T5 checkpoints declare (`n_positions`, 512): relative
    /// positions have no hard limit, but the tokenizer truncates to this.
    n_positions: Option<usize>,
}

/// `eos_token_id`: one id or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EosTokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl Default for T5Config {
    fn default() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 512,
            d_kv: 64,
            d_ff: 2048,
            num_layers: 6,
            num_decoder_layers: None,
            num_heads: 8,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".to_owned(),
            tie_word_embeddings: true,
            scale_decoder_outputs: None,
            pad_token_id: 0,
            eos_token_id: EosTokenIds::One(1),
            decoder_start_token_id: None,
            n_positions: None,
        }
    }
}

/// The feed-forward block's activation and whether it is gated (`gated-gelu`: v1.1).
#[derive(Debug, Clone, Copy)]
struct FeedForwardKind {
    gated: bool,
    activation: Activation,
}

impl T5Config {
    /// Reads and checks `config.json`.
    pub(crate) fn read(file: &ModelFile) -> Result<Self, CandleError> {
        let config: Self = serde_json::from_slice(small(file)?).map_err(|e| {
            CandleError::malformed(&file.path, format!("not a T5 config.json: {e}"))
        })?;
        let bad = |problem: String| CandleError::malformed(&file.path, problem);
        for (name, value) in [
            ("vocab_size", config.vocab_size),
            ("d_model", config.d_model),
            ("d_kv", config.d_kv),
            ("d_ff", config.d_ff),
            ("num_layers", config.num_layers),
            ("num_heads", config.num_heads),
            (
                "relative_attention_num_buckets",
                config.relative_attention_num_buckets,
            ),
        ] {
            if value == 0 {
                return Err(bad(format!("{name} is 0")));
            }
        }
        if config.num_decoder_layers == Some(0) {
            return Err(bad("num_decoder_layers is 0".to_owned()));
        }
        if config.relative_attention_num_buckets < 4
            || config.relative_attention_max_distance <= config.relative_attention_num_buckets / 4
        {
            return Err(bad(format!(
                "relative_attention_num_buckets {} with max distance {} leaves no logarithmic \
                 buckets",
                config.relative_attention_num_buckets, config.relative_attention_max_distance
            )));
        }
        config.feed_forward().map_err(bad)?;
        let vocab = config.vocab_size;
        let ids = config
            .eos_ids()
            .into_iter()
            .chain([config.pad_token_id, config.decoder_start()]);
        if let Some(id) = ids.into_iter().find(|&id| id as usize >= vocab) {
            return Err(bad(format!(
                "special token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        Ok(config)
    }

    fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    fn decoder_start(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or(self.pad_token_id)
    }

    fn eos_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            EosTokenIds::One(id) => vec![*id],
            EosTokenIds::Many(ids) => ids.clone(),
        }
    }

    fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }

    /// transformers' reading of `feed_forward_proj`: `ACT` or `gated-ACT`, where
    /// `gated-gelu` means the tanh approximation (`gelu_new`) for backward compatibility.
    fn feed_forward(&self) -> Result<FeedForwardKind, String> {
        let (gated, name) = match self.feed_forward_proj.split_once('-') {
            Some(("gated", name)) => (true, name),
            None => (false, self.feed_forward_proj.as_str()),
            Some(_) => {
                return Err(format!(
                    "feed_forward_proj {:?} is neither ACT nor gated-ACT",
                    self.feed_forward_proj
                ));
            }
        };
        let activation = match (gated, name) {
            (true, "gelu") | (_, "gelu_new" | "gelu_pytorch_tanh") => Activation::NewGelu,
            (_, "gelu") => Activation::Gelu,
            (_, "relu") => Activation::Relu,
            (_, "silu" | "swish") => Activation::Silu,
            _ => {
                return Err(format!(
                    "feed_forward_proj {:?}: activation {name:?} is not one T5 checkpoints use \
                     (relu, gelu, gelu_new, silu, with or without gated-)",
                    self.feed_forward_proj
                ));
            }
        };
        Ok(FeedForwardKind { gated, activation })
    }

    /// The constants a search needs, for `dtype_bytes`-wide caches.
    fn decoder_info(&self, dtype_bytes: u64) -> DecoderInfo {
        // Keys and values, per layer, per head, per dimension.
        let per_position = 2 * self.decoder_layers() as u64 * self.inner_dim() as u64 * dtype_bytes;
        DecoderInfo {
            decoder_start_token_id: self.decoder_start(),
            eos_token_ids: self.eos_ids(),
            pad_token_id: self.pad_token_id,
            vocab_size: self.vocab_size,
            // Relative positions set no hard limit; the checkpoints' `n_positions` is the
            // length they were trained for, on either side.
            max_target_positions: self.n_positions,
            max_source_positions: self.n_positions,
            self_kv_bytes_per_token: per_position,
            cross_kv_bytes_per_source_token: per_position,
        }
    }
}

/// Checks that the safetensors file holds every tensor of `config`'s T5 with its shape.
pub(crate) fn check_tensors(
    config: &T5Config,
    tensors: &SafeTensors<'_>,
    file: &Path,
) -> Result<(), CandleError> {
    let (d, inner, ff) = (config.d_model, config.inner_dim(), config.d_ff);
    let feed_forward = config
        .feed_forward()
        .map_err(|problem| CandleError::malformed(file, problem))?;
    let mut expected: Vec<(String, Vec<usize>)> =
        vec![("shared.weight".to_owned(), vec![config.vocab_size, d])];
    for (stack, layers) in [
        ("encoder", config.num_layers),
        ("decoder", config.decoder_layers()),
    ] {
        let decoder = stack == "decoder";
        for i in 0..layers {
            let block = format!("{stack}.block.{i}.layer");
            let mut attention = vec!["0.SelfAttention"];
            if decoder {
                attention.push("1.EncDecAttention");
            }
            for part in attention {
                for proj in ["q", "k", "v"] {
                    expected.push((format!("{block}.{part}.{proj}.weight"), vec![inner, d]));
                }
                expected.push((format!("{block}.{part}.o.weight"), vec![d, inner]));
            }
            let ff_layer = if decoder { 2 } else { 1 };
            for norm in 0..=ff_layer {
                expected.push((format!("{block}.{norm}.layer_norm.weight"), vec![d]));
            }
            let dense = format!("{block}.{ff_layer}.DenseReluDense");
            if feed_forward.gated {
                expected.push((format!("{dense}.wi_0.weight"), vec![ff, d]));
                expected.push((format!("{dense}.wi_1.weight"), vec![ff, d]));
            } else {
                expected.push((format!("{dense}.wi.weight"), vec![ff, d]));
            }
            expected.push((format!("{dense}.wo.weight"), vec![d, ff]));
        }
        expected.push((
            format!("{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
            vec![config.relative_attention_num_buckets, config.num_heads],
        ));
        expected.push((format!("{stack}.final_layer_norm.weight"), vec![d]));
    }
    if !config.tie_word_embeddings {
        expected.push(("lm_head.weight".to_owned(), vec![config.vocab_size, d]));
    }
    for (name, shape) in &expected {
        check_tensor(tensors, name, shape, file)?;
    }
    Ok(())
}

/// Checks a T5 spec's schemas: inputs among `input_ids` and `attention_mask` (int64
/// `[batch, seq]`), outputs, if declared, only `logits`.
pub(crate) fn check_schema(spec: &dp_spec::ModelSpec) -> Result<(), CandleError> {
    let mismatch = |problem: String| CandleError::SchemaMismatch {
        model: spec.model_name.clone(),
        problem,
    };
    for tensor in &spec.input_schema {
        if ![INPUT_IDS, ATTENTION_MASK].contains(&tensor.name.as_str()) {
            return Err(mismatch(format!(
                "input_schema declares '{}', but a T5 encoder takes {INPUT_IDS} and \
                 {ATTENTION_MASK}",
                tensor.name
            )));
        }
    }
    if let Some(tensor) = spec.output_schema.iter().find(|t| t.name != LOGITS) {
        return Err(mismatch(format!(
            "output_schema declares '{}', but a T5 decoder returns only {LOGITS}",
            tensor.name
        )));
    }
    Ok(())
}

/// transformers' `_relative_position_bucket`, element for element: `relative_position` is
/// the key's position minus the query's. The logarithmic part is computed in f32 with the
/// divisor's logarithm taken in f64 and rounded to f32, as torch computes it on a float32
/// tensor with a Python scalar, so bucket edges truncate the same way.
fn relative_position_bucket(
    relative_position: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut num_buckets = num_buckets;
    let mut bucket = 0;
    let distance = if bidirectional {
        num_buckets /= 2;
        if relative_position > 0 {
            bucket += num_buckets;
        }
        relative_position.unsigned_abs()
    } else {
        // Only keys at or before the query count; later keys are masked anyway.
        (-relative_position.min(0)).unsigned_abs()
    };
    let max_exact = num_buckets / 2;
    let distance = usize::try_from(distance).unwrap_or(usize::MAX);
    if distance < max_exact {
        return bucket + distance;
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "torch's float32 arithmetic, truncated to an index, is what is replicated"
    )]
    let large = {
        let ratio = (distance as f32 / max_exact as f32).ln();
        let scale = (max_distance as f64 / max_exact as f64).ln() as f32;
        max_exact + (ratio / scale * (num_buckets - max_exact) as f32) as usize
    };
    bucket + large.min(num_buckets - 1)
}

/// T5's layer norm: scale only, no mean subtraction, no bias.
struct RmsNorm {
    weight: CandleTensor,
    eps: f64,
}

impl RmsNorm {
    fn load(vb: &VarBuilder<'_>, size: usize, eps: f64) -> Result<Self, CandleError> {
        Ok(Self {
            weight: vb.get(size, "weight")?,
            eps,
        })
    }

    fn forward(&self, xs: &CandleTensor) -> Result<CandleTensor, CandleError> {
        let dtype = xs.dtype();
        let xs32 = xs.to_dtype(DType::F32)?;
        let variance = xs32.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = xs32.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        Ok(normed.to_dtype(dtype)?.broadcast_mul(&self.weight)?)
    }
}

/// The feed-forward block: `wo(act(wi(x)))`, or `wo(act(wi_0(x)) * wi_1(x))` when gated.
struct FeedForward {
    norm: RmsNorm,
    wi: Linear,
    gate: Option<Linear>,
    wo: Linear,
    activation: Activation,
}

impl FeedForward {
    fn load(vb: &VarBuilder<'_>, config: &T5Config) -> Result<Self, CandleError> {
        let kind = config.feed_forward().map_err(CandleError::InvalidInput)?;
        let dense = vb.pp("DenseReluDense");
        let linear = |name: &str, i, o| candle_nn::linear_no_bias(i, o, dense.pp(name));
        let (d, ff) = (config.d_model, config.d_ff);
        let (wi, gate) = if kind.gated {
            (linear("wi_0", d, ff)?, Some(linear("wi_1", d, ff)?))
        } else {
            (linear("wi", d, ff)?, None)
        };
        Ok(Self {
            norm: RmsNorm::load(&vb.pp("layer_norm"), d, config.layer_norm_epsilon)?,
            wi,
            gate,
            wo: linear("wo", ff, d)?,
            activation: kind.activation,
        })
    }

    /// `xs + FF(norm(xs))`.
    fn residual(&self, xs: &CandleTensor) -> Result<CandleTensor, CandleError> {
        let h = self.norm.forward(xs)?;
        let mut hidden = self.activation.forward(&self.wi.forward(&h)?)?;
        if let Some(gate) = &self.gate {
            hidden = hidden.mul(&gate.forward(&h)?)?;
        }
        Ok((xs + self.wo.forward(&hidden)?)?)
    }
}

/// One attention block's projections and the layer norm before it.
struct Attention {
    norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    d_kv: usize,
}

impl Attention {
    fn load(vb: &VarBuilder<'_>, part: &str, config: &T5Config) -> Result<Self, CandleError> {
        let attention = vb.pp(part);
        let (d, inner) = (config.d_model, config.inner_dim());
        let linear = |name: &str, i, o| candle_nn::linear_no_bias(i, o, attention.pp(name));
        Ok(Self {
            norm: RmsNorm::load(&vb.pp("layer_norm"), d, config.layer_norm_epsilon)?,
            q: linear("q", d, inner)?,
            k: linear("k", d, inner)?,
            v: linear("v", d, inner)?,
            o: linear("o", inner, d)?,
            heads: config.num_heads,
            d_kv: config.d_kv,
        })
    }

    /// `[batch, len, heads * d_kv]` → `[batch, heads, len, d_kv]`.
    fn split_heads(&self, xs: &CandleTensor) -> Result<CandleTensor, CandleError> {
        let (batch, len, _) = xs.dims3()?;
        Ok(xs
            .reshape((batch, len, self.heads, self.d_kv))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Keys and values of `xs` (`[batch, heads, len, d_kv]` each).
    fn keys_values(&self, xs: &CandleTensor) -> Result<(CandleTensor, CandleTensor), CandleError> {
        Ok((
            self.split_heads(&self.k.forward(xs)?)?,
            self.split_heads(&self.v.forward(xs)?)?,
        ))
    }

    /// `softmax(q kᵀ + bias) v`, projected back: `[batch, q_len, d_model]`. T5 does not
    /// scale the scores (its initialization absorbs `1/sqrt(d_kv)`).
    fn attend(
        &self,
        q: &CandleTensor,
        k: &CandleTensor,
        v: &CandleTensor,
        bias: &CandleTensor,
    ) -> Result<CandleTensor, CandleError> {
        let scores = q.matmul(&k.t()?)?.broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let (batch, _, q_len, _) = q.dims4()?;
        let out =
            weights
                .matmul(v)?
                .transpose(1, 2)?
                .reshape((batch, q_len, self.heads * self.d_kv))?;
        Ok(self.o.forward(&out)?)
    }
}

struct EncoderLayer {
    attention: Attention,
    feed_forward: FeedForward,
}

struct DecoderLayer {
    self_attention: Attention,
    cross_attention: Attention,
    feed_forward: FeedForward,
}

/// A loaded T5.
pub(crate) struct T5 {
    shared: Embedding,
    encoder: Vec<EncoderLayer>,
    encoder_norm: RmsNorm,
    /// `[buckets, heads]`, f32 on the host: the bias tables are built per request.
    encoder_bias: Vec<f32>,
    decoder: Vec<DecoderLayer>,
    decoder_norm: RmsNorm,
    decoder_bias: Vec<f32>,
    lm_head: Linear,
    /// `d_model^-0.5` when the decoder output is scaled before the head (v1.0, tied).
    head_scale: Option<f64>,
    config: T5Config,
    info: DecoderInfo,
    dtype: DType,
    device: Device,
}

impl T5 {
    /// Builds the model from verified safetensors bytes.
    pub(crate) fn load(
        config: &T5Config,
        bytes: &[u8],
        file: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CandleError> {
        let view = SafeTensors::deserialize(bytes)
            .map_err(|e| CandleError::malformed(file, format!("not a safetensors file ({e})")))?;
        check_tensors(config, &view, file)?;
        if dtype == DType::F16 {
            return Err(CandleError::InvalidInput(
                "T5 overflows in float16 (its activations exceed 65,504); run it at precision \
                 bf16 or fp32"
                    .to_owned(),
            ));
        }
        let (vb, dtype) = verified_var_builder(bytes, dtype, device)?;
        let d = config.d_model;
        let shared = candle_nn::embedding(config.vocab_size, d, vb.pp("shared"))?;
        let bias_table = |stack: &str| -> Result<Vec<f32>, CandleError> {
            let table = vb
                .pp(stack)
                .pp("block.0.layer.0.SelfAttention.relative_attention_bias")
                .get(
                    (config.relative_attention_num_buckets, config.num_heads),
                    "weight",
                )?;
            Ok(table.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
        };
        let eps = config.layer_norm_epsilon;
        let mut encoder = Vec::with_capacity(config.num_layers);
        for i in 0..config.num_layers {
            let layer = vb.pp(format!("encoder.block.{i}.layer"));
            encoder.push(EncoderLayer {
                attention: Attention::load(&layer.pp("0"), "SelfAttention", config)?,
                feed_forward: FeedForward::load(&layer.pp("1"), config)?,
            });
        }
        let mut decoder = Vec::with_capacity(config.decoder_layers());
        for i in 0..config.decoder_layers() {
            let layer = vb.pp(format!("decoder.block.{i}.layer"));
            decoder.push(DecoderLayer {
                self_attention: Attention::load(&layer.pp("0"), "SelfAttention", config)?,
                cross_attention: Attention::load(&layer.pp("1"), "EncDecAttention", config)?,
                feed_forward: FeedForward::load(&layer.pp("2"), config)?,
            });
        }
        // A head of its own when the file has one (an untied config requires it); else the
        // embedding. The scaling follows the config, as transformers does.
        let lm_head = if view.names().contains(&"lm_head.weight") {
            candle_nn::linear_no_bias(d, config.vocab_size, vb.pp("lm_head"))?
        } else {
            Linear::new(shared.embeddings().clone(), None)
        };
        let scaled = config
            .scale_decoder_outputs
            .unwrap_or(config.tie_word_embeddings);
        #[allow(clippy::cast_precision_loss, reason = "d_model is far below 2^52")]
        let head_scale = scaled.then(|| (d as f64).powf(-0.5));
        let dtype_bytes = dtype.size_in_bytes() as u64;
        Ok(Self {
            encoder_norm: RmsNorm::load(&vb.pp("encoder.final_layer_norm"), d, eps)?,
            decoder_norm: RmsNorm::load(&vb.pp("decoder.final_layer_norm"), d, eps)?,
            encoder_bias: bias_table("encoder")?,
            decoder_bias: bias_table("decoder")?,
            shared,
            encoder,
            decoder,
            lm_head,
            head_scale,
            info: config.decoder_info(dtype_bytes),
            config: config.clone(),
            dtype,
            device: device.clone(),
        })
    }

    /// The bias of `queries` × `keys` positions, `[1, heads, queries.len(), keys]`, from a
    /// stack's bucket table.
    fn position_bias(
        &self,
        table: &[f32],
        queries: std::ops::Range<usize>,
        keys: usize,
        bidirectional: bool,
    ) -> Result<CandleTensor, CandleError> {
        let heads = self.config.num_heads;
        let q_len = queries.len();
        let mut bias = vec![0_f32; heads * q_len * keys];
        for (qi, query) in queries.enumerate() {
            for key in 0..keys {
                #[allow(clippy::cast_possible_wrap, reason = "positions are far below 2^63")]
                let bucket = relative_position_bucket(
                    key as i64 - query as i64,
                    bidirectional,
                    self.config.relative_attention_num_buckets,
                    self.config.relative_attention_max_distance,
                );
                for head in 0..heads {
                    bias[(head * q_len + qi) * keys + key] = table[bucket * heads + head];
                }
            }
        }
        Ok(
            CandleTensor::from_vec(bias, (1, heads, q_len, keys), &self.device)?
                .to_dtype(self.dtype)?,
        )
    }

    /// `0` for real positions and `f32::MIN` for padding, `[batch, 1, 1, seq]`.
    fn padding_bias(&self, mask: &[bool], batch: usize) -> Result<CandleTensor, CandleError> {
        let seq = mask.len() / batch.max(1);
        let values: Vec<f32> = mask
            .iter()
            .map(|&real| if real { 0.0 } else { f32::MIN })
            .collect();
        Ok(
            CandleTensor::from_vec(values, (batch, 1, 1, seq), &self.device)?
                .to_dtype(self.dtype)?,
        )
    }

    /// The encoder's output for `ids` (`[batch, seq]`), and the padding bias.
    fn encode(
        &self,
        ids: Vec<u32>,
        mask: &[bool],
        batch: usize,
        seq: usize,
    ) -> Result<(CandleTensor, CandleTensor), CandleError> {
        let ids = CandleTensor::from_vec(ids, (batch, seq), &self.device)?;
        let mut xs = self.shared.forward(&ids)?;
        let padding = self.padding_bias(mask, batch)?;
        let bias = self
            .position_bias(&self.encoder_bias, 0..seq, seq, true)?
            .broadcast_add(&padding)?;
        for layer in &self.encoder {
            let attention = &layer.attention;
            let h = attention.norm.forward(&xs)?;
            let q = attention.split_heads(&attention.q.forward(&h)?)?;
            let (k, v) = attention.keys_values(&h)?;
            xs = (&xs + attention.attend(&q, &k, &v, &bias)?)?;
            xs = layer.feed_forward.residual(&xs)?;
        }
        Ok((self.encoder_norm.forward(&xs)?, padding))
    }

    /// Checks `input_ids` and `attention_mask` and converts them.
    fn encoder_input(
        &self,
        inputs: &NamedTensors,
    ) -> Result<(Vec<u32>, Vec<bool>, usize, usize), CandleError> {
        if let Some(unknown) = inputs
            .keys()
            .find(|k| ![INPUT_IDS, ATTENTION_MASK].contains(&k.as_str()))
        {
            return Err(CandleError::InvalidInput(format!(
                "a T5 encoder takes {INPUT_IDS} and {ATTENTION_MASK}, not '{unknown}'"
            )));
        }
        let ids = inputs.get(INPUT_IDS).ok_or_else(|| {
            CandleError::InvalidInput(format!("the input '{INPUT_IDS}' is missing"))
        })?;
        let [batch, seq] = *ids.shape() else {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_IDS} must be [batch, seq], got shape {:?}",
                ids.shape()
            )));
        };
        if batch == 0 || seq == 0 {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_IDS} is empty ([{batch}, {seq}]); T5 needs at least one token per row \
                 (its tokenizer always adds </s>)"
            )));
        }
        let input_ids = indices(INPUT_IDS, ids, self.config.vocab_size)?;
        let mask = match inputs.get(ATTENTION_MASK) {
            Some(t) => {
                same_shape(ATTENTION_MASK, t, ids)?;
                indices(ATTENTION_MASK, t, 2)?
                    .into_iter()
                    .map(|m| m == 1)
                    .collect()
            }
            None => vec![true; batch * seq],
        };
        if let Some(row) = mask.chunks(seq).position(|row| !row.contains(&true)) {
            return Err(CandleError::InvalidInput(format!(
                "row {row} of {ATTENTION_MASK} masks every token; each row needs one real token"
            )));
        }
        Ok((input_ids, mask, batch, seq))
    }

    /// One decoder step for `tokens` (one per row) over `state`; the logits, f32
    /// `[rows, vocab]`.
    fn decode_step(&self, state: &mut T5State, tokens: &[u32]) -> Result<Vec<f32>, CandleError> {
        let rows = tokens.len();
        let position = state.decoded;
        let tokens = CandleTensor::from_slice(tokens, (rows, 1), &self.device)?;
        let mut xs = self.shared.forward(&tokens)?;
        let self_bias = self.position_bias(
            &self.decoder_bias,
            position..position + 1,
            position + 1,
            false,
        )?;
        for (i, layer) in self.decoder.iter().enumerate() {
            let attention = &layer.self_attention;
            let h = attention.norm.forward(&xs)?;
            let q = attention.split_heads(&attention.q.forward(&h)?)?;
            let (k, v) = attention.keys_values(&h)?;
            let (k, v) = match state.self_kv[i].take() {
                Some((past_k, past_v)) => (
                    CandleTensor::cat(&[&past_k, &k], 2)?,
                    CandleTensor::cat(&[&past_v, &v], 2)?,
                ),
                None => (k, v),
            };
            xs = (&xs + attention.attend(&q, &k, &v, &self_bias)?)?;
            state.self_kv[i] = Some((k, v));
            let cross = &layer.cross_attention;
            let h = cross.norm.forward(&xs)?;
            let q = cross.split_heads(&cross.q.forward(&h)?)?;
            let (k, v) = &state.cross_kv[i];
            xs = (&xs + cross.attend(&q, k, v, &state.padding)?)?;
            xs = layer.feed_forward.residual(&xs)?;
        }
        let mut xs = self.decoder_norm.forward(&xs)?;
        if let Some(scale) = self.head_scale {
            xs = (xs * scale)?;
        }
        let logits = self.lm_head.forward(&xs.i((.., 0, ..))?)?;
        state.decoded += 1;
        Ok(logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }
}

/// One request's state: cross-attention keys/values per decoder layer, the encoder's
/// padding bias, and the growing self-attention cache.
struct T5State {
    cross_kv: Vec<KeysValues>,
    padding: CandleTensor,
    self_kv: Vec<Option<KeysValues>>,
    rows: usize,
    source_len: usize,
    decoded: usize,
}

/// A running decoding session over a loaded [`T5`] on a provider's threads.
pub(crate) struct T5Session<'a> {
    model: &'a T5,
    pool: &'a rayon::ThreadPool,
    state: T5State,
}

/// [`T5`] with the worker pool it runs on: the provider's generator.
pub(crate) struct T5Generator {
    pub(crate) t5: T5,
    pub(crate) pool: std::sync::Arc<rayon::ThreadPool>,
}

impl Seq2SeqGenerator for T5Generator {
    fn decoder_info(&self) -> &DecoderInfo {
        &self.t5.info
    }

    fn start(
        &self,
        encoder_inputs: &NamedTensors,
    ) -> Result<Box<dyn DecodingSession + '_>, ModelError> {
        let model = &self.t5;
        let (ids, mask, batch, seq) = model.encoder_input(encoder_inputs)?;
        let state = self.pool.install(|| -> Result<T5State, CandleError> {
            let (hidden, padding) = model.encode(ids, &mask, batch, seq)?;
            let cross_kv = model
                .decoder
                .iter()
                .map(|layer| layer.cross_attention.keys_values(&hidden))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(T5State {
                cross_kv,
                padding,
                self_kv: (0..model.decoder.len()).map(|_| None).collect(),
                rows: batch,
                source_len: seq,
                decoded: 0,
            })
        })?;
        Ok(Box::new(T5Session {
            model,
            pool: &self.pool,
            state,
        }))
    }
}

impl DecodingSession for T5Session<'_> {
    fn rows(&self) -> usize {
        self.state.rows
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        check_step(self.state.rows, tokens, self.model.config.vocab_size)?;
        let (model, state) = (self.model, &mut self.state);
        Ok(self.pool.install(|| model.decode_step(state, tokens))?)
    }

    fn select_rows(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        let state = &mut self.state;
        let Some(index) = row_index(rows, state.rows, &self.model.device)? else {
            return Ok(());
        };
        self.pool.install(|| -> Result<(), CandleError> {
            select_cache_rows(&index, &mut state.cross_kv, &mut state.self_kv)?;
            state.padding = state.padding.index_select(&index, 0)?;
            Ok(())
        })?;
        state.rows = rows.len();
        Ok(())
    }

    fn kv_cache_bytes(&self) -> u64 {
        self.model
            .info
            .kv_cache_bytes(self.state.rows, self.state.source_len, self.state.decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_position_bucket;

    #[test]
    fn buckets_follow_transformers() {
        // Bidirectional, 32 buckets, max distance 128: exact up to 7, then logarithmic;
        // keys after the query use the upper half.
        let enc = |rp| relative_position_bucket(rp, true, 32, 128);
        assert_eq!((enc(0), enc(-7), enc(7)), (0, 7, 23));
        // log(16/8)/log(128/8) * 8 = 2 exactly in f32: the edge truncates to 2, not 1.
        assert_eq!(enc(-16), 10);
        assert_eq!((enc(-1000), enc(1000)), (15, 31));
        // One-way (decoder): only past keys, 32 buckets of which 16 exact.
        let dec = |rp| relative_position_bucket(rp, false, 32, 128);
        assert_eq!((dec(0), dec(-15), dec(3)), (0, 15, 0));
        assert_eq!((dec(-16), dec(-1000)), (16, 31));
    }
}
