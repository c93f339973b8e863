//! CLIP (Hugging Face `CLIPModel` layout): `pixel_values` → `image_embeds`, `input_ids`
//! (+ `attention_mask`) → `text_embeds`, and `logit_scale` with either. Pre- and
//! post-processing (resizing, tokenization, L2 normalization, softmax) are the manager's
//! presets; this is a tensor mover.
//!
//! Both towers are written here on candle's operations and this crate's CPU kernels, as
//! transformers' `modeling_clip.py` computes them, rather than taken from
//! candle-transformers' `clip`, for three measured or checked reasons:
//! - speed: on ViT-B/32 shapes (8 images, 2 threads) candle-transformers' vision tower took
//!   605 ms where PyTorch takes 452 ms, although the matrix products alone take the same
//!   ~430 ms on both sides: its element-wise work (quick GELU through four operations,
//!   separate bias and residual additions, unfused softmax) ran on one thread with a fresh
//!   allocation per operation (docs/benchmarks.md);
//! - configs: it implements `quick_gelu` only and fixes `layer_norm_eps` at 1e-5, so
//!   checkpoints with `gelu` (LAION's and most OpenCLIP conversions) could not load;
//! - masks: it applies the causal mask only, so a text batch padded on the left was refused.
//!
//! Every size comes from `config.json`; the tensor names are transformers'.

use std::ops::Range;
use std::path::Path;

use candle_core::{DType, Device, Tensor as CandleTensor};
use dp_spec::tensor_names::{
    ATTENTION_MASK, IMAGE_EMBEDS, INPUT_IDS, LOGIT_SCALE, PIXEL_VALUES, TEXT_EMBEDS,
};
use dp_spec::{ModelError, ModelSpec, NamedTensors, Tensor, TensorDType, TensorData};
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::artifacts::check_tensor;
use crate::artifacts::{ModelFile, small};
use crate::error::CandleError;
use crate::layers::{
    Activation, AttentionMask, LayerNorm, Linear, WeightSource, in_row_groups, self_attention,
};
use crate::{indices, same_shape};

/// transformers' default `hidden_act` of both towers.
const QUICK_GELU: &str = "quick_gelu";

/// `text_config` of a Hugging Face CLIP `config.json`; absent keys take
/// transformers' `CLIPTextConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct TextConfig {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    /// Where the text is pooled: `2` (old OpenAI configs) means `argmax(input_ids)`,
    /// anything else the first position holding this id.
    eos_token_id: i64,
}

