//! Resizing with Pillow's filters, through `fast_image_resize` (whose convolution is
//! Pillow-SIMD's: same kernels, same supports, same pixel-center mapping). Each pass runs
//! on `f32` pixels (`f64` coefficients) and is rounded to 8 bits as Pillow rounds its
//! 22-bit fixed point; the library's 8-bit path keeps only about 15 bits and was up to 2
//! levels off. Measured against Pillow 13: bicubic, bilinear, Lanczos and Hamming at most
//! one level, only at exact rounding ties (mean under 0.011 level, except a 2:1 Lanczos
//! shrink of a linear ramp, all ties: 0.84, as before); nearest identical.

use std::borrow::Cow;

use ::image::RgbImage;
use fast_image_resize::images::{Image, ImageRef, TypedImage, TypedImageRef};
use fast_image_resize::pixels::F32x3;
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use crate::error::PresetError;

/// A Pillow resampling filter (`PIL.Image.Resampling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resample {
    /// `NEAREST` (0).
    Nearest,
    /// `BILINEAR` (2): the triangle filter, widened when downscaling (antialiased).
    Bilinear,
    /// `BICUBIC` (3): the cubic with a = -0.5 (Catmull-Rom), widened when downscaling.
    Bicubic,
    /// `LANCZOS` (1): Lanczos with 3 lobes.
    Lanczos,
    /// `BOX` (4). At an exact half-pixel tie (e.g. 61 → 20 rows) `fast_image_resize`
    /// may average one source pixel more or less than Pillow does for that output.
    Box,
    /// `HAMMING` (5).
    Hamming,
}

impl Resample {
    /// The filter of a PIL code as `preprocessor_config.json` stores it (`"resample": 3`).
    #[must_use]
    pub const fn from_pil(code: i64) -> Option<Self> {
        Some(match code {
            0 => Self::Nearest,
            1 => Self::Lanczos,
            2 => Self::Bilinear,
            3 => Self::Bicubic,
            4 => Self::Box,
            5 => Self::Hamming,
            _ => return None,
        })
    }

    /// The PIL code.
    #[must_use]
    pub const fn pil_code(self) -> i64 {
        match self {
            Self::Nearest => 0,
            Self::Lanczos => 1,
            Self::Bilinear => 2,
            Self::Bicubic => 3,
            Self::Box => 4,
            Self::Hamming => 5,
        }
    }

    /// The lowercase name used in `preprocess_params` (`"bicubic"`, …).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Nearest => "nearest",
            Self::Lanczos => "lanczos",
            Self::Bilinear => "bilinear",
            Self::Bicubic => "bicubic",
            Self::Box => "box",
            Self::Hamming => "hamming",
        }
    }

    /// The filter named `name` (as [`Self::name`] gives it).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        (0..=5)
            .filter_map(Self::from_pil)
            .find(|filter| filter.name() == name)
    }

    /// The `fast_image_resize` algorithm that computes Pillow's filter.
    const fn algorithm(self) -> ResizeAlg {
        match self {
            Self::Nearest => ResizeAlg::Nearest,
            Self::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            Self::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
            Self::Lanczos => ResizeAlg::Convolution(FilterType::Lanczos3),
            // Pillow excludes or includes a pixel at an exact half-pixel tie by its own
            // rounding of the window; `fast_image_resize` may take the other choice there
            // (a whole pixel more or less in that output's average).
            Self::Box => ResizeAlg::Convolution(FilterType::Box),
            Self::Hamming => ResizeAlg::Convolution(FilterType::Hamming),
        }
    }
}

/// Resizes `img` to `width` x `height` as Pillow's `Image.resize((width, height), filter)`
/// does on an RGB image (8-bit, no reducing gap); the same size is a copy, as in Pillow.
///
/// # Errors
/// `invalid_input` (`image_empty`) for a zero target size.
pub fn resize(
    img: &RgbImage,
    width: u32,
    height: u32,
    filter: Resample,
) -> Result<RgbImage, PresetError> {
    resize_with(img, width, height, filter.algorithm())
}

/// Resizes with any `fast_image_resize` algorithm (the letterbox uses OpenCV-like
/// interpolation).
pub(crate) fn resize_with(
    img: &RgbImage,
    width: u32,
    height: u32,
    algorithm: ResizeAlg,
) -> Result<RgbImage, PresetError> {
    let whole = Window {
        left: 0,
        top: 0,
        width,
        height,
    };
    resize_window_with(img, width, height, algorithm, whole)
}

/// A rectangle of an image: its top-left pixel and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// First column.
    pub(crate) left: u32,
    /// First row.
    pub(crate) top: u32,
    /// Columns.
    pub(crate) width: u32,
    /// Rows.
    pub(crate) height: u32,
}

