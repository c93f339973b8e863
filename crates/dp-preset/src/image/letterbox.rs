//! `image_letterbox`: Ultralytics' `LetterBox` (YOLO): scale to fit the square keeping
//! the aspect ratio, OpenCV-style bilinear resize, constant border, RGB CHW / 255.

use std::collections::BTreeMap;

use ::image::{Rgb, RgbImage};
use fast_image_resize::{FilterType, ResizeAlg};
use serde_json::Value;

use super::params::Source;
use super::resize::resize_with;
use crate::error::PresetError;

/// The settings of `image_letterbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LetterboxConfig {
    /// The side of the square target (640).
    pub size: u32,
    /// The gray of the border (114).
    pub pad_value: u8,
    /// `Some(stride)`: pad only to the next multiple of `stride` (Ultralytics'
    /// `auto=True`, a rectangle); `None`: pad to the full square (`auto=False`).
    pub stride: Option<u32>,
}

impl Default for LetterboxConfig {
    /// Ultralytics' defaults: 640, gray 114, full square.
    fn default() -> Self {
        Self {
            size: 640,
            pad_value: 114,
            stride: None,
        }
    }
}

/// Where the resized image sits in the letterboxed one, to map boxes back:
/// `x_original = (x - pad_left) / scale`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxGeometry {
    /// The scale from the original image to the resized one.
    pub scale: f32,
    /// Border columns on the left.
    pub pad_left: u32,
    /// Border rows on top.
    pub pad_top: u32,
    /// Columns of the resized image (without border).
    pub resized_width: u32,
    /// Rows of the resized image (without border).
    pub resized_height: u32,
}

impl LetterboxConfig {
    /// Reads the spec's `preprocess_params`: `image_size` (an integer, or `[n, n]`),
    /// `pad_value` (0–255), `stride` (an integer, or `null` for the full square); missing
    /// keys keep [`Self::default`].
    ///
    /// # Errors
    /// `invalid_spec` naming the key for an unknown key or a malformed value.
    pub fn from_params(params: &BTreeMap<String, Value>) -> Result<Self, PresetError> {
        let source = Source::Spec;
        let mut cfg = Self::default();
        for (key, value) in params {
            match key.as_str() {
                "image_size" => {
                    cfg.size = match value {
                        Value::Array(hw) if hw.len() == 2 && hw[0] == hw[1] => {
                            source.size(key, &hw[0])?
                        }
                        _ => source.size(key, value).map_err(|_| {
                            source.error(key, value, "an integer (the square's side) or [n, n]")
                        })?,
                    };
                }
                "pad_value" => {
                    cfg.pad_value = value
                        .as_u64()
                        .and_then(|v| u8::try_from(v).ok())
                        .ok_or_else(|| source.error(key, value, "an integer from 0 to 255"))?;
                }
                "stride" => {
                    cfg.stride = match value {
                        Value::Null => None,
                        _ => Some(source.size(key, value)?),
                    };
                }
                _ => {
                    return Err(PresetError::InvalidConfig {
                        message: format!(
                            "preprocess_params.{key} is not a setting of image_letterbox; \
                             known: image_size, pad_value, stride"
                        ),
                        file: None,
                    });
                }
            }
        }
        Ok(cfg)
    }

    /// The canonical parameters: `image_size`, `pad_value`, `stride` (`null` for the full
    /// square).
    #[must_use]
    pub fn params(&self) -> BTreeMap<String, Value> {
        BTreeMap::from([
            ("image_size".into(), Value::from(self.size)),
            ("pad_value".into(), Value::from(self.pad_value)),
            (
                "stride".into(),
                self.stride.map_or(Value::Null, Value::from),
            ),
        ])
    }