impl Default for TextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: QUICK_GELU.to_owned(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

/// `vision_config` of a Hugging Face CLIP `config.json`; absent keys take
/// transformers' `CLIPVisionConfig` defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct VisionConfig {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: QUICK_GELU.to_owned(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// The parts of a CLIP `config.json` the model needs.
#[derive(Debug, Clone)]
pub(crate) struct ClipConfig {
    text: TextConfig,
    vision: VisionConfig,
    /// Width of both projections (`CLIPConfig.projection_dim`, 512 when absent).
    projection_dim: usize,
}

/// `key` of `config`, with `{key}_dict` (the older spelling transformers still honours)
/// laid over it; an absent or null key is an empty object (all defaults).
fn sub_config(config: &serde_json::Map<String, serde_json::Value>, key: &str) -> serde_json::Value {
    let mut merged = serde_json::Map::new();
    for name in [key.to_owned(), format!("{key}_dict")] {
        if let Some(serde_json::Value::Object(fields)) = config.get(&name) {
            for (k, v) in fields {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::Value::Object(merged)
}

impl ClipConfig {
    /// Parses and checks a CLIP `config.json`.
    pub(crate) fn read(file: &ModelFile) -> Result<Self, CandleError> {
        let path = &file.path;
        let malformed = |problem: String| CandleError::malformed(path, problem);
        let value: serde_json::Value = serde_json::from_slice(small(file)?)
            .map_err(|e| malformed(format!("not a CLIP config: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(malformed("not a CLIP config: not a JSON object".into()));
        };
        let text: TextConfig = serde_json::from_value(sub_config(&map, "text_config"))
            .map_err(|e| malformed(format!("text_config: {e}")))?;
        let vision: VisionConfig = serde_json::from_value(sub_config(&map, "vision_config"))
            .map_err(|e| malformed(format!("vision_config: {e}")))?;
        let projection_dim = match map.get("projection_dim") {
            None | Some(serde_json::Value::Null) => 512,
            Some(v) => serde_json::from_value(v.clone())
                .map_err(|e| malformed(format!("projection_dim: {e}")))?,
        };
        let config = Self {
            text,
            vision,
            projection_dim,
        };
        config.check(path)?;
        Ok(config)
    }

    fn check(&self, path: &Path) -> Result<(), CandleError> {
        let (t, v) = (&self.text, &self.vision);
        let sizes = [
            ("text_config.vocab_size", t.vocab_size),
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.intermediate_size", t.intermediate_size),
            ("text_config.num_hidden_layers", t.num_hidden_layers),
            ("text_config.num_attention_heads", t.num_attention_heads),
            (
                "text_config.max_position_embeddings",
                t.max_position_embeddings,
            ),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.intermediate_size", v.intermediate_size),
            ("vision_config.num_hidden_layers", v.num_hidden_layers),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.num_channels", v.num_channels),
            ("vision_config.image_size", v.image_size),
            ("vision_config.patch_size", v.patch_size),
            ("projection_dim", self.projection_dim),
        ];
        // Bounds keep a hostile config from asking for absurd allocations before the
        // weights are even compared with it.
        for (name, value) in sizes {
            if value == 0 || value > 1 << 24 {
                return Err(CandleError::malformed(
                    path,
                    format!("{name} = {value} is out of range (1..=16777216)"),
                ));
            }
        }
        for (tower, hidden, heads) in [
            ("text_config", t.hidden_size, t.num_attention_heads),
            ("vision_config", v.hidden_size, v.num_attention_heads),
        ] {
            if !hidden.is_multiple_of(heads) {
                return Err(CandleError::malformed(
                    path,
                    format!(
                        "{tower}.hidden_size {hidden} is not a multiple of \
                         {tower}.num_attention_heads {heads}"
                    ),
                ));
            }
        }
        if v.patch_size > v.image_size {
            return Err(CandleError::malformed(
                path,
                format!(
                    "vision_config.patch_size {} is larger than vision_config.image_size {}",
                    v.patch_size, v.image_size
                ),
            ));
        }
        for (tower, act, eps) in [
            ("text_config", &t.hidden_act, t.layer_norm_eps),
            ("vision_config", &v.hidden_act, v.layer_norm_eps),
        ] {
            if Activation::from_config_name(act).is_none() {
                return Err(CandleError::malformed(
                    path,
                    format!(
                        "{tower}.hidden_act '{act}' is not supported ({}); serve this model \
                         with the onnx engine instead",
                        Activation::NAMES
                    ),
                ));
            }
            if !(eps > 0.0 && eps < 1.0) {
                return Err(CandleError::malformed(
                    path,
                    format!("{tower}.layer_norm_eps {eps} is out of range (0 < eps < 1)"),
                ));
            }
        }
        Ok(())
    }

    /// Positions of the vision tower: one per patch, plus the class token.
    const fn vision_positions(&self) -> usize {
        let side = self.vision.image_size / self.vision.patch_size;
        side * side + 1
    }

    /// Every tensor the model reads, with the shape `config.json` implies.
    pub(crate) fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (t, v, p) = (&self.text, &self.vision, self.projection_dim);
        let mut out = vec![
            (
                "text_model.embeddings.token_embedding.weight".to_owned(),
                vec![t.vocab_size, t.hidden_size],
            ),
            (
                "text_model.embeddings.position_embedding.weight".to_owned(),
                vec![t.max_position_embeddings, t.hidden_size],
            ),
            (
                "vision_model.embeddings.class_embedding".to_owned(),
                vec![v.hidden_size],
            ),
            (
                "vision_model.embeddings.patch_embedding.weight".to_owned(),
                vec![v.hidden_size, v.num_channels, v.patch_size, v.patch_size],
            ),
            (
                "vision_model.embeddings.position_embedding.weight".to_owned(),
                vec![self.vision_positions(), v.hidden_size],
            ),
            (
                "visual_projection.weight".to_owned(),
                vec![p, v.hidden_size],
            ),
            ("text_projection.weight".to_owned(), vec![p, t.hidden_size]),
            ("logit_scale".to_owned(), vec![]),
        ];
        let norm = |out: &mut Vec<(String, Vec<usize>)>, name: &str, dim: usize| {
            out.push((format!("{name}.weight"), vec![dim]));
            out.push((format!("{name}.bias"), vec![dim]));
        };
        norm(&mut out, "text_model.final_layer_norm", t.hidden_size);
        norm(&mut out, "vision_model.pre_layrnorm", v.hidden_size);
        norm(&mut out, "vision_model.post_layernorm", v.hidden_size);
        for (tower, layers, h, inter) in [
            (
                "text_model",
                t.num_hidden_layers,
                t.hidden_size,
                t.intermediate_size,
            ),
            (
                "vision_model",
                v.num_hidden_layers,
                v.hidden_size,
                v.intermediate_size,
            ),
        ] {
            for i in 0..layers {
                let layer = format!("{tower}.encoder.layers.{i}");
                for (name, rows, cols) in [
                    ("self_attn.q_proj", h, h),
                    ("self_attn.k_proj", h, h),
                    ("self_attn.v_proj", h, h),
                    ("self_attn.out_proj", h, h),
                    ("mlp.fc1", inter, h),
                    ("mlp.fc2", h, inter),
                ] {
                    out.push((format!("{layer}.{name}.weight"), vec![rows, cols]));
                    out.push((format!("{layer}.{name}.bias"), vec![rows]));
                }
                norm(&mut out, &format!("{layer}.layer_norm1"), h);
                norm(&mut out, &format!("{layer}.layer_norm2"), h);
            }
        }
        out
    }
}

/// Checks that every tensor the model reads is in the file with the shape `config.json`
/// implies and a float dtype, without copying any weights.
pub(crate) fn check_tensors(
    config: &ClipConfig,
    tensors: &SafeTensors<'_>,
    file: &Path,
) -> Result<(), CandleError> {
    for (name, shape) in config.expected_tensors() {
        check_tensor(tensors, &name, &shape, file)?;
    }
    Ok(())
}

/// Checks the spec's `input_schema` and `output_schema` against what this CLIP model takes
/// and returns: only its tensor names, their dtypes, ranks and the fixed dimensions
/// `config.json` implies (`-1` in the spec is any size).
pub(crate) fn check_schema(config: &ClipConfig, spec: &ModelSpec) -> Result<(), CandleError> {
    let v = &config.vision;
    let dim = |d: usize| i64::try_from(d).unwrap_or(i64::MAX);
    let ids = [TensorDType::Int64, TensorDType::Int32];
    let fp32 = [TensorDType::Fp32];
    let inputs: [(&str, &[TensorDType], Vec<i64>); 3] = [
        (
            PIXEL_VALUES,
            &fp32,
            vec![
                -1,
                dim(v.num_channels),
                dim(v.image_size),
                dim(v.image_size),
            ],
        ),
        (INPUT_IDS, &ids, vec![-1, -1]),
        (ATTENTION_MASK, &ids, vec![-1, -1]),
    ];
    let p = dim(config.projection_dim);
    let outputs: [(&str, &[TensorDType], Vec<i64>); 3] = [
        (IMAGE_EMBEDS, &fp32, vec![-1, p]),
        (TEXT_EMBEDS, &fp32, vec![-1, p]),
        (LOGIT_SCALE, &fp32, vec![1]),
    ];
    let mismatch = |problem: String| CandleError::SchemaMismatch {
        model: spec.model_name.clone(),
        problem,
    };
    for (kind, declared, actual) in [
        ("input", &spec.input_schema, &inputs),
        ("output", &spec.output_schema, &outputs),
    ] {
        for tensor in declared {
            let Some((_, dtypes, shape)) = actual.iter().find(|(n, ..)| *n == tensor.name) else {
                let names: Vec<&str> = actual.iter().map(|(n, ..)| *n).collect();
                return Err(mismatch(format!(
                    "{kind}_schema declares '{}', but a CLIP model's {kind}s are {names:?}",
                    tensor.name
                )));
            };
            if !dtypes.contains(&tensor.dtype) {
                return Err(mismatch(format!(
                    "{kind} '{}' is {:?} in the spec, but the model's is {:?}",
                    tensor.name, tensor.dtype, dtypes[0]
                )));
            }
            let fits = tensor.shape.len() == shape.len()
                && tensor
                    .shape
                    .iter()
                    .zip(shape)
                    .all(|(&want, &real)| want < 0 || real < 0 || want == real);
            if !fits {
                return Err(mismatch(format!(
                    "{kind} '{}' has shape {:?} in the spec, but config.json implies {shape:?} \
                     (-1 = dynamic)",
                    tensor.name, tensor.shape
                )));
            }
        }
    }
    Ok(())
}

/// One pre-norm transformer layer of either tower (`CLIPEncoderLayer`).
struct EncoderLayer {
    layer_norm1: LayerNorm,
    /// `q_proj`, `k_proj` and `v_proj` as one product.
    qkv: Linear,
    out_proj: Linear,
    layer_norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

/// Either tower's stack of layers (`CLIPEncoder`).
struct Encoder {
    layers: Vec<EncoderLayer>,
    heads: usize,
    activation: Activation,
}

impl Encoder {
    #[allow(clippy::too_many_arguments, reason = "the sizes of one tower's config")]
    fn load(
        src: &WeightSource<'_>,
        layers: usize,
        hidden: usize,
        intermediate: usize,
        heads: usize,
        eps: f64,
        activation: Activation,
    ) -> Result<Self, CandleError> {
        let layers = (0..layers)
            .map(|i| {
                let p = format!("encoder.layers.{i}");
                let proj = |name: &str| {
                    Linear::load(src, &format!("{p}.self_attn.{name}"), hidden, hidden)
                };
                Ok(EncoderLayer {
                    layer_norm1: LayerNorm::load(src, &format!("{p}.layer_norm1"), hidden, eps)?,
                    qkv: Linear::fuse(&[proj("q_proj")?, proj("k_proj")?, proj("v_proj")?])?,
                    out_proj: proj("out_proj")?,
                    layer_norm2: LayerNorm::load(src, &format!("{p}.layer_norm2"), hidden, eps)?,
                    fc1: Linear::load(src, &format!("{p}.mlp.fc1"), intermediate, hidden)?,
                    fc2: Linear::load(src, &format!("{p}.mlp.fc2"), hidden, intermediate)?,
                })
            })
            .collect::<Result<_, CandleError>>()?;
        Ok(Self {
            layers,
            heads,
            activation,
        })
    }

    /// `x`: `[batch * seq, hidden]` → the last hidden state, same shape.
    fn forward(
        &self,
        mut x: CandleTensor,
        batch: usize,
        seq: usize,
        mask: &AttentionMask,
    ) -> Result<CandleTensor, CandleError> {
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, batch, seq, mask)?;
        }
        Ok(x)
    }

    fn layer_forward(
        &self,
        layer: &EncoderLayer,
        x: &CandleTensor,
        b: usize,
        s: usize,
        mask: &AttentionMask,
    ) -> Result<CandleTensor, CandleError> {
        let qkv = layer.qkv.forward(&layer.layer_norm1.forward(x)?)?;
        let context = self_attention(&qkv, (b, s), self.heads, mask)?;
        let x = layer.out_proj.forward_with_residual(&context, Some(x))?;
        let inner = layer.fc1.forward(&layer.layer_norm2.forward(&x)?)?;
        let inner = self.activation.apply(inner)?;
        layer.fc2.forward_with_residual(&inner, Some(&x))
    }
}

/// The text tower with its projection (`CLIPTextTransformer` + `text_projection`).
struct TextTower {
    token_embedding: CandleTensor,
    position_embedding: CandleTensor,
    encoder: Encoder,
    final_layer_norm: LayerNorm,
    projection: Linear,
}

/// The vision tower with its projection (`CLIPVisionTransformer` + `visual_projection`).
struct VisionTower {
    /// The patch convolution as a product: `[hidden, channels · patch²]`.
    patch_embedding: Linear,
    /// `[1, 1, hidden]`.
    class_embedding: CandleTensor,
    /// `[1, positions, hidden]`.
    position_embedding: CandleTensor,
    pre_layrnorm: LayerNorm,
    encoder: Encoder,
    post_layernorm: LayerNorm,
    projection: Linear,
}

/// A loaded CLIP model.
pub(crate) struct Clip {
    text: TextTower,
    vision: VisionTower,
    /// `exp(logit_scale)`, computed once in f32.
    logit_scale: f32,
    config: ClipConfig,
    dtype: DType,
    device: Device,
}

impl Clip {
    /// Builds the model from verified safetensors bytes, checking every tensor against
    /// `config.json` first (so a broken file fails before any weight is copied).
    pub(crate) fn load(
        config: &ClipConfig,
        bytes: &[u8],
        file: &Path,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, CandleError> {
        let view = SafeTensors::deserialize(bytes)
            .map_err(|e| CandleError::malformed(file, format!("not a safetensors file ({e})")))?;
        check_tensors(config, &view, file)?;
        // CPU kernels are slow at bf16 products: a bf16 model on the CPU keeps
        // bf16-rounded weights in f32 and computes in f32 (as verified_var_builder does).
        let (dtype, rounding) = if dtype == DType::BF16 && device.is_cpu() {
            (DType::F32, Some(DType::BF16))
        } else {
            (dtype, None)
        };
        let src = |prefix| WeightSource {
            tensors: &view,
            file,
            prefix,
            dtype,
            rounding,
            device,
        };
        let (t, v, p) = (&config.text, &config.vision, config.projection_dim);
        let activation = |name: &str| {
            Activation::from_config_name(name)
                .ok_or_else(|| CandleError::malformed(file, format!("hidden_act '{name}'")))
        };
        let text_src = src("text_model.");
        let text = TextTower {
            token_embedding: text_src.get(
                "embeddings.token_embedding.weight",
                &[t.vocab_size, t.hidden_size],
            )?,
            position_embedding: text_src.get(
                "embeddings.position_embedding.weight",
                &[t.max_position_embeddings, t.hidden_size],
            )?,
            encoder: Encoder::load(
                &text_src,
                t.num_hidden_layers,
                t.hidden_size,
                t.intermediate_size,
                t.num_attention_heads,
                t.layer_norm_eps,
                activation(&t.hidden_act)?,
            )?,
            final_layer_norm: LayerNorm::load(
                &text_src,
                "final_layer_norm",
                t.hidden_size,
                t.layer_norm_eps,
            )?,
            projection: Linear::load_no_bias(&src(""), "text_projection", p, t.hidden_size)?,
        };
        let vision_src = src("vision_model.");
        let (h, c, ps) = (v.hidden_size, v.num_channels, v.patch_size);
        let patch = vision_src.get("embeddings.patch_embedding.weight", &[h, c, ps, ps])?;
        let vision = VisionTower {
            patch_embedding: Linear::from_weight(&vision_src, patch.reshape((h, c * ps * ps))?)?,
            class_embedding: vision_src
                .get("embeddings.class_embedding", &[h])?
                .reshape((1, 1, h))?,
            position_embedding: vision_src
                .get(
                    "embeddings.position_embedding.weight",
                    &[config.vision_positions(), h],
                )?
                .unsqueeze(0)?,
            pre_layrnorm: LayerNorm::load(&vision_src, "pre_layrnorm", h, v.layer_norm_eps)?,
            encoder: Encoder::load(
                &vision_src,
                v.num_hidden_layers,
                h,
                v.intermediate_size,
                v.num_attention_heads,
                v.layer_norm_eps,
                activation(&v.hidden_act)?,
            )?,
            post_layernorm: LayerNorm::load(&vision_src, "post_layernorm", h, v.layer_norm_eps)?,
            projection: Linear::load_no_bias(&src(""), "visual_projection", p, h)?,
        };
        // Read at full precision whatever the model's dtype: one scalar, used in f32.
        let exact = WeightSource {
            rounding: None,
            ..src("")
        };
        let logit_scale = exact
            .get_as("logit_scale", &[], DType::F32)?
            .to_device(&Device::Cpu)?
            .exp()?
            .to_scalar::<f32>()?;
        Ok(Self {
            text,
            vision,
            logit_scale,
            config: config.clone(),
            dtype,
            device: device.clone(),
        })
    }

    /// Whether passes run in f32 on the CPU (and so may run as groups of rows).
    fn cpu_f32(&self) -> bool {
        self.device.is_cpu() && self.dtype == DType::F32
    }

    /// Width of the embeddings.
    pub(crate) const fn projection_dim(&self) -> usize {
        self.config.projection_dim
    }

    /// `text_projection(final_layer_norm(last hidden state)[pooled])`, row-major
    /// `[batch, projection_dim]`.
    fn text_embeds(&self, input: TextInput) -> Result<Vec<f32>, CandleError> {
        let TextInput {
            ids,
            batch,
            seq,
            pooled,
            keep,
        } = input;
        let tower = &self.text;
        let h = self.config.text.hidden_size;
        let ids = CandleTensor::from_vec(ids, batch * seq, &self.device)?;
        // Positions are 0..seq in every row, padding or not (transformers' position_ids).
        let x = tower
            .token_embedding
            .index_select(&ids, 0)?
            .reshape((batch, seq, h))?
            .broadcast_add(&tower.position_embedding.narrow(0, 0, seq)?)?
            .reshape((batch * seq, h))?;
        // Padded keys are hidden from every query, as transformers adds the padding mask
        // to the causal one.
        let mask = AttentionMask::new(
            keep.as_deref(),
            true,
            (batch, seq),
            self.dtype,
            &self.device,
        )?;
        let hidden = tower.encoder.forward(x, batch, seq, &mask)?;
        let rows = pooled
            .iter()
            .enumerate()
            .map(|(b, &p)| u32::try_from(b * seq + p))
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| CandleError::InvalidInput("the batch is too large".into()))?;
        let rows = CandleTensor::from_vec(rows, batch, &self.device)?;
        // The layer norm works row by row: normalizing the pooled rows alone is the same.
        let pooled = tower
            .final_layer_norm
            .forward(&hidden.index_select(&rows, 0)?)?;
        let embeds = tower.projection.forward(&pooled)?;
        Ok(embeds.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }

    /// `visual_projection(post_layernorm(class token))`, row-major `[batch, projection_dim]`.
    fn image_embeds(&self, pixels: &[f32], shape: &[usize]) -> Result<Vec<f32>, CandleError> {
        let v = &self.config.vision;
        let tower = &self.vision;
        let (b, c, p, h) = (shape[0], v.num_channels, v.patch_size, v.hidden_size);
        let grid = v.image_size / p;
        // The stride-p convolution as one product: each patch's c·p·p pixels in the
        // order of the kernel's weights, patches row by row as the convolution's output
        // is flattened; pixels past the last whole patch are not seen, as with the
        // convolution.
        let pixels = CandleTensor::from_slice(pixels, shape, &self.device)?
            .to_dtype(self.dtype)?
            .narrow(2, 0, grid * p)?
            .narrow(3, 0, grid * p)?
            .reshape((b, c, grid, p, grid, p))?
            .permute([0, 2, 4, 1, 3, 5])?
            .contiguous()?
            .reshape((b * grid * grid, c * p * p))?;
        let patches = tower
            .patch_embedding
            .forward(&pixels)?
            .reshape((b, grid * grid, h))?;
        let class = tower.class_embedding.broadcast_as((b, 1, h))?;
        let seq = grid * grid + 1;
        let x = CandleTensor::cat(&[&class, &patches], 1)?
            .broadcast_add(&tower.position_embedding)?
            .reshape((b * seq, h))?;
        let x = tower.pre_layrnorm.forward(&x)?;
        let mask = AttentionMask::new(None, false, (b, seq), self.dtype, &self.device)?;
        let hidden = tower.encoder.forward(x, b, seq, &mask)?;
        let class_rows = hidden
            .reshape((b, seq, h))?
            .narrow(1, 0, 1)?
            .reshape((b, h))?;
        let pooled = tower.post_layernorm.forward(&class_rows)?;
        let embeds = tower.projection.forward(&pooled)?;
        Ok(embeds.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
    }
}

/// Text inputs checked against the model: ids, their shape and where each row is pooled.
struct TextInput {
    ids: Vec<u32>,
    batch: usize,
    seq: usize,
    pooled: Vec<usize>,
    /// `[batch, seq]` from the attention mask, true for real tokens, where one is given.
    keep: Option<Vec<bool>>,
}

impl TextInput {
    /// The rows `rows` alone.
    fn rows(&self, rows: Range<usize>) -> Self {
        let cells = rows.start * self.seq..rows.end * self.seq;
        Self {
            ids: self.ids[cells.clone()].to_vec(),
            batch: rows.len(),
            seq: self.seq,
            pooled: self.pooled[rows].to_vec(),
            keep: self.keep.as_ref().map(|keep| keep[cells].to_vec()),
        }
    }
}

/// What a CLIP model takes, for messages.
const TAKES: &str = "a CLIP model takes pixel_values (fp32 [batch, channels, image_size, \
                     image_size]) for image_embeds, and/or input_ids (int64 [batch, seq]) with \
                     an optional attention_mask for text_embeds";

impl Clip {
    /// Runs the towers whose inputs are present: `image_embeds` for `pixel_values`,
    /// `text_embeds` for `input_ids`, and `logit_scale` with either.
    pub(crate) fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        if let Some(unknown) = inputs
            .keys()
            .find(|k| ![PIXEL_VALUES, INPUT_IDS, ATTENTION_MASK].contains(&k.as_str()))
        {
            return Err(
                CandleError::InvalidInput(format!("no input named '{unknown}': {TAKES}")).into(),
            );
        }
        let pixels = inputs.get(PIXEL_VALUES);
        let ids = inputs.get(INPUT_IDS);
        if pixels.is_none() && ids.is_none() {
            return Err(CandleError::InvalidInput(format!(
                "neither {PIXEL_VALUES} nor {INPUT_IDS} is given (got {:?}): {TAKES}",
                inputs.keys().collect::<Vec<_>>()
            ))
            .into());
        }
        // Check every input before running anything.
        let image = pixels.map(|p| self.image_input(p)).transpose()?;
        let text = ids
            .map(|ids| self.text_input(ids, inputs.get(ATTENTION_MASK)))
            .transpose()?;
        if ids.is_none() && inputs.contains_key(ATTENTION_MASK) {
            return Err(CandleError::InvalidInput(format!(
                "{ATTENTION_MASK} is given without {INPUT_IDS}"
            ))
            .into());
        }
        let dim = self.projection_dim();
        let mut out = NamedTensors::new();
        if let Some((values, shape)) = image {
            let batch = shape[0];
            let per_image: usize = shape[1..].iter().product();
            let v = &self.config.vision;
            let tokens = (v.image_size / v.patch_size).pow(2) + 1;
            let embeds = in_row_groups(batch, tokens, self.cpu_f32(), |rows| {
                let mut part = shape.clone();
                part[0] = rows.len();
                self.image_embeds(&values[rows.start * per_image..rows.end * per_image], &part)
            })?;
            out.insert(IMAGE_EMBEDS.to_owned(), fp32(vec![batch, dim], embeds)?);
        }
        if let Some(text) = text {
            let batch = text.batch;
            let embeds = in_row_groups(batch, text.seq, self.cpu_f32(), |rows| {
                self.text_embeds(text.rows(rows))
            })?;
            out.insert(TEXT_EMBEDS.to_owned(), fp32(vec![batch, dim], embeds)?);
        }
        out.insert(
            LOGIT_SCALE.to_owned(),
            fp32(vec![1], vec![self.logit_scale])?,
        );
        Ok(out)
    }

    /// The pixels of `pixel_values`, which must fit the vision tower exactly.
    fn image_input<'t>(&self, t: &'t Tensor) -> Result<(&'t [f32], Vec<usize>), CandleError> {
        let v = &self.config.vision;
        let expected = [v.num_channels, v.image_size, v.image_size];
        let TensorData::Fp32(values) = t.data() else {
            return Err(CandleError::InvalidInput(format!(
                "{PIXEL_VALUES} must be fp32, got {:?}",
                t.dtype()
            )));
        };
        match t.shape() {
            [_, rest @ ..] if rest == expected => Ok((values, t.shape().to_vec())),
            other => Err(CandleError::InvalidInput(format!(
                "{PIXEL_VALUES} must be [batch, {}, {}, {}] for this model, got {other:?}",
                expected[0], expected[1], expected[2]
            ))),
        }
    }

    /// The ids, checked, and where transformers pools each row.
    fn text_input(&self, ids: &Tensor, mask: Option<&Tensor>) -> Result<TextInput, CandleError> {
        let t = &self.config.text;
        let [batch, seq] = *ids.shape() else {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_IDS} must be [batch, seq], got shape {:?}",
                ids.shape()
            )));
        };
        if seq > t.max_position_embeddings {
            return Err(CandleError::InvalidInput(format!(
                "sequences of {seq} tokens exceed the model's {} positions; truncate them",
                t.max_position_embeddings
            )));
        }
        if seq == 0 && batch > 0 {
            return Err(CandleError::InvalidInput(format!(
                "{INPUT_IDS} has empty sequences; a CLIP text needs at least its end token"
            )));
        }
        let values = indices(INPUT_IDS, ids, t.vocab_size)?;
        let mask = match mask {
            Some(m) => {
                same_shape(ATTENTION_MASK, m, ids)?;
                Some(indices(ATTENTION_MASK, m, 2)?)
            }
            None => None,
        };
        let pooled = values
            .chunks(seq.max(1))
            .take(batch)
            .map(|row| pooled_position(row, t.eos_token_id))
            .collect();
        Ok(TextInput {
            ids: values,
            batch,
            seq,
            pooled,
            keep: mask.map(|m| m.iter().map(|&v| v != 0).collect()),
        })
    }
}

/// The position transformers' `CLIPTextTransformer` pools a row at: with the original
/// OpenAI configs (`eos_token_id == 2`), the first largest id (`<|endoftext|>` is the
/// largest in CLIP's vocabulary); otherwise the first position holding `eos_token_id`, or 0
/// when there is none (transformers' `argmax` over an all-false row).
pub(crate) fn pooled_position(row: &[u32], eos_token_id: i64) -> usize {
    if eos_token_id == 2 {
        let mut best = 0;
        for (i, &id) in row.iter().enumerate() {
            if id > row[best] {
                best = i;
            }
        }
        best
    } else {
        row.iter()
            .position(|&id| i64::from(id) == eos_token_id)
            .unwrap_or(0)
    }
}

fn fp32(shape: Vec<usize>, values: Vec<f32>) -> Result<Tensor, ModelError> {
    Tensor::new(shape, TensorData::Fp32(values))
}