/// The `window` of `resize(img, width, height, filter)` (it must lie inside `width` x
/// `height`; callers check), the same pixels as resizing everything then cropping.
///
/// Why: CLIP crops 224 of the 298 columns a 4:3 photo resizes to. A convolution's output
/// pixel depends only on its own source window (clipped to the whole source, as Pillow's
/// `resize(box=…)` does too), so each pass computes only the window's columns (or rows) and
/// the other pass works on those: a quarter of the resize's work saved there.
///
/// # Errors
/// As [`resize`].
pub(crate) fn resize_window(
    img: &RgbImage,
    width: u32,
    height: u32,
    filter: Resample,
    window: Window,
) -> Result<RgbImage, PresetError> {
    resize_window_with(img, width, height, filter.algorithm(), window)
}

fn resize_window_with(
    img: &RgbImage,
    width: u32,
    height: u32,
    algorithm: ResizeAlg,
    window: Window,
) -> Result<RgbImage, PresetError> {
    if width == 0 || height == 0 || img.width() == 0 || img.height() == 0 {
        return Err(PresetError::input(
            "image_empty",
            format!(
                "cannot resize a {}x{} image to {width}x{height}; both sizes need pixels",
                img.width(),
                img.height()
            ),
        ));
    }
    let failed = |err: String| {
        PresetError::input(
            "image_resize_failed",
            format!("resizing the image failed ({err}); send a smaller image"),
        )
    };
    if u64::from(window.left) + u64::from(window.width) > u64::from(width)
        || u64::from(window.top) + u64::from(window.height) > u64::from(height)
    {
        return Err(failed(format!(
            "the window {window:?} is outside the {width}x{height} result"
        )));
    }
    // Pillow's filters (convolutions) run in `f32` pixels with `f64` coefficients and sums,
    // then round as Pillow's 8-bit pass does (half up, clipped to 0..=255): Pillow keeps
    // 22-bit coefficients, `fast_image_resize`'s 8-bit path only about 15, which put outputs
    // one level off here and there. The letterbox's OpenCV-like interpolation stays in 8
    // bits (OpenCV's own fixed point is coarser still: within one level either way).
    let in_f32 = matches!(algorithm, ResizeAlg::Convolution(_));
    let (src_w, src_h) = img.dimensions();
    let mut pixels = Cow::Borrowed(img.as_raw().as_slice());
    let mut size = (src_w, src_h);
    // Where the window still has to be cut from `pixels` once the passes are done.
    let mut cut = (window.left, window.top);
    if img.dimensions() != (width, height) {
        if algorithm == ResizeAlg::Nearest {
            pixels = Cow::Owned(nearest_like_pillow(img, width, height).into_raw());
            size = (width, height);
        } else {
            let mut resizer = Resizer::new();
            let options = ResizeOptions::new().resize_alg(algorithm);
            // Pillow does two 8-bit passes (each clipped), in an order that matters where
            // the cubic and Lanczos kernels overshoot; `fast_image_resize` picks its own
            // order for 8-bit images, so each call here does one pass, in Pillow 13's
            // order: vertical first when the height shrinks by more than twice what the
            // width does, else horizontal first (Pillow 12 and older: always horizontal
            // first). The letterbox's OpenCV-like interpolation goes the same way (OpenCV
            // keeps its intermediate unrounded: at most one level apart, measured).
            let shrink_h = i64::from(src_h) - i64::from(height);
            let shrink_w = i64::from(src_w) - i64::from(width);
            let vertical_first = shrink_h > 0 && shrink_h > shrink_w * 2;
            for vertical in [vertical_first, !vertical_first] {
                let (from, to) = if vertical {
                    (src_h, height)
                } else {
                    (src_w, width)
                };
                if from == to {
                    continue;
                }
                // The window's span of this axis, in source coordinates.
                let (start, count) = if vertical {
                    (window.top, window.height)
                } else {
                    (window.left, window.width)
                };
                let scale = f64::from(from) / f64::from(to);
                let offset = f64::from(start) * scale;
                let span = (f64::from(count) * scale).min(f64::from(from) - offset);
                let next = if in_f32 {
                    if vertical {
                        cut.1 = 0;
                        (size.0, count)
                    } else {
                        cut.0 = 0;
                        (count, size.1)
                    }
                } else if vertical {
                    (size.0, height)
                } else {
                    (width, size.1)
                };
                let result = if in_f32 {
                    let pass = Pass {
                        vertical,
                        offset,
                        span,
                    };
                    pass_f32(
                        &mut resizer,
                        &options,
                        &pixels,
                        size,
                        next,
                        pass,
                        BAND_PIXELS,
                    )
                    .map_err(failed)?
                } else {
                    let src = ImageRef::new(size.0, size.1, &pixels, PixelType::U8x3)
                        .map_err(|err| failed(err.to_string()))?;
                    let mut dst = Image::new(next.0, next.1, PixelType::U8x3);
                    resizer
                        .resize(&src, &mut dst, &options)
                        .map_err(|err| failed(err.to_string()))?;
                    dst.into_vec()
                };
                pixels = Cow::Owned(result);
                size = next;
            }
        }
    }
    let image = RgbImage::from_raw(size.0, size.1, pixels.into_owned())
        .ok_or_else(|| failed("the resized buffer has the wrong size".to_owned()))?;
    if (size, cut) == ((window.width, window.height), (0, 0)) {
        return Ok(image);
    }
    Ok(::image::imageops::crop_imm(&image, cut.0, cut.1, window.width, window.height).to_image())
}

