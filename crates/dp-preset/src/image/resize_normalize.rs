//! `image_resize_normalize`: a fixed-size Pillow resize, then `(x * rescale - mean) / std`
//! (Places365, MiDaS, DPT).

use std::collections::BTreeMap;

use ::image::RgbImage;
use serde_json::Value;

use super::params::{Source, channels_json, to_chw};
use super::resize::{Resample, resize};
use crate::error::PresetError;

/// The file name messages give the `preprocessor_config.json` settings.
const FILE: &str = "preprocessor_config.json";

/// The spec's `preprocess_params` keys this preset reads.
const KNOWN_PARAMS: [&str; 5] = ["image_size", "resample", "mean", "std", "rescale_factor"];

/// The settings of `image_resize_normalize`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeNormalizeConfig {
    /// Rows after the resize.
    pub height: u32,
    /// Columns after the resize.
    pub width: u32,
    /// The Pillow filter (bilinear unless the file or the spec says otherwise, transformers'
    /// default for `resize`).
    pub resample: Resample,
    /// The rescale factor (1/255, or 1 when the file sets `do_rescale: false`).
    pub rescale_factor: f64,
    /// Per-channel mean (R, G, B), subtracted after rescaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f32; 3],
}

impl ResizeNormalizeConfig {
    /// Builds the settings from the spec's `preprocess_params` (`image_size`: an integer
    /// or `[h, w]`; `resample`: a filter name; `mean`, `std`; `rescale_factor`) and, when
    /// the model has one, its `preprocessor_config.json` in Hugging Face layout (`size`
    /// `{"height", "width"}`, `resample`, `image_mean`, `image_std`, `rescale_factor`,
    /// `do_rescale`, `do_normalize`). The file wins; the spec may only restate it.
    ///
    /// # Errors
    /// `invalid_spec` for a malformed or unknown value, a missing size, mean or std, a file
    /// asking for steps this preset does not do (cropping, keeping the aspect ratio), and a
    /// spec value that contradicts the file (the error names both).
    pub fn from_params(
        params: &BTreeMap<String, Value>,
        preprocessor_config: Option<&Value>,
    ) -> Result<Self, PresetError> {
        if let Some(key) = params.keys().find(|k| !KNOWN_PARAMS.contains(&k.as_str())) {
            return Err(PresetError::InvalidConfig {
                message: format!(
                    "preprocess_params.{key} is not a setting of image_resize_normalize; \
                     known: {}",
                    KNOWN_PARAMS.join(", ")
                ),
                file: None,
            });
        }
        let spec = Settings::from_spec(params)?;
        let file = preprocessor_config.map(Settings::from_file).transpose()?;
        let file = file.unwrap_or_default();
        let size = merge("image_size", spec.size, file.size)?;
        let resample = merge("resample", spec.resample, file.resample)?;
        let rescale_factor = merge("rescale_factor", spec.rescale_factor, file.rescale_factor)?;
        let mean = merge("mean", spec.mean, file.mean)?;
        let std = merge("std", spec.std, file.std)?;
        let missing = |key: &str| PresetError::InvalidConfig {
            message: format!(
                "image_resize_normalize needs preprocess_params.{key} (or the model's \
                 {FILE}); add it to the spec"
            ),
            file: None,
        };
        let (height, width) = size.ok_or_else(|| missing("image_size"))?;
        Ok(Self {
            height,
            width,
            resample: resample.unwrap_or(Resample::Bilinear),
            rescale_factor: rescale_factor.unwrap_or(1.0 / 255.0),
            mean: mean.ok_or_else(|| missing("mean"))?,
            std: std.ok_or_else(|| missing("std"))?,
        })
    }

    /// The canonical parameters: `image_size` `[h, w]`, `resample`, `rescale_factor`,
    /// `mean`, `std`.
    #[must_use]
    pub fn params(&self) -> BTreeMap<String, Value> {
        BTreeMap::from([
            (
                "image_size".into(),
                Value::from(vec![self.height, self.width]),
            ),
            ("resample".into(), Value::from(self.resample.name())),
            ("rescale_factor".into(), Value::from(self.rescale_factor)),
            ("mean".into(), channels_json(self.mean)),
            ("std".into(), channels_json(self.std)),
        ])
    }
}

/// What one source (spec or file) sets.
#[derive(Debug, Default)]
struct Settings {
    size: Option<(u32, u32)>,
    resample: Option<Resample>,
    rescale_factor: Option<f64>,
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
}

impl Settings {
    /// The spec's `preprocess_params`.
    fn from_spec(params: &BTreeMap<String, Value>) -> Result<Self, PresetError> {
        let source = Source::Spec;
        let mut out = Self::default();
        if let Some(value) = params.get("image_size") {
            out.size = Some(match value {
                Value::Array(hw) if hw.len() == 2 => (
                    source.size("image_size", &hw[0])?,
                    source.size("image_size", &hw[1])?,
                ),
                Value::Number(_) => {
                    let side = source.size("image_size", value)?;
                    (side, side)
                }
                _ => {
                    return Err(source.error("image_size", value, "an integer or [height, width]"));
                }
            });
        }
        if let Some(value) = params.get("resample") {
            out.resample = Some(
                value
                    .as_str()
                    .and_then(Resample::from_name)
                    .ok_or_else(|| {
                        source.error(
                            "resample",
                            value,
                            "nearest, bilinear, bicubic, lanczos, box or hamming",
                        )
                    })?,
            );
        }
        if let Some(value) = params.get("rescale_factor") {
            out.rescale_factor = Some(source.positive("rescale_factor", value)?);
        }
        if let Some(value) = params.get("mean") {
            out.mean = Some(source.channels("mean", value, false)?);
        }
        if let Some(value) = params.get("std") {
            out.std = Some(source.channels("std", value, true)?);
        }
        Ok(out)
    }

