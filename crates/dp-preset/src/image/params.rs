//! Reading and writing the settings of the image presets (JSON values of
//! `preprocessor_config.json` and of the spec's `preprocess_params`).

use serde_json::Value;

use crate::error::PresetError;

/// Where a setting comes from, for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Source<'a> {
    /// A key of a model file.
    File(&'a str),
    /// A key of the spec's `preprocess_params`.
    Spec,
}

impl Source<'_> {
    /// `invalid_spec` saying `key` is `value` and must be `want`.
    pub(crate) fn error(self, key: &str, value: &Value, want: &str) -> PresetError {
        match self {
            Self::File(file) => PresetError::config(
                file,
                format!("{file}: {key} is {value}; it must be {want}; fix the file"),
            ),
            Self::Spec => PresetError::InvalidConfig {
                message: format!("preprocess_params.{key} is {value}; it must be {want}"),
                file: None,
            },
        }
    }

    /// A boolean.
    pub(crate) fn bool(self, key: &str, value: &Value) -> Result<bool, PresetError> {
        value
            .as_bool()
            .ok_or_else(|| self.error(key, value, "true or false"))
    }

    /// A positive integer that fits in `u32`.
    pub(crate) fn size(self, key: &str, value: &Value) -> Result<u32, PresetError> {
        value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| self.error(key, value, "a positive integer"))
    }

    /// A positive, finite number.
    pub(crate) fn positive(self, key: &str, value: &Value) -> Result<f64, PresetError> {
        value
            .as_f64()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| self.error(key, value, "a positive number"))
    }

    /// Three per-channel numbers (a single number stands for all three, as transformers
    /// accepts); `positive` refuses zero and negatives (a standard deviation).
    pub(crate) fn channels(
        self,
        key: &str,
        value: &Value,
        positive: bool,
    ) -> Result<[f32; 3], PresetError> {
        let want = if positive {
            "three positive numbers (R, G, B)"
        } else {
            "three numbers (R, G, B)"
        };
        let number = |v: &Value| {
            v.as_f64()
                .filter(|x| x.is_finite() && (!positive || *x > 0.0))
                .map(|x| x as f32)
        };
        let out = match value {
            Value::Array(items) if items.len() == 3 => {
                let mut out = [0.0; 3];
                for (slot, item) in out.iter_mut().zip(items) {
                    *slot = number(item).ok_or_else(|| self.error(key, value, want))?;
                }
                Some(out)
            }
            Value::Number(_) => number(value).map(|x| [x; 3]),
            _ => None,
        };
        out.ok_or_else(|| self.error(key, value, want))
    }
}

/// A number as JSON, for the canonical parameters: an `f32` setting is written with the
/// shortest decimal that gives that `f32` back (`0.48145467` for CLIP's `0.48145466`, not
/// `0.4814546704292297`): the value the computation uses, short and stable.
pub(crate) fn f32_json(x: f32) -> Value {
    x.to_string()
        .parse::<f64>()
        .map_or(Value::Null, Value::from)
}

/// Three channels as a JSON array.
pub(crate) fn channels_json(values: [f32; 3]) -> Value {
    Value::Array(values.into_iter().map(f32_json).collect())
}

/// Makes 8-bit RGB pixels into CHW floats: `x * rescale_factor` computed in `f64` and
/// stored as `f32` (transformers' `rescale`), then `(x - mean) / std` in `f32`
/// (transformers' `normalize`). One lookup table per channel: there are only 256 inputs.
pub(crate) fn to_chw(
    img: &::image::RgbImage,
    rescale: Option<f64>,
    normalize: Option<([f32; 3], [f32; 3])>,
    out: &mut Vec<f32>,
) {
    let mut tables = [[0.0_f32; 256]; 3];
    for (channel, table) in tables.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            let mut x = match rescale {
                Some(factor) => (v as f64 * factor) as f32,
                None => v as f32,
            };
            if let Some((mean, std)) = normalize {
                x = (x - mean[channel]) / std[channel];
            }
            *slot = x;
        }
    }
    let raw = img.as_raw();
    out.reserve(raw.len());
    for (channel, table) in tables.iter().enumerate() {
        out.extend(
            raw.iter()
                .skip(channel)
                .step_by(3)
                .map(|&v| table[usize::from(v)]),
        );
    }
}