/// One axis of a resize: vertical or horizontal, and the source span (start, length, in
/// source pixels, fractional) its output covers.
#[derive(Debug, Clone, Copy)]
struct Pass {
    vertical: bool,
    offset: f64,
    span: f64,
}

/// Source pixels converted to `f32` at a time: a pass runs over bands of rows (horizontal)
/// or columns (vertical), each computed as in the whole image, so no image needs an `f32`
/// copy of itself (12 bytes a pixel), and a band's buffers, reused from band to band, stay
/// in the cache (measured on 1024×768 photos: a quarter of a megapixel beats both a
/// sixteenth and a whole megapixel).
const BAND_PIXELS: usize = 1 << 18;

/// One pass (only the width or only the height changes) in `f32`, rounded to 8 bits.
fn pass_f32(
    resizer: &mut Resizer,
    options: &ResizeOptions,
    src: &[u8],
    (src_w, src_h): (u32, u32),
    (dst_w, dst_h): (u32, u32),
    pass: Pass,
    band_pixels: usize,
) -> Result<Vec<u8>, String> {
    let (sw, sh, dw) = (src_w as usize, src_h as usize, dst_w as usize);
    let mut out = vec![0_u8; dw * dst_h as usize * 3];
    // One source and one destination buffer for every band, flat samples (R, G, B, R, …)
    // so that the conversions run over plain slices.
    let mut band_in: Vec<f32> = Vec::new();
    let mut band_out: Vec<f32> = Vec::new();
    if pass.vertical {
        // Vertical: bands of columns, all rows.
        let band = (band_pixels / sh).clamp(1, sw);
        for x0 in (0..sw).step_by(band) {
            let bw = band.min(sw - x0);
            let columns = x0 * 3..(x0 + bw) * 3;
            band_in.clear();
            for row in src.chunks_exact(sw * 3) {
                band_in.extend(row[columns.clone()].iter().map(|&v| f32::from(v)));
            }
            let size = (bw as u32, src_h);
            let to = (bw as u32, dst_h);
            let options = options.crop(0.0, pass.offset, bw as f64, pass.span);
            convolve_band(resizer, &options, &band_in, size, to, &mut band_out)?;
            for (row, band_row) in out
                .chunks_exact_mut(dw * 3)
                .zip(band_out.chunks_exact(bw * 3))
            {
                round_into(&mut row[columns.clone()], band_row);
            }
        }
    } else {
        // Horizontal: bands of rows, all columns.
        let band = (band_pixels / sw).clamp(1, sh);
        for (rows, out_rows) in src.chunks(band * sw * 3).zip(out.chunks_mut(band * dw * 3)) {
            band_in.clear();
            band_in.extend(rows.iter().map(|&v| f32::from(v)));
            let h = (rows.len() / (sw * 3)) as u32;
            convolve_band(
                resizer,
                &options.crop(pass.offset, 0.0, pass.span, f64::from(h)),
                &band_in,
                (src_w, h),
                (dst_w, h),
                &mut band_out,
            )?;
            round_into(out_rows, &band_out);
        }
    }
    Ok(out)
}

/// Convolves one band of `f32` RGB samples into `band_out` (resized to fit).
fn convolve_band(
    resizer: &mut Resizer,
    options: &ResizeOptions,
    band_in: &[f32],
    (w, h): (u32, u32),
    (to_w, to_h): (u32, u32),
    band_out: &mut Vec<f32>,
) -> Result<(), String> {
    let src = TypedImageRef::<F32x3>::from_buffer(w, h, bytemuck::cast_slice(band_in))
        .map_err(|err| err.to_string())?;
    band_out.clear();
    band_out.resize(to_w as usize * to_h as usize * 3, 0.0);
    let mut dst = TypedImage::<F32x3>::from_buffer(to_w, to_h, bytemuck::cast_slice_mut(band_out))
        .map_err(|err| err.to_string())?;
    resizer
        .resize_typed(&src, &mut dst, options)
        .map_err(|err| err.to_string())
}

