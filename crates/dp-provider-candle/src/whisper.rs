//! Whisper (Hugging Face `WhisperForConditionalGeneration` layout) as a
//! [`Seq2SeqGenerator`]: the audio encoder runs once per request on log-mel features, then
//! the text decoder one token per row with a key/value cache that the session owns.
//!
//! Written on candle's tensor operations rather than on candle-transformers' `whisper`,
//! whose model cannot serve the generation contract or match transformers exactly: its
//! decoder keeps the cross-attention cache inside the model (`&mut self`, one request at a
//! time) and has no self-attention cache (each step runs the whole prefix again, so a
//! 100-token transcript costs ~50× the decoder work), it cannot reorder rows for beam
//! search, it uses the tanh approximation of GELU where Whisper uses the exact one, it
//! recomputes the encoder's sinusoidal positions instead of reading the checkpoint's
//! `embed_positions`, and it assumes `ffn_dim = 4 × d_model`. Its tensor names and
//! `Config` fields are the ones followed here.
//!
//! Every size comes from `config.json` (`num_mel_bins` 80 or 128, `d_model`, heads, layer
//! counts, feed-forward widths, positions, `activation_function`, `scale_embedding`), so
//! tiny to large-v3 checkpoints load alike. Arithmetic follows transformers'
//! `modeling_whisper.py`: two convolutions with exact GELU, learned (sinusoidal) encoder
//! positions, pre-norm blocks with biased LayerNorm (eps 1e-5), queries scaled by
//! `head_dim^-0.5`, keys without bias, learned decoder positions and a head tied to the
//! token embedding unless the file has its own `proj_out.weight`.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Module, Tensor as CandleTensor};
use candle_nn::{Activation, Conv1d, Conv1dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use dp_spec::tensor_names::{INPUT_FEATURES, LOGITS};
use dp_spec::{DecoderInfo, DecodingSession, ModelError, NamedTensors, Seq2SeqGenerator};
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::artifacts::{ModelFile, check_tensor, small, verified_var_builder};
use crate::cpu_kernels::{blocked_attention, exact_gelu, fits};
use crate::decoding::{KeysValues, check_step, row_index, select_cache_rows};
use crate::error::CandleError;

/// Whisper's layer norms use PyTorch's default epsilon (not a config field).
const LAYER_NORM_EPS: f64 = 1e-5;

/// The fields of a Hugging Face Whisper `config.json` the model needs; absent keys take
/// transformers' `WhisperConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct WhisperConfig {
    vocab_size: usize,
    num_mel_bins: usize,
    d_model: usize,
    encoder_layers: usize,
    encoder_attention_heads: usize,
    decoder_layers: usize,
    decoder_attention_heads: usize,
    encoder_ffn_dim: usize,
    decoder_ffn_dim: usize,
    max_source_positions: usize,
    max_target_positions: usize,
    activation_function: String,
    scale_embedding: bool,
    decoder_start_token_id: u32,
    pad_token_id: u32,
    eos_token_id: u32,
}

impl Default for WhisperConfig {
    fn default() -> Self {
        Self {
            vocab_size: 51865,
            num_mel_bins: 80,
            d_model: 384,
            encoder_layers: 4,
            encoder_attention_heads: 6,
            decoder_layers: 4,
            decoder_attention_heads: 6,
            encoder_ffn_dim: 1536,
            decoder_ffn_dim: 1536,
            max_source_positions: 1500,
            max_target_positions: 448,
            activation_function: "gelu".to_owned(),
            scale_embedding: false,
            decoder_start_token_id: 50257,
            pad_token_id: 50256,
            eos_token_id: 50256,
        }
    }
}

