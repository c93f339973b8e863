//! `image_clip`: CLIP's preprocessing and postprocessing, for image embeddings, text
//! embeddings and zero-shot classification.
//!
//! - Images are decoded, converted to RGB, resized (shortest edge), center-cropped,
//!   rescaled and normalized as `transformers`' `CLIPImageProcessor` (Pillow backend) does,
//!   every setting read from the model's `preprocessor_config.json`
//!   ([`ClipImageConfig`](crate::image::ClipImageConfig)); the model takes `pixel_values`
//!   and returns `image_embeds`.
//! - Texts are tokenized with the model's `tokenizer.json` (truncated to the text tower's
//!   `max_position_embeddings` from `config.json`, 77 for OpenAI's CLIP); the model takes
//!   `input_ids` and `attention_mask` and returns `text_embeds`.
//! - Embeddings are L2-normalized; zero-shot probabilities are the softmax over the labels
//!   of `logit_scale × cosine`, `logit_scale` being the model's (already exponentiated)
//!   output.

use std::collections::BTreeMap;

use dp_spec::tensor_names::{
    ATTENTION_MASK, IMAGE_EMBEDS, INPUT_IDS, LOGIT_SCALE, PIXEL_VALUES, TEXT_EMBEDS,
};
use dp_spec::{ModelSpec, NamedTensors, Tensor, TensorData, VerifiedArtifacts};
use rayon::prelude::*;
use serde_json::Value;

use crate::artifacts::{ArtifactFiles, agree};
use crate::error::PresetError;
use crate::image::{ClipImageConfig, ImageLimits, clip_pixel_values, decode_rgb};
use crate::text::{TextTokenizer, TokenizedBatch, batch_size_of, text_tensors};
use crate::{
    BatchContext, EncodedBatch, ImageInput, InputKind, Preset, PresetInputs, PresetOutput,
    l2_normalize,
};

/// The name of the CLIP preset in specs.
pub const IMAGE_CLIP: &str = "image_clip";

/// Images or texts per model call when the spec sets no `max_batch_size`.
const DEFAULT_BATCH_SIZE: usize = 16;

/// CLIP's text context when `config.json` does not say (OpenAI's models).
const DEFAULT_MAX_LENGTH: usize = 77;

/// CLIP's padding token: the end-of-text token (what `CLIPTokenizer` pads with).
const PAD_TOKENS: [&str; 2] = ["<|endoftext|>", "[PAD]"];

/// The `image_clip` preset of one CLIP model.
pub struct ImageClip {
    image: ClipImageConfig,
    limits: ImageLimits,
    tokenizer: Option<TextTokenizer>,
    params: BTreeMap<String, Value>,
    signature: String,
    batch_size: usize,
}

impl ImageClip {
    /// The preset of `spec`, from the model's verified `preprocessor_config.json`,
    /// `tokenizer.json` (optional: without it the model embeds images only) and
    /// `config.json` (optional: the text context length).
    ///
    /// # Errors
    /// `invalid_spec` when `preprocessor_config.json` is missing or malformed, a file is
    /// not valid JSON, or `preprocess_params` contradict the files.
    pub fn from_spec(spec: &ModelSpec, artifacts: &VerifiedArtifacts) -> Result<Self, PresetError> {
        let files = ArtifactFiles::new(spec, artifacts);
        let (image, processor_path): (ClipImageConfig, Option<std::path::PathBuf>) = match files
            .json("preprocessor_config.json")?
        {
            Some((path, processor)) => (
                ClipImageConfig::from_preprocessor_config(&processor, &path.display().to_string())?,
                Some(path),
            ),
            // A Triton deployment keeps the weights on the server: the spec's parameters
            // are then the whole configuration.
            None => (from_params(&files)?, None),
        };
        let max_length = match files.json("config.json")? {
            Some((path, json)) => text_context(&json)
                .map(|n| {
                    usize::try_from(n).ok().filter(|n| *n > 0).ok_or_else(|| {
                        files.file_error(
                            &path,
                            "text_config.max_position_embeddings is not a positive integer",
                        )
                    })
                })
                .transpose()?
                .unwrap_or(DEFAULT_MAX_LENGTH),
            None => DEFAULT_MAX_LENGTH,
        };
        if let Some(path) = &processor_path {
            check_params(&files, &image, max_length, path)?;
        }
        let tokenizer = match files.find("tokenizer.json") {
            Some(file) => Some(TextTokenizer::from_json(
                file.bytes(),
                files.display(file),
                max_length,
                &PAD_TOKENS,
            )?),
            None => None,
        };
        let mut params = image.params();
        if tokenizer.is_some() {
            params.insert("max_length".to_owned(), Value::from(max_length));
        }
        let signature = dp_signature::preprocess_signature(Some(IMAGE_CLIP), &params);
        Ok(Self {
            image,
            limits: ImageLimits::default(),
            tokenizer,
            params,
            signature,
            batch_size: batch_size_of(spec, DEFAULT_BATCH_SIZE),
        })
    }

