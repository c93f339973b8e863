//! CLIP's `pixel_values`, computed as transformers 5's `CLIPImageProcessorPil` computes
//! them: shortest-edge resize with Pillow in 8 bits, numpy center crop (zero padding when
//! the image is smaller), rescale in `f64` stored as `f32`, normalize in `f32`.

use std::collections::BTreeMap;

use ::image::RgbImage;
use serde_json::Value;

use super::decode::ImageLimits;
use super::params::{Source, channels_json, to_chw};
use super::resize::{Resample, Window, resize, resize_window};
use crate::error::PresetError;

/// transformers' `OPENAI_CLIP_MEAN` (Python floats; numpy casts them to `float32`).
const OPENAI_CLIP_MEAN: [f64; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// transformers' `OPENAI_CLIP_STD`.
const OPENAI_CLIP_STD: [f64; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The settings of a CLIP image processor (`preprocessor_config.json`), with
/// `CLIPImageProcessor`'s defaults for the keys a file leaves out.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipImageConfig {
    /// Convert to RGB first (always true in effect: decoded images are RGB already).
    pub do_convert_rgb: bool,
    /// Resize before cropping.
    pub do_resize: bool,
    /// The size of the short side after resizing (`size.shortest_edge`); with
    /// [`Self::resize_exact`] set, the smaller of its two sizes (unused).
    pub shortest_edge: u32,
    /// `Some((height, width))` when `size` is `{"height", "width"}`: resize to exactly that
    /// size instead of the shortest edge, as transformers does.
    pub resize_exact: Option<(u32, u32)>,
    /// The Pillow filter of the resize.
    pub resample: Resample,
    /// Center-crop after resizing.
    pub do_center_crop: bool,
    /// Rows of the crop.
    pub crop_height: u32,
    /// Columns of the crop.
    pub crop_width: u32,
    /// Multiply by [`Self::rescale_factor`].
    pub do_rescale: bool,
    /// The rescale factor (1/255).
    pub rescale_factor: f64,
    /// Subtract [`Self::mean`] and divide by [`Self::std`].
    pub do_normalize: bool,
    /// Per-channel mean (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f32; 3],
}

impl Default for ClipImageConfig {
    /// transformers' `CLIPImageProcessor` defaults (OpenAI CLIP at 224 px).
    fn default() -> Self {
        Self {
            do_convert_rgb: true,
            do_resize: true,
            shortest_edge: 224,
            resize_exact: None,
            resample: Resample::Bicubic,
            do_center_crop: true,
            crop_height: 224,
            crop_width: 224,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            mean: OPENAI_CLIP_MEAN.map(|x| x as f32),
            std: OPENAI_CLIP_STD.map(|x| x as f32),
        }
    }
}

impl ClipImageConfig {
    /// Reads a Hugging Face `preprocessor_config.json` (`file` names it in errors); keys it
    /// leaves out (or sets to `null`) keep `CLIPImageProcessor`'s defaults, keys the CLIP
    /// processor does not use are ignored.
    ///
    /// # Errors
    /// `invalid_spec` naming the key and its value when a value is malformed, and for
    /// `size` forms CLIP's processor does not resize with (`longest_edge`, `max_height`).
    pub fn from_preprocessor_config(json: &Value, file: &str) -> Result<Self, PresetError> {
        let source = Source::File(file);
        let Value::Object(map) = json else {
            return Err(source.error("the top level", json, "a JSON object"));
        };
        let get = |key: &str| map.get(key).filter(|v| !v.is_null());
        let mut cfg = Self::default();
        for (key, slot) in [
            ("do_convert_rgb", &mut cfg.do_convert_rgb),
            ("do_resize", &mut cfg.do_resize),
            ("do_center_crop", &mut cfg.do_center_crop),
            ("do_rescale", &mut cfg.do_rescale),
            ("do_normalize", &mut cfg.do_normalize),
        ] {
            if let Some(value) = get(key) {
                *slot = source.bool(key, value)?;
            }
        }
        if let Some(size) = get("size") {
            match size_setting(source, size)? {
                SizeSetting::ShortestEdge(edge) => cfg.shortest_edge = edge,
                SizeSetting::Exact(height, width) => {
                    cfg.shortest_edge = height.min(width);
                    cfg.resize_exact = Some((height, width));
                }
            }
        }
        if let Some(crop) = get("crop_size") {
            (cfg.crop_height, cfg.crop_width) = crop_setting(source, crop)?;
        }
        if let Some(value) = get("resample") {
            cfg.resample = value
                .as_i64()
                .and_then(Resample::from_pil)
                .ok_or_else(|| source.error("resample", value, "a PIL filter code from 0 to 5"))?;
        }
        if let Some(value) = get("rescale_factor") {
            cfg.rescale_factor = source.positive("rescale_factor", value)?;
        }
        if let Some(value) = get("image_mean") {
            cfg.mean = source.channels("image_mean", value, false)?;
        }
        if let Some(value) = get("image_std") {
            cfg.std = source.channels("image_std", value, true)?;
        }
        Ok(cfg)
    }

    /// The canonical parameters (what the preprocess signature hashes): the resize
    /// (`shortest_edge`, or `image_size` `[h, w]` for an exact resize), `crop_size`
    /// `[h, w]`, the filter's name, `rescale_factor`, `mean`, `std` and the `do_*` flags.
    #[must_use]
    pub fn params(&self) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        match self.resize_exact {
            Some((height, width)) => {
                out.insert("image_size".into(), Value::from(vec![height, width]))
            }
            None => out.insert("shortest_edge".into(), Value::from(self.shortest_edge)),
        };
        out.insert(
            "crop_size".into(),
            Value::from(vec![self.crop_height, self.crop_width]),
        );
        out.insert("resample".into(), Value::from(self.resample.name()));
        out.insert("rescale_factor".into(), Value::from(self.rescale_factor));
        out.insert("mean".into(), channels_json(self.mean));
        out.insert("std".into(), channels_json(self.std));
        for (key, flag) in [
            ("do_convert_rgb", self.do_convert_rgb),
            ("do_resize", self.do_resize),
            ("do_center_crop", self.do_center_crop),
            ("do_rescale", self.do_rescale),
            ("do_normalize", self.do_normalize),
        ] {
            out.insert(key.into(), Value::from(flag));
        }
        out
    }

    /// The `(height, width)` the resize gives an image of `width` x `height`: the exact
    /// size, or transformers' `get_resize_output_image_size(default_to_square=False)`:
    /// the short side becomes `shortest_edge`, the long side `int(edge * long / short)`
    /// (truncated, in `f64` as Python divides).
    #[must_use]
    pub fn resized_size(&self, width: u32, height: u32) -> (u64, u64) {
        if let Some((h, w)) = self.resize_exact {
            return (u64::from(h), u64::from(w));
        }
        let (short, long) = if width <= height {
            (width, height)
        } else {
            (height, width)
        };
        let edge = u64::from(self.shortest_edge);
        let new_long = ((edge * u64::from(long)) as f64 / f64::from(short.max(1))) as u64;
        if width <= height {
            (new_long, edge)
        } else {
            (edge, new_long)
        }
    }

    /// The `(height, width)` of the pixel values an image of `width` x `height` gives.
    fn output_size(&self, width: u32, height: u32) -> (u64, u64) {
        if self.do_center_crop {
            (u64::from(self.crop_height), u64::from(self.crop_width))
        } else if self.do_resize {
            self.resized_size(width, height)
        } else {
            (u64::from(height), u64::from(width))
        }
    }
}