impl WhisperConfig {
    /// Reads and checks `config.json`.
    pub(crate) fn read(file: &ModelFile) -> Result<Self, CandleError> {
        let config: Self = serde_json::from_slice(small(file)?).map_err(|e| {
            CandleError::malformed(&file.path, format!("not a Whisper config.json: {e}"))
        })?;
        let bad = |problem: String| CandleError::malformed(&file.path, problem);
        for (name, value) in [
            ("vocab_size", config.vocab_size),
            ("num_mel_bins", config.num_mel_bins),
            ("d_model", config.d_model),
            ("encoder_layers", config.encoder_layers),
            ("encoder_attention_heads", config.encoder_attention_heads),
            ("decoder_layers", config.decoder_layers),
            ("decoder_attention_heads", config.decoder_attention_heads),
            ("encoder_ffn_dim", config.encoder_ffn_dim),
            ("decoder_ffn_dim", config.decoder_ffn_dim),
            ("max_source_positions", config.max_source_positions),
            ("max_target_positions", config.max_target_positions),
        ] {
            if value == 0 {
                return Err(bad(format!("{name} is 0")));
            }
        }
        for (name, heads) in [
            ("encoder_attention_heads", config.encoder_attention_heads),
            ("decoder_attention_heads", config.decoder_attention_heads),
        ] {
            if !config.d_model.is_multiple_of(heads) {
                return Err(bad(format!(
                    "d_model {} is not a multiple of {name} {heads}",
                    config.d_model
                )));
            }
        }
        config.activation().map_err(bad)?;
        let vocab = config.vocab_size;
        let ids = [
            config.decoder_start_token_id,
            config.pad_token_id,
            config.eos_token_id,
        ];
        if let Some(id) = ids.into_iter().find(|&id| id as usize >= vocab) {
            return Err(bad(format!(
                "special token id {id} is outside the vocabulary of {vocab}"
            )));
        }
        Ok(config)
    }

    /// transformers' `ACT2FN` for the names Whisper checkpoints use.
    fn activation(&self) -> Result<Activation, String> {
        match self.activation_function.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::NewGelu),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" => Ok(Activation::Silu),
            other => Err(format!(
                "activation_function {other:?} is not one Whisper checkpoints use (gelu, \
                 gelu_new, relu, silu)"
            )),
        }
    }

    /// Mel frames per input: two per encoder position (the second convolution has stride 2).
    pub(crate) fn input_frames(&self) -> usize {
        2 * self.max_source_positions
    }

    /// The constants a search needs, for `dtype_bytes`-wide caches.
    fn decoder_info(&self, dtype_bytes: u64) -> DecoderInfo {
        // Keys and values, per layer, per model dimension.
        let per_position = 2 * self.decoder_layers as u64 * self.d_model as u64 * dtype_bytes;
        DecoderInfo {
            decoder_start_token_id: self.decoder_start_token_id,
            eos_token_ids: vec![self.eos_token_id],
            pad_token_id: self.pad_token_id,
            vocab_size: self.vocab_size,
            max_target_positions: Some(self.max_target_positions),
            max_source_positions: Some(self.max_source_positions),
            self_kv_bytes_per_token: per_position,
            cross_kv_bytes_per_source_token: per_position,
        }
    }
}