    /// The image settings, as read from `preprocessor_config.json`.
    #[must_use]
    pub const fn image_config(&self) -> &ClipImageConfig {
        &self.image
    }

    /// The tokenizer, when the model lists one.
    #[must_use]
    pub const fn tokenizer(&self) -> Option<&TextTokenizer> {
        self.tokenizer.as_ref()
    }

    /// The `pixel_values` of `images`: `[n, 3, crop_h, crop_w]`.
    ///
    /// # Errors
    /// `invalid_input` (with the image's index) for an image that cannot be decoded.
    pub fn pixel_values(&self, images: &[ImageInput]) -> Result<Tensor, PresetError> {
        // Images are independent: decode and resize them in parallel (rayon's pool), then
        // lay them out in input order.
        let per_image: Vec<Vec<f32>> = images
            .par_iter()
            .enumerate()
            .map(|(i, input)| {
                let rgb = decode_rgb(input, &self.limits).map_err(|err| at_index(err, i))?;
                clip_pixel_values(&rgb, &self.image).map_err(|err| at_index(err, i))
            })
            .collect::<Result<_, _>>()?;
        let data = per_image.concat();
        let (h, w) = self.pixel_size();
        Tensor::new(vec![images.len(), 3, h, w], TensorData::Fp32(data))
            .map_err(|err| PresetError::output(err.message))
    }

    /// The height and width of `pixel_values` (the crop, or the resize when not cropping).
    fn pixel_size(&self) -> (usize, usize) {
        (
            self.image.crop_height as usize,
            self.image.crop_width as usize,
        )
    }

    fn tokenize(&self, texts: &[&str]) -> Result<TokenizedBatch, PresetError> {
        let tokenizer = self
            .tokenizer
            .as_ref()
            .ok_or_else(|| crate::refused(IMAGE_CLIP, InputKind::Texts))?;
        tokenizer.encode(texts, None)
    }
}

/// The image settings of a spec without `preprocessor_config.json`: its
/// `preprocess_params` (`image_size`, `mean`, `std`) on top of CLIP's defaults (resize the
/// shortest edge to `image_size` with bicubic, center-crop `image_size`², rescale 1/255).
fn from_params(files: &ArtifactFiles<'_>) -> Result<ClipImageConfig, PresetError> {
    let params = &files.spec.preprocess_params;
    let Some(size) = params.get("image_size") else {
        return Err(PresetError::InvalidConfig {
            message: format!(
                "model {}: preset {IMAGE_CLIP} needs the model's preprocessor_config.json among \
                 local_artifacts, or at least preprocess_params.image_size (with mean and std)",
                files.spec.model_name
            ),
            file: None,
        });
    };
    let size = size
        .as_u64()
        .filter(|n| *n > 0)
        .ok_or_else(|| files.param_error("image_size", "a positive integer"))?;
    let mut processor = serde_json::json!({
        "size": {"shortest_edge": size},
        "crop_size": {"height": size, "width": size},
    });
    for (key, file_key) in [("mean", "image_mean"), ("std", "image_std")] {
        if let Some(value) = params.get(key) {
            processor[file_key] = value.clone();
        }
    }
    if let Some(unknown) = params
        .keys()
        .find(|k| !["image_size", "mean", "std", "max_length"].contains(&k.as_str()))
    {
        return Err(files.param_error(unknown, "one of image_size, mean, std, max_length"));
    }
    ClipImageConfig::from_preprocessor_config(&processor, "preprocess_params")
}