/// The forms `size` takes in CLIP processor files.
enum SizeSetting {
    /// `{"shortest_edge": n}`, or a bare integer (transformers' `get_size_dict` with
    /// `default_to_square=False`).
    ShortestEdge(u32),
    /// `{"height": h, "width": w}`.
    Exact(u32, u32),
}

/// Reads `size`.
fn size_setting(source: Source<'_>, value: &Value) -> Result<SizeSetting, PresetError> {
    let want = "{\"shortest_edge\": n}, {\"height\": h, \"width\": w} or an integer";
    match value {
        Value::Number(_) => Ok(SizeSetting::ShortestEdge(source.size("size", value)?)),
        Value::Object(map) => {
            let field = |key: &str| map.get(key).filter(|v| !v.is_null());
            let known = ["shortest_edge", "height", "width"];
            if map
                .keys()
                .any(|k| !known.contains(&k.as_str()) && !map[k].is_null())
            {
                return Err(source.error("size", value, want));
            }
            match (field("shortest_edge"), field("height"), field("width")) {
                (Some(edge), None, None) => Ok(SizeSetting::ShortestEdge(
                    source.size("size.shortest_edge", edge)?,
                )),
                (None, Some(h), Some(w)) => Ok(SizeSetting::Exact(
                    source.size("size.height", h)?,
                    source.size("size.width", w)?,
                )),
                _ => Err(source.error("size", value, want)),
            }
        }
        _ => Err(source.error("size", value, want)),
    }
}