/// Checks that the safetensors file holds every tensor of `config`'s Whisper with its
/// shape.
pub(crate) fn check_tensors(
    config: &WhisperConfig,
    tensors: &SafeTensors<'_>,
    file: &Path,
) -> Result<(), CandleError> {
    let d = config.d_model;
    let mut expected: Vec<(String, Vec<usize>)> = vec![
        (
            "model.encoder.conv1.weight".to_owned(),
            vec![d, config.num_mel_bins, 3],
        ),
        ("model.encoder.conv1.bias".to_owned(), vec![d]),
        ("model.encoder.conv2.weight".to_owned(), vec![d, d, 3]),
        ("model.encoder.conv2.bias".to_owned(), vec![d]),
        (
            "model.encoder.embed_positions.weight".to_owned(),
            vec![config.max_source_positions, d],
        ),
        (
            "model.decoder.embed_tokens.weight".to_owned(),
            vec![config.vocab_size, d],
        ),
        (
            "model.decoder.embed_positions.weight".to_owned(),
            vec![config.max_target_positions, d],
        ),
    ];
    let norm = |expected: &mut Vec<(String, Vec<usize>)>, prefix: &str| {
        expected.push((format!("{prefix}.weight"), vec![d]));
        expected.push((format!("{prefix}.bias"), vec![d]));
    };
    for (stack, layers, ffn) in [
        ("encoder", config.encoder_layers, config.encoder_ffn_dim),
        ("decoder", config.decoder_layers, config.decoder_ffn_dim),
    ] {
        for i in 0..layers {
            let layer = format!("model.{stack}.layers.{i}");
            let mut attentions = vec!["self_attn"];
            if stack == "decoder" {
                attentions.push("encoder_attn");
            }
            for attention in attentions {
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    expected.push((format!("{layer}.{attention}.{proj}.weight"), vec![d, d]));
                    if proj != "k_proj" {
                        expected.push((format!("{layer}.{attention}.{proj}.bias"), vec![d]));
                    }
                }
                norm(&mut expected, &format!("{layer}.{attention}_layer_norm"));
            }
            expected.push((format!("{layer}.fc1.weight"), vec![ffn, d]));
            expected.push((format!("{layer}.fc1.bias"), vec![ffn]));
            expected.push((format!("{layer}.fc2.weight"), vec![d, ffn]));
            expected.push((format!("{layer}.fc2.bias"), vec![d]));
            norm(&mut expected, &format!("{layer}.final_layer_norm"));
        }
        norm(&mut expected, &format!("model.{stack}.layer_norm"));
    }
    if tensors.names().contains(&"proj_out.weight") {
        expected.push(("proj_out.weight".to_owned(), vec![config.vocab_size, d]));
    }
    for (name, shape) in &expected {
        check_tensor(tensors, name, shape, file)?;
    }
    Ok(())
}

/// Checks a Whisper spec's schemas: inputs, if declared, only `input_features` (fp32
/// `[batch, num_mel_bins, frames]`); outputs, if declared, only `logits`.
pub(crate) fn check_schema(
    config: &WhisperConfig,
    spec: &dp_spec::ModelSpec,
) -> Result<(), CandleError> {
    let mismatch = |problem: String| CandleError::SchemaMismatch {
        model: spec.model_name.clone(),
        problem,
    };
    for tensor in &spec.input_schema {
        if tensor.name != INPUT_FEATURES {
            return Err(mismatch(format!(
                "input_schema declares '{}', but a Whisper encoder takes only {INPUT_FEATURES}",
                tensor.name
            )));
        }
        let mels = i64::try_from(config.num_mel_bins).unwrap_or(i64::MAX);
        let frames = i64::try_from(config.input_frames()).unwrap_or(i64::MAX);
        let fits = matches!(tensor.shape.as_slice(),
            [_, m, f] if (*m < 0 || *m == mels) && (*f < 0 || *f == frames));
        if !fits {
            return Err(mismatch(format!(
                "input '{INPUT_FEATURES}' has shape {:?} in the spec, but config.json implies \
                 [-1, {mels}, {frames}]",
                tensor.shape
            )));
        }
    }
    if let Some(tensor) = spec.output_schema.iter().find(|t| t.name != LOGITS) {
        return Err(mismatch(format!(
            "output_schema declares '{}', but a Whisper decoder returns only {LOGITS}",
            tensor.name
        )));
    }
    Ok(())
}