/// `text_config.max_position_embeddings` of a CLIP `config.json` (or of a text-only
/// config at the top level).
fn text_context(config: &Value) -> Option<u64> {
    let text = config.get("text_config").unwrap_or(config);
    text.get("max_position_embeddings").and_then(Value::as_u64)
}

/// The spec's `preprocess_params` may only restate the model's files.
fn check_params(
    files: &ArtifactFiles<'_>,
    image: &ClipImageConfig,
    max_length: usize,
    processor: &std::path::Path,
) -> Result<(), PresetError> {
    let spec = files.spec;
    let from_file = |v: Value| Some((v, processor.to_path_buf()));
    for (key, value) in &spec.preprocess_params {
        let file_value = match key.as_str() {
            "image_size" => {
                if image.crop_height != image.crop_width {
                    Value::from(vec![image.crop_height, image.crop_width])
                } else {
                    Value::from(image.crop_height)
                }
            }
            "mean" => Value::from(image.mean.to_vec()),
            "std" => Value::from(image.std.to_vec()),
            "max_length" => Value::from(max_length),
            other => {
                return Err(files.param_error(
                    other,
                    "one of image_size, mean, std, max_length (preset image_clip reads every \
                     other setting from preprocessor_config.json)",
                ));
            }
        };
        let same = match (value, &file_value) {
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| match (x.as_f64(), y.as_f64()) {
                            (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * y.abs().max(1.0),
                            _ => x == y,
                        })
            }
            (a, b) => a.as_f64().zip(b.as_f64()).map_or(a == b, |(x, y)| x == y),
        };
        if !same {
            agree(spec, key, value, from_file(file_value).as_ref())?;
        }
    }
    Ok(())
}

/// Says which image of the request failed.
pub(crate) fn at_index(err: PresetError, index: usize) -> PresetError {
    match err {
        PresetError::InvalidInput { reason, message } => PresetError::InvalidInput {
            reason,
            message: format!("image {index}: {message}"),
        },
        other => other,
    }
}

/// The rows of a `[n, dim]` fp32 output.
fn rows(outputs: &NamedTensors, name: &str, n: usize) -> Result<Vec<Vec<f32>>, PresetError> {
    let tensor = outputs.get(name).ok_or_else(|| {
        let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
        PresetError::output(format!(
            "the model returned {names:?} but preset {IMAGE_CLIP} needs {name:?}; fix the \
             spec's output_schema or the model"
        ))
    })?;
    let TensorData::Fp32(values) = tensor.data() else {
        return Err(PresetError::output(format!(
            "{name} is {:?}; preset {IMAGE_CLIP} needs fp32",
            tensor.dtype()
        )));
    };
    match *tensor.shape() {
        [rows, dim] if rows == n && dim > 0 => {
            Ok(values.chunks_exact(dim).map(<[f32]>::to_vec).collect())
        }
        _ => Err(PresetError::output(format!(
            "{name} has shape {:?}; preset {IMAGE_CLIP} needs [{n}, dim]",
            tensor.shape()
        ))),
    }
}

fn normalized(mut rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.iter_mut().for_each(|v| l2_normalize(v));
    rows
}

/// `softmax(scale × cosine)` over the labels, per image (embeddings already unit-norm).
#[must_use]
pub fn zero_shot_probabilities(
    images: &[Vec<f32>],
    labels: &[Vec<f32>],
    scale: f32,
) -> Vec<Vec<f32>> {
    images
        .iter()
        .map(|image| {
            let logits: Vec<f32> = labels
                .iter()
                .map(|label| scale * image.iter().zip(label).map(|(a, b)| a * b).sum::<f32>())
                .collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        })
        .collect()
}