/// Reads `crop_size`: `{"height", "width"}` or an integer for a square.
fn crop_setting(source: Source<'_>, value: &Value) -> Result<(u32, u32), PresetError> {
    match value {
        Value::Number(_) => {
            let side = source.size("crop_size", value)?;
            Ok((side, side))
        }
        Value::Object(map) => match (map.get("height"), map.get("width")) {
            (Some(h), Some(w)) if map.len() == 2 => Ok((
                source.size("crop_size.height", h)?,
                source.size("crop_size.width", w)?,
            )),
            _ => Err(source.error(
                "crop_size",
                value,
                "{\"height\": h, \"width\": w} or an integer",
            )),
        },
        _ => Err(source.error(
            "crop_size",
            value,
            "{\"height\": h, \"width\": w} or an integer",
        )),
    }
}

/// CLIP's `pixel_values` of one RGB image: CHW floats, `[3, crop_height, crop_width]`
/// (or the resized size without a center crop).
///
/// # Errors
/// `invalid_input` (`image_too_large`) when the resize would make an image over Pillow's
/// pixel limit (an extreme aspect ratio), or (`image_empty`) for an empty image.
pub fn clip_pixel_values(img: &RgbImage, cfg: &ClipImageConfig) -> Result<Vec<f32>, PresetError> {
    let mut out = Vec::new();
    push_pixel_values(img, cfg, &mut out)?;
    Ok(out)
}

/// The `pixel_values` of a batch: NCHW, every image's values after the previous one's.
///
/// # Errors
/// As [`clip_pixel_values`]; `image_batch_shapes_differ` when, without a center crop,
/// two images resize to different sizes (they cannot share one tensor).
pub fn clip_pixel_batch(
    images: &[RgbImage],
    cfg: &ClipImageConfig,
) -> Result<Vec<f32>, PresetError> {
    let mut out = Vec::new();
    let mut shape = None;
    for img in images {
        let size = cfg.output_size(img.width(), img.height());
        if *shape.get_or_insert(size) != size {
            return Err(PresetError::input(
                "image_batch_shapes_differ",
                format!(
                    "without a center crop the images resize to different sizes ({:?} and \
                     {size:?}, as height x width); send them one per request",
                    shape.unwrap_or(size)
                ),
            ));
        }
        push_pixel_values(img, cfg, &mut out)?;
    }
    Ok(out)
}

/// Appends one image's pixel values to `out`.
fn push_pixel_values(
    img: &RgbImage,
    cfg: &ClipImageConfig,
    out: &mut Vec<f32>,
) -> Result<(), PresetError> {
    let resized;
    let mut current = img;
    if cfg.do_resize {
        let (height, width) = cfg.resized_size(img.width(), img.height());
        let limit = ImageLimits::default().max_pixels;
        let fits = |v: u64| u32::try_from(v).ok().filter(|v| *v > 0);
        let (Some(h), Some(w)) = (fits(height), fits(width)) else {
            return Err(too_large(img, width, height, limit));
        };
        if height * width > limit {
            return Err(too_large(img, width, height, limit));
        }
        if cfg.do_center_crop && cfg.crop_width <= w && cfg.crop_height <= h {
            // Only the crop is resized: the same pixels (see `resize_window`), and the
            // crop below is then the whole image.
            let window = Window {
                left: (w - cfg.crop_width) / 2,
                top: (h - cfg.crop_height) / 2,
                width: cfg.crop_width,
                height: cfg.crop_height,
            };
            resized = resize_window(img, w, h, cfg.resample, window)?;
        } else {
            resized = resize(img, w, h, cfg.resample)?;
        }
        current = &resized;
    }
    let cropped;
    if cfg.do_center_crop && current.dimensions() != (cfg.crop_width, cfg.crop_height) {
        cropped = center_crop(current, cfg.crop_height, cfg.crop_width);
        current = &cropped;
    }
    to_chw(
        current,
        cfg.do_rescale.then_some(cfg.rescale_factor),
        cfg.do_normalize.then_some((cfg.mean, cfg.std)),
        out,
    );
    Ok(())
}