/// Rounds convolution sums to 8-bit samples, Pillow's way ([`pillow_round`]).
fn round_into(out: &mut [u8], sums: &[f32]) {
    for (dst, &sum) in out.iter_mut().zip(sums) {
        *dst = pillow_round(sum);
    }
}

/// A convolution's sum to 8 bits as Pillow gives it: `(sum + half) >> bits`, so half up
/// (also below zero), then clipped to 0..=255. Clamping before the truncating cast is the
/// same as flooring after it (the clamped value is not negative), and needs no `floorf`
/// call per value.
fn pillow_round(value: f32) -> u8 {
    (value + 0.5).clamp(0.0, 255.0) as u8
}

/// Pillow's nearest-neighbour resize (`ImagingScaleAffine`): the source position starts
/// at half a step and is advanced by repeated `f64` addition, then truncated. The same
/// accumulation gives the same index at the exact ties (`fast_image_resize` multiplies
/// instead and picks the other pixel there).
fn nearest_like_pillow(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let positions = |from: u32, to: u32| {
        let step = f64::from(from) / f64::from(to);
        let mut at = step * 0.5;
        (0..to)
            .map(|_| {
                let index = (at as u32).min(from - 1);
                at += step;
                index
            })
            .collect::<Vec<_>>()
    };
    let xs = positions(img.width(), width);
    let ys = positions(img.height(), height);
    RgbImage::from_fn(width, height, |x, y| {
        *img.get_pixel(xs[x as usize], ys[y as usize])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pil_codes_round_trip() {
        for code in 0..=5 {
            let filter = Resample::from_pil(code).expect("a PIL code");
            assert_eq!(filter.pil_code(), code);
            assert_eq!(Resample::from_name(filter.name()), Some(filter));
        }
        assert_eq!(Resample::from_pil(6), None);
        assert_eq!(Resample::from_pil(3), Some(Resample::Bicubic));
    }

    #[test]
    fn bands_give_the_whole_image_pass() {
        let src: Vec<u8> = (0..37 * 23 * 3).map(|i| (i * 97 % 251) as u8).collect();
        let options =
            ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::CatmullRom));
        for (from, to) in [
            ((37, 23), (37, 9)),
            ((37, 23), (80, 23)),
            ((37, 23), (11, 23)),
        ] {
            let vertical = from.0 == to.0;
            let (offset, span) = (0.0, f64::from(if vertical { from.1 } else { from.0 }));
            let pass = Pass {
                vertical,
                offset,
                span,
            };
            let resizer = &mut Resizer::new();
            let whole = pass_f32(resizer, &options, &src, from, to, pass, usize::MAX);
            let banded = pass_f32(&mut Resizer::new(), &options, &src, from, to, pass, 50);
            assert_eq!(whole, banded, "{from:?} -> {to:?}");
        }
    }

    #[test]
    fn a_window_is_the_crop_of_the_whole_resize() {
        let (w, h) = (61, 37);
        let img = RgbImage::from_fn(w, h, |x, y| {
            ::image::Rgb([
                (x * 7 + y * 3) as u8,
                (x * y % 251) as u8,
                (255 - x * 4) as u8,
            ])
        });
        let filters = [
            Resample::Bicubic,
            Resample::Bilinear,
            Resample::Lanczos,
            Resample::Nearest,
        ];
        // Shrinking both ways (each pass order), growing, one axis unchanged, a window as
        // wide as the source while the width still changes, and the whole result.
        let cases = [
            ((20, 15), (3, 2, 14, 11)),
            ((58, 9), (5, 0, 40, 9)),
            ((15, 30), (0, 4, 15, 20)),
            ((90, 70), (13, 20, 61, 37)),
            ((61, 20), (7, 3, 30, 12)),
            ((70, 37), (4, 0, 61, 37)),
            ((20, 15), (0, 0, 20, 15)),
        ];
        for filter in filters {
            for ((tw, th), (left, top, ww, wh)) in cases {
                let whole = resize(&img, tw, th, filter).unwrap();
                let want = ::image::imageops::crop_imm(&whole, left, top, ww, wh).to_image();
                let window = Window {
                    left,
                    top,
                    width: ww,
                    height: wh,
                };
                let got = resize_window(&img, tw, th, filter, window).unwrap();
                assert_eq!(got.dimensions(), (ww, wh));
                assert!(
                    got == want,
                    "{filter:?} to {tw}x{th}, window {window:?}: pixels differ"
                );
            }
        }
        let outside = Window {
            left: 10,
            top: 0,
            width: 11,
            height: 15,
        };
        let err = resize_window(&img, 20, 15, Resample::Bicubic, outside).unwrap_err();
        assert!(
            matches!(
                err,
                PresetError::InvalidInput {
                    reason: "image_resize_failed",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn zero_target_is_refused() {
        let img = RgbImage::new(4, 4);
        assert!(resize(&img, 0, 4, Resample::Bicubic).is_err());
    }
}