impl Preset for ImageClip {
    fn name(&self) -> &'static str {
        IMAGE_CLIP
    }

    fn params(&self) -> &BTreeMap<String, Value> {
        &self.params
    }

    fn preprocess_signature(&self) -> &str {
        &self.signature
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn accepts(&self, kind: InputKind) -> bool {
        kind == InputKind::Images || self.tokenizer.is_some()
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        if !self.accepts(inputs.kind()) {
            return Err(crate::refused(IMAGE_CLIP, inputs.kind()));
        }
        let mut tensors = NamedTensors::new();
        match inputs {
            PresetInputs::Texts(texts) => {
                let batch = self.tokenize(texts)?;
                tensors = text_tensors(&batch, [true, true, false])?;
            }
            PresetInputs::Images(images) => {
                tensors.insert(PIXEL_VALUES.to_owned(), self.pixel_values(images)?);
            }
            PresetInputs::ImagesWithLabels { images, labels } => {
                if labels.is_empty() {
                    return Err(PresetError::input(
                        "labels_missing",
                        "zero-shot classification needs at least one label; give the \
                         candidate labels (e.g. --label \"a photo of a cat\")",
                    ));
                }
                let batch = self.tokenize(labels)?;
                tensors = text_tensors(&batch, [true, true, false])?;
                tensors.insert(PIXEL_VALUES.to_owned(), self.pixel_values(images)?);
            }
            PresetInputs::QueryWithDocuments { .. } | PresetInputs::Audio(_) => {
                return Err(crate::refused(IMAGE_CLIP, inputs.kind()));
            }
        }
        debug_assert!(tensors.contains_key(PIXEL_VALUES) || tensors.contains_key(INPUT_IDS));
        debug_assert!(!tensors.contains_key(INPUT_IDS) || tensors.contains_key(ATTENTION_MASK));
        Ok(EncodedBatch {
            tensors,
            len: inputs.len(),
            context: BatchContext::Kind(inputs.kind()),
        })
    }

    fn decode(
        &self,
        batch: &EncodedBatch,
        outputs: NamedTensors,
    ) -> Result<PresetOutput, PresetError> {
        let BatchContext::Kind(kind) = batch.context else {
            return Err(PresetError::output(
                "image_clip decodes only the batches it encoded",
            ));
        };
        match kind {
            InputKind::Texts => Ok(PresetOutput::Vectors(normalized(rows(
                &outputs,
                TEXT_EMBEDS,
                batch.len,
            )?))),
            InputKind::Images => Ok(PresetOutput::Vectors(normalized(rows(
                &outputs,
                IMAGE_EMBEDS,
                batch.len,
            )?))),
            InputKind::ImagesWithLabels => {
                let labels = batch
                    .tensors
                    .get(INPUT_IDS)
                    .and_then(|t| t.shape().first().copied())
                    .unwrap_or(0);
                let images = normalized(rows(&outputs, IMAGE_EMBEDS, batch.len)?);
                let texts = normalized(rows(&outputs, TEXT_EMBEDS, labels)?);
                let scale = match outputs.get(LOGIT_SCALE).map(Tensor::data) {
                    Some(TensorData::Fp32(v)) if v.len() == 1 => v[0],
                    _ => {
                        return Err(PresetError::output(format!(
                            "zero-shot classification needs the model's {LOGIT_SCALE:?} \
                             (fp32, one value)"
                        )));
                    }
                };
                Ok(PresetOutput::Probabilities(zero_shot_probabilities(
                    &images, &texts, scale,
                )))
            }
            kind @ (InputKind::QueryWithDocuments | InputKind::Audio) => {
                Err(crate::refused(IMAGE_CLIP, kind))
            }
        }
    }
}

impl std::fmt::Debug for ImageClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageClip")
            .field("image", &self.image)
            .field("tokenizer", &self.tokenizer)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}
