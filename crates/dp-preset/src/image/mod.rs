//! The pixel work of the image presets: decoding to RGB as Pillow does, Pillow-identical
//! resizing, and the three pixel pipelines (CLIP, fixed-size resize + normalize, YOLO
//! letterbox). Each pipeline matches the Python reference its models were trained with,
//! because a model only gives its published results on the pixels it was trained on.

mod clip_pixels;
mod decode;
mod letterbox;
mod params;
mod resize;
mod resize_normalize;

pub use clip_pixels::{ClipImageConfig, clip_pixel_batch, clip_pixel_values};
pub use decode::{ImageLimits, decode_rgb};
pub use letterbox::{LetterboxConfig, LetterboxGeometry, letterbox};
pub use resize::{Resample, resize};
pub use resize_normalize::{ResizeNormalizeConfig, resize_normalize};
