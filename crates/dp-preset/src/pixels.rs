//! `image_resize_normalize` (fixed-size resize, rescale, normalize: Places365, MiDaS) and
//! `image_letterbox` (aspect-preserving resize and pad: YOLO): images in, the model's own
//! tensors out.
//!
//! The model's input is the spec's first rank-4 fp32 `input_schema` entry (`input`,
//! `images`, `pixel_values`…), else `pixel_values`. The outputs are the model's tensors,
//! one map per batch; `image_letterbox` adds `letterbox_geometry` (fp32 `[n, 5]`: scale,
//! left pad, top pad, resized width, resized height per image) so boxes can be mapped back
//! to the original image.

use std::collections::BTreeMap;

use dp_spec::{ModelSpec, NamedTensors, Tensor, TensorDType, TensorData, VerifiedArtifacts};
use rayon::prelude::*;
use serde_json::Value;

use crate::artifacts::ArtifactFiles;
use crate::error::PresetError;
use crate::image::{
    ImageLimits, LetterboxConfig, LetterboxGeometry, ResizeNormalizeConfig, decode_rgb, letterbox,
    resize_normalize,
};
use crate::text::batch_size_of;
use crate::{
    BatchContext, EncodedBatch, ImageInput, InputKind, Preset, PresetInputs, PresetOutput,
};

/// The name of the fixed-size preset in specs.
pub const IMAGE_RESIZE_NORMALIZE: &str = "image_resize_normalize";

/// The name of the letterbox preset in specs.
pub const IMAGE_LETTERBOX: &str = "image_letterbox";

/// The output `image_letterbox` adds: per image, scale, left pad, top pad, resized width
/// and height.
pub const LETTERBOX_GEOMETRY: &str = "letterbox_geometry";

/// Images per model call when the spec sets no `max_batch_size`.
const DEFAULT_BATCH_SIZE: usize = 8;

/// Which pixel pipeline.
#[derive(Debug, Clone)]
enum Pipeline {
    ResizeNormalize(ResizeNormalizeConfig),
    Letterbox(LetterboxConfig),
}

/// The `image_resize_normalize` or `image_letterbox` preset of one model.
#[derive(Debug)]
pub struct ImagePixels {
    name: &'static str,
    pipeline: Pipeline,
    input: String,
    limits: ImageLimits,
    params: BTreeMap<String, Value>,
    signature: String,
    batch_size: usize,
}

impl ImagePixels {
    /// The `image_resize_normalize` preset of `spec`: settings from its
    /// `preprocessor_config.json` when listed, else from `preprocess_params`.
    ///
    /// # Errors
    /// `invalid_spec` for missing or malformed settings, or params contradicting the file.
    pub fn resize_normalize(
        spec: &ModelSpec,
        artifacts: &VerifiedArtifacts,
    ) -> Result<Self, PresetError> {
        let files = ArtifactFiles::new(spec, artifacts);
        let file = files.json("preprocessor_config.json")?;
        let config = ResizeNormalizeConfig::from_params(
            &spec.preprocess_params,
            file.as_ref().map(|(_, v)| v),
        )
        .map_err(|err| named(spec, err))?;
        Ok(Self::new(
            IMAGE_RESIZE_NORMALIZE,
            config.params(),
            Pipeline::ResizeNormalize(config),
            spec,
        ))
    }

    /// The `image_letterbox` preset of `spec`, from `preprocess_params` (`image_size`,
    /// `pad_value`, `stride`).
    ///
    /// # Errors
    /// `invalid_spec` for malformed settings.
    pub fn letterbox(
        spec: &ModelSpec,
        _artifacts: &VerifiedArtifacts,
    ) -> Result<Self, PresetError> {
        let config = LetterboxConfig::from_params(&spec.preprocess_params)
            .map_err(|err| named(spec, err))?;
        Ok(Self::new(
            IMAGE_LETTERBOX,
            config.params(),
            Pipeline::Letterbox(config),
            spec,
        ))
    }

    fn new(
        name: &'static str,
        params: BTreeMap<String, Value>,
        pipeline: Pipeline,
        spec: &ModelSpec,
    ) -> Self {
        let input = spec
            .input_schema
            .iter()
            .find(|t| t.dtype == TensorDType::Fp32 && t.shape.len() == 4)
            .map_or_else(
                || dp_spec::tensor_names::PIXEL_VALUES.to_owned(),
                |t| t.name.clone(),
            );
        Self {
            name,
            signature: dp_signature::preprocess_signature(Some(name), &params),
            params,
            pipeline,
            input,
            limits: ImageLimits::default(),
            batch_size: batch_size_of(spec, DEFAULT_BATCH_SIZE),
        }
    }