/// One attention block's projections and the layer norm before it.
struct Attention {
    norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(vb: &VarBuilder<'_>, part: &str, d: usize, heads: usize) -> Result<Self, CandleError> {
        let attention = vb.pp(part);
        Ok(Self {
            norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp(format!("{part}_layer_norm")))?,
            q: candle_nn::linear(d, d, attention.pp("q_proj"))?,
            k: candle_nn::linear_no_bias(d, d, attention.pp("k_proj"))?,
            v: candle_nn::linear(d, d, attention.pp("v_proj"))?,
            out: candle_nn::linear(d, d, attention.pp("out_proj"))?,
            heads,
            head_dim: d / heads,
        })
    }

    /// `[batch, len, d_model]` → `[batch, heads, len, head_dim]`.
    fn split_heads(&self, xs: &CandleTensor) -> Result<CandleTensor, CandleError> {
        let (batch, len, _) = xs.dims3()?;
        Ok(xs
            .reshape((batch, len, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    }

    /// Scaled queries of `xs` (`[batch, heads, len, head_dim]`).
    fn queries(&self, xs: &CandleTensor) -> Result<CandleTensor, CandleError> {
        #[allow(clippy::cast_precision_loss, reason = "head sizes are far below 2^52")]
        let scale = (self.head_dim as f64).powf(-0.5);
        self.split_heads(&(self.q.forward(xs)? * scale)?)
    }

    /// Keys and values of `xs` (`[batch, heads, len, head_dim]` each).
    fn keys_values(&self, xs: &CandleTensor) -> Result<(CandleTensor, CandleTensor), CandleError> {
        Ok((
            self.split_heads(&self.k.forward(xs)?)?,
            self.split_heads(&self.v.forward(xs)?)?,
        ))
    }

    /// `softmax(q kᵀ) v`, projected back: `[batch, q_len, d_model]`.
    fn attend(
        &self,
        q: &CandleTensor,
        k: &CandleTensor,
        v: &CandleTensor,
    ) -> Result<CandleTensor, CandleError> {
        let weights = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        self.merge_heads(&weights.matmul(v)?)
    }

    /// The encoder's self-attention of `xs` (its normed input), `[batch, len, d_model]`:
    /// on f32 CPU tensors by [`blocked_attention`] (the reason is there), else as
    /// [`Self::attend`].
    fn attend_encoder(&self, xs: &CandleTensor) -> Result<CandleTensor, CandleError> {
        let q = self.queries(xs)?;
        let (k, v) = self.keys_values(xs)?;
        if fits(&q) {
            self.merge_heads(&blocked_attention(&q, &k, &v)?)
        } else {
            self.attend(&q, &k, &v)
        }
    }

    /// `[batch, heads, len, head_dim]` → `[batch, len, d_model]`, projected back.
    fn merge_heads(&self, xs: &CandleTensor) -> Result<CandleTensor, CandleError> {
        let (batch, _, len, _) = xs.dims4()?;
        let xs = xs
            .transpose(1, 2)?
            .reshape((batch, len, self.heads * self.head_dim))?;
        Ok(self.out.forward(&xs)?)
    }
}

/// The feed-forward block and the layer norm before it.
struct FeedForward {
    norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl FeedForward {
    fn load(
        vb: &VarBuilder<'_>,
        d: usize,
        ffn: usize,
        activation: Activation,
    ) -> Result<Self, CandleError> {
        Ok(Self {
            norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp("final_layer_norm"))?,
            fc1: candle_nn::linear(d, ffn, vb.pp("fc1"))?,
            fc2: candle_nn::linear(ffn, d, vb.pp("fc2"))?,
            activation,
        })
    }

    /// `xs + fc2(act(fc1(norm(xs))))`; with `vectorized_gelu` (the encoder), an exact GELU
    /// goes through [`exact_gelu`].
    fn residual(
        &self,
        xs: &CandleTensor,
        vectorized_gelu: bool,
    ) -> Result<CandleTensor, CandleError> {
        let h = self.fc1.forward(&self.norm.forward(xs)?)?;
        let h = if vectorized_gelu && matches!(self.activation, Activation::Gelu) {
            exact_gelu(h)?
        } else {
            self.activation.forward(&h)?
        };
        Ok((xs + self.fc2.forward(&h)?)?)
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

/// A loaded Whisper.
pub(crate) struct Whisper {
    conv1: Conv1d,
    conv2: Conv1d,
    encoder_positions: CandleTensor,
    encoder: Vec<EncoderLayer>,
    encoder_norm: LayerNorm,
    embed_tokens: Embedding,
    decoder_positions: CandleTensor,
    decoder: Vec<DecoderLayer>,
    decoder_norm: LayerNorm,
    head: Linear,
    /// `sqrt(d_model)` when `scale_embedding`.
    embed_scale: Option<f64>,
    config: WhisperConfig,
    info: DecoderInfo,
    dtype: DType,
    device: Device,
}

impl Whisper {
    /// Builds the model from verified safetensors bytes.
    pub(crate) fn load(
        config: &WhisperConfig,
        bytes: &[u8],
        file: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CandleError> {
        let view = SafeTensors::deserialize(bytes)
            .map_err(|e| CandleError::malformed(file, format!("not a safetensors file ({e})")))?;
        check_tensors(config, &view, file)?;
        let has_head = view.names().contains(&"proj_out.weight");
        let (vb, dtype) = verified_var_builder(bytes, dtype, device)?;
        let activation = config.activation().map_err(CandleError::InvalidInput)?;
        let d = config.d_model;
        let encoder_vb = vb.pp("model.encoder");
        let conv = |name: &str, inputs: usize, stride: usize| -> Result<Conv1d, CandleError> {
            let vb = encoder_vb.pp(name);
            let conv_config = Conv1dConfig {
                padding: 1,
                stride,
                dilation: 1,
                groups: 1,
                cudnn_fwd_algo: None,
            };
            Ok(Conv1d::new(
                vb.get((d, inputs, 3), "weight")?,
                Some(vb.get(d, "bias")?),
                conv_config,
            ))
        };
        let conv1 = conv("conv1", config.num_mel_bins, 1)?;
        let conv2 = conv("conv2", d, 2)?;
        let encoder_positions = encoder_vb
            .pp("embed_positions")
            .get((config.max_source_positions, d), "weight")?;
        let encoder = (0..config.encoder_layers)
            .map(|i| -> Result<EncoderLayer, CandleError> {
                let layer = encoder_vb.pp(format!("layers.{i}"));
                Ok(EncoderLayer {
                    attention: Attention::load(
                        &layer,
                        "self_attn",
                        d,
                        config.encoder_attention_heads,
                    )?,
                    feed_forward: FeedForward::load(&layer, d, config.encoder_ffn_dim, activation)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let decoder_vb = vb.pp("model.decoder");
        let embed_tokens =
            candle_nn::embedding(config.vocab_size, d, decoder_vb.pp("embed_tokens"))?;
        let decoder_positions = decoder_vb
            .pp("embed_positions")
            .get((config.max_target_positions, d), "weight")?;
        let decoder = (0..config.decoder_layers)
            .map(|i| -> Result<DecoderLayer, CandleError> {
                let layer = decoder_vb.pp(format!("layers.{i}"));
                let heads = config.decoder_attention_heads;
                Ok(DecoderLayer {
                    self_attention: Attention::load(&layer, "self_attn", d, heads)?,
                    cross_attention: Attention::load(&layer, "encoder_attn", d, heads)?,
                    feed_forward: FeedForward::load(&layer, d, config.decoder_ffn_dim, activation)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let head = if has_head {
            candle_nn::linear_no_bias(d, config.vocab_size, vb.pp("proj_out"))?
        } else {
            Linear::new(embed_tokens.embeddings().clone(), None)
        };
        #[allow(clippy::cast_precision_loss, reason = "d_model is far below 2^52")]
        let embed_scale = config.scale_embedding.then(|| (d as f64).sqrt());
        Ok(Self {
            conv1,
            conv2,
            encoder_positions,
            encoder,
            encoder_norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, encoder_vb.pp("layer_norm"))?,
            embed_tokens,
            decoder_positions,
            decoder,
            decoder_norm: candle_nn::layer_norm(d, LAYER_NORM_EPS, decoder_vb.pp("layer_norm"))?,
            head,
            embed_scale,
            info: config.decoder_info(dtype.size_in_bytes() as u64),
            config: config.clone(),
            dtype,
            device: device.clone(),
        })
    }

    /// Checks `input_features` (`[batch, num_mel_bins, 2 × max_source_positions]` fp32)
    /// and makes it a tensor.
    fn encoder_input(&self, inputs: &NamedTensors) -> Result<CandleTensor, CandleError> {
        if let Some(unknown) = inputs.keys().find(|k| k.as_str() != INPUT_FEATURES) {
            return Err(CandleError::InvalidInput(format!(
                "a Whisper encoder takes {INPUT_FEATURES} only, not '{unknown}'"
            )));
        }
        let features = inputs.get(INPUT_FEATURES).ok_or_else(|| {
            CandleError::InvalidInput(format!("the input '{INPUT_FEATURES}' is missing"))
        })?;
        let (mels, frames) = (self.config.num_mel_bins, self.config.input_frames());
        let [batch, m, f] = *features.shape() else {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_FEATURES} must be [batch, {mels}, {frames}], got shape {:?}",
                features.shape()
            )));
        };
        if batch == 0 || m != mels || f != frames {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_FEATURES} must be [batch ≥ 1, {mels}, {frames}] (log-mel features of \
                 30-second chunks, as the audio_log_mel preset makes them), got \
                 [{batch}, {m}, {f}]"
            )));
        }
        let dp_spec::TensorData::Fp32(values) = features.data() else {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_FEATURES} must be fp32, got {:?}",
                features.data().dtype()
            )));
        };
        if let Some(bad) = values.iter().position(|v| !v.is_finite()) {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_FEATURES} value {bad} is not a finite number"
            )));
        }
        Ok(CandleTensor::from_slice(values, (batch, m, f), &self.device)?.to_dtype(self.dtype)?)
    }

    /// The encoder's output for `features` (`[batch, mels, frames]`):
    /// `[batch, max_source_positions, d_model]`.
    fn encode(&self, features: &CandleTensor) -> Result<CandleTensor, CandleError> {
        // The convolutions' GELU is exact whatever activation_function says, as in
        // transformers.
        let xs = exact_gelu(self.conv1.forward(features)?)?;
        let xs = exact_gelu(self.conv2.forward(&xs)?)?.transpose(1, 2)?;
        let mut xs = xs.broadcast_add(&self.encoder_positions)?;
        for layer in &self.encoder {
            let attention = &layer.attention;
            xs = (&xs + attention.attend_encoder(&attention.norm.forward(&xs)?)?)?;
            xs = layer.feed_forward.residual(&xs, true)?;
        }
        Ok(self.encoder_norm.forward(&xs)?)
    }

    /// One decoder step for `tokens` (one per row) over `state`; the logits, f32
    /// `[rows, vocab]`.
    fn decode_step(
        &self,
        state: &mut WhisperState,
        tokens: &[u32],
    ) -> Result<Vec<f32>, CandleError> {
        let rows = tokens.len();
        let position = state.decoded;
        let tokens = CandleTensor::from_slice(tokens, (rows, 1), &self.device)?;
        let mut xs = self.embed_tokens.forward(&tokens)?;
        if let Some(scale) = self.embed_scale {
            xs = (xs * scale)?;
        }
        let positions = self.decoder_positions.narrow(0, position, 1)?;
        xs = xs.broadcast_add(&positions)?;
        for (i, layer) in self.decoder.iter().enumerate() {
            let attention = &layer.self_attention;
            let h = attention.norm.forward(&xs)?;
            let q = attention.queries(&h)?;
            let (k, v) = attention.keys_values(&h)?;
            let (k, v) = match state.self_kv[i].take() {
                Some((past_k, past_v)) => (
                    CandleTensor::cat(&[&past_k, &k], 2)?,
                    CandleTensor::cat(&[&past_v, &v], 2)?,
                ),
                None => (k, v),
            };
            xs = (&xs + attention.attend(&q, &k, &v)?)?;
            state.self_kv[i] = Some((k, v));
            let cross = &layer.cross_attention;
            let h = cross.norm.forward(&xs)?;
            let q = cross.queries(&h)?;
            let (k, v) = &state.cross_kv[i];
            xs = (&xs + cross.attend(&q, k, v)?)?;
            xs = layer.feed_forward.residual(&xs, false)?;
        }
        let xs = self.decoder_norm.forward(&xs)?;
        let logits = self.head.forward(&xs.i((.., 0, ..))?)?;
        state.decoded += 1;
        Ok(logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }
}