/// The error for a resize past the pixel limit.
fn too_large(img: &RgbImage, width: u64, height: u64, limit: u64) -> PresetError {
    PresetError::input(
        "image_too_large",
        format!(
            "resizing this {}x{} image for CLIP makes it {width}x{height}, over the limit of \
             {limit} pixels; crop it to a less extreme aspect ratio",
            img.width(),
            img.height()
        ),
    )
}

/// transformers' numpy `center_crop`: the window starts at `(size - crop) // 2` (floor
/// division, so negative when the image is smaller), and what falls outside the image is
/// zero, exactly as its zero padding then slicing gives.
pub(crate) fn center_crop(img: &RgbImage, crop_height: u32, crop_width: u32) -> RgbImage {
    let top = (i64::from(img.height()) - i64::from(crop_height)).div_euclid(2);
    let left = (i64::from(img.width()) - i64::from(crop_width)).div_euclid(2);
    let mut out = RgbImage::new(crop_width, crop_height);
    for (x, y, pixel) in out.enumerate_pixels_mut() {
        let (sx, sy) = (left + i64::from(x), top + i64::from(y));
        if let (Ok(sx), Ok(sy)) = (u32::try_from(sx), u32::try_from(sy))
            && sx < img.width()
            && sy < img.height()
        {
            *pixel = *img.get_pixel(sx, sy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shortest_edge_truncates_like_transformers() {
        let cfg = ClipImageConfig::default();
        // int(224 * 640 / 427) = int(335.73…) = 335.
        assert_eq!(cfg.resized_size(640, 427), (224, 335));
        assert_eq!(cfg.resized_size(427, 640), (335, 224));
        assert_eq!(cfg.resized_size(5, 3), (224, 373));
    }

    #[test]
    fn crop_pads_small_images_with_zeros_like_numpy() {
        // 3 columns into 4: (3 - 4) // 2 = -1, one zero column on the left.
        let img = RgbImage::from_fn(3, 1, |x, _| ::image::Rgb([x as u8 + 1; 3]));
        let out = center_crop(&img, 1, 4);
        let reds: Vec<u8> = out.pixels().map(|p| p[0]).collect();
        assert_eq!(reds, [0, 1, 2, 3]);
        // 5 rows into 2: 5 // 2 → starts at row 1.
        let img = RgbImage::from_fn(1, 5, |_, y| ::image::Rgb([y as u8; 3]));
        let rows: Vec<u8> = center_crop(&img, 2, 1).pixels().map(|p| p[0]).collect();
        assert_eq!(rows, [1, 2]);
    }

    #[test]
    fn config_reads_files_and_names_bad_values() {
        let cfg = ClipImageConfig::from_preprocessor_config(
            &json!({"size": 336, "crop_size": 336, "resample": 2, "image_mean": 0.5}),
            "preprocessor_config.json",
        )
        .expect("valid");
        assert_eq!(
            (cfg.shortest_edge, cfg.crop_height, cfg.crop_width),
            (336, 336, 336)
        );
        assert_eq!(cfg.resample, Resample::Bilinear);
        assert_eq!(cfg.mean, [0.5; 3]);
        let err = ClipImageConfig::from_preprocessor_config(
            &json!({"resample": 9}),
            "preprocessor_config.json",
        )
        .expect_err("bad filter");
        assert!(err.to_string().contains("resample is 9"), "{err}");
        assert_eq!(
            ClipImageConfig::from_preprocessor_config(&json!({}), "p.json").expect("defaults"),
            ClipImageConfig::default()
        );
    }

    #[test]
    fn params_are_canonical() {
        let params = ClipImageConfig::default().params();
        // The shortest decimals of the `f32` values (what the model computes with).
        assert_eq!(params["mean"], json!([0.48145467, 0.4578275, 0.40821072]));
        assert_eq!(params["crop_size"], json!([224, 224]));
        assert_eq!(params["resample"], json!("bicubic"));
        assert_eq!(params["shortest_edge"], json!(224));
    }
}