    /// A `preprocessor_config.json` in Hugging Face layout.
    fn from_file(json: &Value) -> Result<Self, PresetError> {
        let source = Source::File(FILE);
        let Value::Object(map) = json else {
            return Err(source.error("the top level", json, "a JSON object"));
        };
        let get = |key: &str| map.get(key).filter(|v| !v.is_null());
        let flag = |key: &str| get(key).map(|v| source.bool(key, v)).transpose();
        for (key, refused) in [
            ("do_resize", false),
            ("do_center_crop", true),
            ("keep_aspect_ratio", true),
            ("do_pad", true),
        ] {
            if flag(key)? == Some(refused) {
                return Err(source.error(
                    key,
                    &Value::Bool(refused),
                    &format!(
                        "{} for image_resize_normalize (a plain fixed-size resize)",
                        !refused
                    ),
                ));
            }
        }
        let mut out = Self::default();
        if let Some(size) = get("size") {
            let want = "{\"height\": h, \"width\": w} or an integer";
            out.size = Some(match size {
                Value::Number(_) => {
                    let side = source.size("size", size)?;
                    (side, side)
                }
                Value::Object(hw) => match (hw.get("height"), hw.get("width")) {
                    (Some(h), Some(w)) if hw.len() == 2 => (
                        source.size("size.height", h)?,
                        source.size("size.width", w)?,
                    ),
                    _ => return Err(source.error("size", size, want)),
                },
                _ => return Err(source.error("size", size, want)),
            });
        }
        if let Some(value) = get("resample") {
            out.resample =
                Some(value.as_i64().and_then(Resample::from_pil).ok_or_else(|| {
                    source.error("resample", value, "a PIL filter code from 0 to 5")
                })?);
        }
        out.rescale_factor = match (flag("do_rescale")?, get("rescale_factor")) {
            (Some(false), _) => Some(1.0),
            (_, Some(value)) => Some(source.positive("rescale_factor", value)?),
            (_, None) => None,
        };
        if flag("do_normalize")? == Some(false) {
            out.mean = Some([0.0; 3]);
            out.std = Some([1.0; 3]);
        } else {
            if let Some(value) = get("image_mean") {
                out.mean = Some(source.channels("image_mean", value, false)?);
            }
            if let Some(value) = get("image_std") {
                out.std = Some(source.channels("image_std", value, true)?);
            }
        }
        Ok(out)
    }
}

/// The file's value, unless the spec says something else.
fn merge<T: PartialEq + std::fmt::Debug>(
    key: &str,
    spec: Option<T>,
    file: Option<T>,
) -> Result<Option<T>, PresetError> {
    match (spec, file) {
        (Some(spec), Some(file)) if spec != file => Err(PresetError::config(
            FILE,
            format!(
                "preprocess_params.{key} is {spec:?} but {FILE} says {file:?}; make them agree \
                 (the spec may only restate the model's files)"
            ),
        )),
        (spec, file) => Ok(file.or(spec)),
    }
}

/// Resizes `img` to the configured size with Pillow's filter and normalizes it: CHW
/// floats, `[3, height, width]`.
///
/// # Errors
/// `invalid_input` (`image_empty`) for an empty image.
pub fn resize_normalize(
    img: &RgbImage,
    cfg: &ResizeNormalizeConfig,
) -> Result<Vec<f32>, PresetError> {
    let resized = resize(img, cfg.width, cfg.height, cfg.resample)?;
    let mut out = Vec::new();
    to_chw(
        &resized,
        Some(cfg.rescale_factor),
        Some((cfg.mean, cfg.std)),
        &mut out,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(value).expect("an object")
    }

    #[test]
    fn spec_only_and_file_agreement() {
        let spec = params(json!({"image_size": 224, "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225]}));
        let cfg = ResizeNormalizeConfig::from_params(&spec, None).expect("valid");
        assert_eq!(
            (cfg.height, cfg.width, cfg.resample),
            (224, 224, Resample::Bilinear)
        );
        let file = json!({"size": {"height": 384, "width": 384}, "resample": 3,
                          "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]});
        let spec = params(json!({"image_size": 384, "mean": [0.5, 0.5, 0.5]}));
        let cfg = ResizeNormalizeConfig::from_params(&spec, Some(&file)).expect("agree");
        assert_eq!(cfg.resample, Resample::Bicubic);
        let spec = params(json!({"image_size": 256}));
        let err = ResizeNormalizeConfig::from_params(&spec, Some(&file)).expect_err("disagree");
        assert!(err.to_string().contains("(256, 256)") && err.to_string().contains("(384, 384)"));
    }

    #[test]
    fn unknown_and_missing_are_refused() {
        let spec = params(json!({"image_size": 224, "mean": 0.5, "std": 0.5, "sise": 1}));
        assert!(ResizeNormalizeConfig::from_params(&spec, None).is_err());
        let spec = params(json!({"image_size": 224}));
        assert!(ResizeNormalizeConfig::from_params(&spec, None).is_err());
    }
}