    /// The geometry and the letterboxed `(width, height)` of an image of `width` x
    /// `height`, with Ultralytics' arithmetic (Python's half-to-even `round`).
    #[must_use]
    pub fn geometry(&self, width: u32, height: u32) -> (LetterboxGeometry, u32, u32) {
        let target = f64::from(self.size);
        let r = (target / f64::from(height)).min(target / f64::from(width));
        let unpad_w = (f64::from(width) * r).round_ties_even().max(1.0);
        let unpad_h = (f64::from(height) * r).round_ties_even().max(1.0);
        let (mut dw, mut dh) = (target - unpad_w, target - unpad_h);
        if let Some(stride) = self.stride {
            dw = dw.rem_euclid(f64::from(stride));
            dh = dh.rem_euclid(f64::from(stride));
        }
        let (dw, dh) = (dw / 2.0, dh / 2.0);
        let side = |v: f64| v.round_ties_even().max(0.0) as u32;
        let (top, bottom) = (side(dh - 0.1), side(dh + 0.1));
        let (left, right) = (side(dw - 0.1), side(dw + 0.1));
        let (unpad_w, unpad_h) = (unpad_w as u32, unpad_h as u32);
        (
            LetterboxGeometry {
                scale: r as f32,
                pad_left: left,
                pad_top: top,
                resized_width: unpad_w,
                resized_height: unpad_h,
            },
            unpad_w + left + right,
            unpad_h + top + bottom,
        )
    }
}

/// Letterboxes `img`: CHW floats `[3, H, W]` in `[0, 1]` (`x / 255` in `f32`, as
/// Ultralytics divides), `H = W = size` without a stride, and where the image landed.
///
/// # Errors
/// `invalid_input` (`image_empty`) for an empty image.
pub fn letterbox(
    img: &RgbImage,
    cfg: &LetterboxConfig,
) -> Result<(Vec<f32>, LetterboxGeometry), PresetError> {
    let (geometry, out_w, out_h) = cfg.geometry(img.width(), img.height());
    // cv2.INTER_LINEAR: a 2-tap interpolation that is never widened (no antialiasing).
    let resized = resize_with(
        img,
        geometry.resized_width,
        geometry.resized_height,
        ResizeAlg::Interpolation(FilterType::Bilinear),
    )?;
    let mut canvas = RgbImage::from_pixel(out_w, out_h, Rgb([cfg.pad_value; 3]));
    ::image::imageops::replace(
        &mut canvas,
        &resized,
        i64::from(geometry.pad_left),
        i64::from(geometry.pad_top),
    );
    let raw = canvas.as_raw();
    let mut out = Vec::with_capacity(raw.len());
    for channel in 0..3 {
        out.extend(
            raw.iter()
                .skip(channel)
                .step_by(3)
                .map(|&v| f32::from(v) / 255.0),
        );
    }
    Ok((out, geometry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn geometry_matches_ultralytics() {
        let cfg = LetterboxConfig::default();
        // 810x1080 (bus.jpg): r = 640/1080, unpad = (480, 640), dw = 160 → 80 + 80.
        let (g, w, h) = cfg.geometry(810, 1080);
        assert_eq!(
            (g.resized_width, g.resized_height, g.pad_left, g.pad_top),
            (480, 640, 80, 0)
        );
        assert_eq!((w, h), (640, 640));
        // An odd border: 641 wide → 640 x 1 (round(0.998) = 1); dh = 639/2 = 319.5 →
        // top round(319.4) = 319, bottom round(319.6) = 320.
        let (g, _, h) = cfg.geometry(641, 1);
        assert_eq!((g.resized_height, g.pad_top, h), (1, 319, 640));
        let strided = LetterboxConfig {
            stride: Some(32),
            ..cfg
        };
        let (_, w, h) = strided.geometry(810, 1080);
        assert_eq!((w, h), (480, 640));
    }

    #[test]
    fn params_round_trip() {
        let params = BTreeMap::from([
            ("image_size".to_owned(), json!(640)),
            ("stride".to_owned(), json!(32)),
        ]);
        let cfg = LetterboxConfig::from_params(&params).expect("valid");
        assert_eq!(cfg.stride, Some(32));
        assert_eq!(
            LetterboxConfig::from_params(&cfg.params()).expect("canonical"),
            cfg
        );
        let bad = BTreeMap::from([("pad_value".to_owned(), json!(300))]);
        assert!(LetterboxConfig::from_params(&bad).is_err());
    }
}