    /// The name of the model input the pixels go to.
    #[must_use]
    pub fn input_name(&self) -> &str {
        &self.input
    }

    /// One image through the pipeline: CHW floats, their height and width, and (letterbox)
    /// the geometry.
    fn one(
        &self,
        input: &ImageInput,
    ) -> Result<(Vec<f32>, usize, usize, Option<LetterboxGeometry>), PresetError> {
        let rgb = decode_rgb(input, &self.limits)?;
        match &self.pipeline {
            Pipeline::ResizeNormalize(config) => {
                let data = resize_normalize(&rgb, config)?;
                Ok((data, config.height as usize, config.width as usize, None))
            }
            Pipeline::Letterbox(config) => {
                let (_, width, height) = config.geometry(rgb.width(), rgb.height());
                let (data, geometry) = letterbox(&rgb, config)?;
                Ok((data, height as usize, width as usize, Some(geometry)))
            }
        }
    }
}

/// Prefixes a configuration error with the model's name.
fn named(spec: &ModelSpec, err: PresetError) -> PresetError {
    match err {
        PresetError::InvalidConfig { message, file } => PresetError::InvalidConfig {
            message: format!("model {}: {message}", spec.model_name),
            file,
        },
        other => other,
    }
}

impl Preset for ImagePixels {
    fn name(&self) -> &'static str {
        self.name
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
        kind == InputKind::Images
    }

    fn makes_vectors(&self) -> bool {
        false
    }

    fn encode(&self, inputs: PresetInputs<'_>) -> Result<EncodedBatch, PresetError> {
        let PresetInputs::Images(images) = inputs else {
            return Err(crate::refused(self.name, inputs.kind()));
        };
        let done: Vec<_> = images
            .par_iter()
            .enumerate()
            .map(|(i, image)| self.one(image).map_err(|err| crate::clip::at_index(err, i)))
            .collect::<Result<_, _>>()?;
        let (height, width) = done.first().map_or((0, 0), |(_, h, w, _)| (*h, *w));
        if let Some(i) = done
            .iter()
            .position(|(_, h, w, _)| (*h, *w) != (height, width))
        {
            return Err(PresetError::input(
                "image_batch_shapes_differ",
                format!(
                    "image {i} becomes {}x{} but image 0 becomes {width}x{height}; with a \
                     stride the letterbox size follows each image: send such images one per \
                     request",
                    done[i].2, done[i].1
                ),
            ));
        }
        let mut data = Vec::with_capacity(done.len() * 3 * height * width);
        let mut geometries = Vec::new();
        for (pixels, _, _, geometry) in done {
            data.extend(pixels);
            geometries.extend(geometry);
        }
        let tensor = Tensor::new(vec![images.len(), 3, height, width], TensorData::Fp32(data))
            .map_err(|err| PresetError::output(err.message))?;
        Ok(EncodedBatch {
            tensors: NamedTensors::from([(self.input.clone(), tensor)]),
            len: images.len(),
            context: match self.pipeline {
                Pipeline::Letterbox(_) => BatchContext::Letterbox(geometries),
                Pipeline::ResizeNormalize(_) => BatchContext::Resized,
            },
        })
    }

    fn decode(
        &self,
        batch: &EncodedBatch,
        mut outputs: NamedTensors,
    ) -> Result<PresetOutput, PresetError> {
        if let BatchContext::Letterbox(geometries) = &batch.context {
            #[allow(
                clippy::cast_precision_loss,
                reason = "pads and sizes are far below 2^24"
            )]
            let data: Vec<f32> = geometries
                .iter()
                .flat_map(|g| {
                    [
                        g.scale,
                        g.pad_left as f32,
                        g.pad_top as f32,
                        g.resized_width as f32,
                        g.resized_height as f32,
                    ]
                })
                .collect();
            let tensor = Tensor::new(vec![geometries.len(), 5], TensorData::Fp32(data))
                .map_err(|err| PresetError::output(err.message))?;
            outputs.insert(LETTERBOX_GEOMETRY.to_owned(), tensor);
        }
        Ok(PresetOutput::Tensors(vec![outputs]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

    use super::*;
    use crate::image::{Resample, resize};

    fn spec(preset: &str, params: &Value, input: &str) -> ModelSpec {
        serde_json::from_value(serde_json::json!({
            "model_name": "m", "model_version": "1", "role": "object_detection",
            "runtime": "triton", "engine": "onnx", "preprocess_preset": preset,
            "preprocess_params": params,
            "input_schema": [{"name": input, "dtype": "fp32", "shape": [-1, 3, -1, -1]}],
        }))
        .unwrap()
    }

    /// A 6 x 4 RGB image with a gradient.
    fn image() -> ImageInput {
        let pixels = (0..6 * 4 * 3)
            .map(|i| u8::try_from(i * 3).unwrap())
            .collect();
        ImageInput::Rgb8 {
            width: 6,
            height: 4,
            pixels,
        }
    }

    #[test]
    fn resize_normalize_feeds_the_schema_input_with_the_reference_formula() {
        let params = serde_json::json!({"image_size": [2, 3], "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.5, 1.0], "resample": "bilinear"});
        let preset = ImagePixels::resize_normalize(
            &spec(IMAGE_RESIZE_NORMALIZE, &params, "input"),
            &VerifiedArtifacts::empty("/nonexistent"),
        )
        .unwrap();
        assert_eq!(preset.input_name(), "input");
        let batch = preset
            .encode(PresetInputs::Images(&[image(), image()]))
            .unwrap();
        let tensor = &batch.tensors["input"];
        assert_eq!(tensor.shape(), &[2, 3, 2, 3]);
        // (x / 255 - mean) / std of the Pillow-resized pixels, channel-first.
        let ImageInput::Rgb8 { pixels, .. } = image() else {
            unreachable!()
        };
        let rgb = image::RgbImage::from_raw(6, 4, pixels).unwrap();
        let small = resize(&rgb, 3, 2, Resample::Bilinear).unwrap();
        let TensorData::Fp32(values) = tensor.data() else {
            panic!("fp32")
        };
        for (c, (mean, std)) in [(0.5_f32, 0.25_f32), (0.5, 0.5), (0.5, 1.0)]
            .into_iter()
            .enumerate()
        {
            for y in 0..2 {
                for x in 0..3 {
                    let want = (f32::from(small.get_pixel(x, y)[c]) / 255.0 - mean) / std;
                    let got = values[c * 6 + (y as usize) * 3 + x as usize];
                    assert!((got - want).abs() < 1e-6, "c{c} y{y} x{x}: {got} vs {want}");
                }
            }
        }
        assert!(!preset.makes_vectors());
    }

    #[test]
    fn letterbox_pads_to_the_square_and_reports_the_geometry() {
        let params = serde_json::json!({"image_size": 8});
        let preset = ImagePixels::letterbox(
            &spec(IMAGE_LETTERBOX, &params, "images"),
            &VerifiedArtifacts::empty("/nonexistent"),
        )
        .unwrap();
        let batch = preset.encode(PresetInputs::Images(&[image()])).unwrap();
        assert_eq!(batch.tensors["images"].shape(), &[1, 3, 8, 8]);
        let TensorData::Fp32(values) = batch.tensors["images"].data() else {
            panic!("fp32")
        };
        // 6 x 4 scaled by 8/6 to 8 x 5 (round(5.33)), padded 1 row above, 2 below, 114.
        assert!((values[0] - 114.0 / 255.0).abs() < 1e-6, "top pad row");
        let out = preset.decode(&batch, NamedTensors::new()).unwrap();
        let PresetOutput::Tensors(batches) = out else {
            panic!("tensors")
        };
        let TensorData::Fp32(g) = batches[0][LETTERBOX_GEOMETRY].data() else {
            panic!("fp32")
        };
        assert_eq!(g.len(), 5);
        assert!((g[0] - 8.0 / 6.0).abs() < 1e-6);
        assert_eq!(&g[1..], &[0.0, 1.0, 8.0, 5.0]);
        // Texts are refused with a stable reason.
        let err = preset.encode(PresetInputs::Texts(&["a"])).unwrap_err();
        assert!(matches!(
            err,
            PresetError::InvalidInput {
                reason: "texts_unsupported",
                ..
            }
        ));
    }
}