/// One request's state: cross-attention keys/values per decoder layer and the growing
/// self-attention cache.
struct WhisperState {
    cross_kv: Vec<KeysValues>,
    self_kv: Vec<Option<KeysValues>>,
    rows: usize,
    decoded: usize,
}

/// [`Whisper`] with the worker pool it runs on: the provider's generator.
pub(crate) struct WhisperGenerator {
    pub(crate) whisper: Whisper,
    pub(crate) pool: std::sync::Arc<rayon::ThreadPool>,
}

/// A running decoding session over a loaded [`Whisper`].
struct WhisperSession<'a> {
    model: &'a Whisper,
    pool: &'a rayon::ThreadPool,
    state: WhisperState,
}

impl Seq2SeqGenerator for WhisperGenerator {
    fn decoder_info(&self) -> &DecoderInfo {
        &self.whisper.info
    }

    fn start(
        &self,
        encoder_inputs: &NamedTensors,
    ) -> Result<Box<dyn DecodingSession + '_>, ModelError> {
        let model = &self.whisper;
        let features = model.encoder_input(encoder_inputs)?;
        let state = self.pool.install(|| -> Result<WhisperState, CandleError> {
            let rows = features.dim(0)?;
            let hidden = model.encode(&features)?;
            let cross_kv = model
                .decoder
                .iter()
                .map(|layer| layer.cross_attention.keys_values(&hidden))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(WhisperState {
                cross_kv,
                self_kv: (0..model.decoder.len()).map(|_| None).collect(),
                rows,
                decoded: 0,
            })
        })?;
        Ok(Box::new(WhisperSession {
            model,
            pool: &self.pool,
            state,
        }))
    }
}

impl DecodingSession for WhisperSession<'_> {
    fn rows(&self) -> usize {
        self.state.rows
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
        check_step(self.state.rows, tokens, self.model.config.vocab_size)?;
        let limit = self.model.config.max_target_positions;
        if self.state.decoded >= limit {
            return Err(CandleError::InvalidInput(format!(
                "the decoder's {limit} positions are used up; ask for fewer new tokens"
            ))
            .into());
        }
        let (model, state) = (self.model, &mut self.state);
        Ok(self.pool.install(|| model.decode_step(state, tokens))?)
    }

    fn select_rows(&mut self, rows: &[usize]) -> Result<(), ModelError> {
        let state = &mut self.state;
        let Some(index) = row_index(rows, state.rows, &self.model.device)? else {
            return Ok(());
        };
        self.pool
            .install(|| select_cache_rows(&index, &mut state.cross_kv, &mut state.self_kv))?;
        state.rows = rows.len();
        Ok(())
    }

    fn kv_cache_bytes(&self) -> u64 {
        self.model.info.kv_cache_bytes(
            self.state.rows,
            self.model.config.max_source_positions,
            self.state.decoded,
        )
    }
}
