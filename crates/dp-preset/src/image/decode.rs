//! Decoding an [`ImageInput`] to 8-bit RGB the way Pillow's `Image.open(…).convert("RGB")`
//! does (what transformers' `convert_rgb` calls), with the size refused before any pixel
//! buffer is allocated.
//!
//! Gray, YCbCr and RGB JPEGs are decoded by libjpeg-turbo's own code (through `mozjpeg`,
//! whose decoder is libjpeg-turbo's: ISLOW IDCT, fancy upsampling), the library Pillow is
//! built with, so their pixels are Pillow's bit for bit. CMYK/YCCK JPEGs and the other
//! formats are decoded by the `image` crate's pure-Rust decoders.

use std::io::{self, BufRead, Cursor, Read};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use ::image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, RgbImage};
use mozjpeg::{ColorSpace, DctMethod, Decompress};

use crate::error::PresetError;
use crate::input::ImageInput;

/// Pillow's `Image.MAX_IMAGE_PIXELS` (`1024 * 1024 * 1024 // 4 // 3`) times two: the size
/// at which Pillow raises `DecompressionBombError` instead of only warning.
const PILLOW_BOMB_ERROR_PIXELS: u64 = 2 * (1024 * 1024 * 1024 / 4 / 3);

/// Bytes per pixel of the widest buffer a decoder may produce (16-bit RGBA), to bound the
/// decoders' own allocations from the pixel limit.
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// How large an image the presets accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// Most pixels (`width * height`) an image may have; larger ones are refused from their
    /// header with `image_too_large`, before decoding.
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// Pillow's decompression-bomb error limit (178,956,970 pixels), so every image the
    /// Python references accept is accepted here too.
    fn default() -> Self {
        Self {
            max_pixels: PILLOW_BOMB_ERROR_PIXELS,
        }
    }
}

/// Decodes `input` to 8-bit RGB, as Pillow's `convert("RGB")` would give it.
///
/// Encoded bytes are sniffed (JPEG, PNG, WebP, GIF (first frame), BMP); the conversion to
/// RGB is Pillow's: gray is replicated, alpha is dropped (never composited), palettes give
/// their colors, 16-bit RGB(A) and gray+alpha keep the high byte (Pillow's `;16B` raw
/// modes) and 16-bit gray is clamped to 255 (Pillow's `I;16` → `RGB`). A GIF's first frame
/// is placed on its logical screen over black where it does not cover it (Pillow fills
/// with the background or transparent palette index instead). `Rgb8` pixels are checked
/// and used as they are.
///
/// # Errors
/// `invalid_input` with the reason `image_format_unsupported`, `image_empty`,
/// `image_too_large`, `image_bad_pixels` or `image_decode_failed`.
pub fn decode_rgb(input: &ImageInput, limits: &ImageLimits) -> Result<RgbImage, PresetError> {
    match input {
        ImageInput::Rgb8 {
            width,
            height,
            pixels,
        } => {
            check_size(*width, *height, limits)?;
            let expected = u64::from(*width) * u64::from(*height) * 3;
            if pixels.len() as u64 != expected {
                return Err(PresetError::input(
                    "image_bad_pixels",
                    format!(
                        "an RGB8 image of {width}x{height} needs {expected} bytes (R, G, B per \
                         pixel) but {} were given; send width * height * 3 bytes",
                        pixels.len()
                    ),
                ));
            }
            RgbImage::from_raw(*width, *height, pixels.clone()).ok_or_else(|| {
                PresetError::input(
                    "image_bad_pixels",
                    format!("the RGB8 pixels do not make a {width}x{height} image"),
                )
            })
        }
        ImageInput::Encoded(bytes) => {
            // The decoders are third-party parsers of untrusted bytes: a panic in one is a bad
            // input, not a reason to take the process down.
            catch_unwind(AssertUnwindSafe(|| decode_encoded(bytes, limits))).unwrap_or_else(|_| {
                Err(PresetError::input(
                    "image_decode_failed",
                    "the image decoder failed on these bytes; re-encode the image as PNG \
                         or baseline JPEG",
                ))
            })
        }
    }
}

/// The formats the presets accept, by their sniffed signature.
fn accepted_format(bytes: &[u8]) -> Result<ImageFormat, PresetError> {
    let unsupported = |what: String| {
        PresetError::input(
            "image_format_unsupported",
            format!(
                "{what}; send a JPEG, PNG, WebP, GIF or BMP file (the format is read from the \
                 bytes, not from a file name)"
            ),
        )
    };
    match ::image::guess_format(bytes) {
        Ok(
            format @ (ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Gif
            | ImageFormat::Bmp),
        ) => Ok(format),
        Ok(other) => Err(unsupported(format!(
            "the image is {other:?}, which is not accepted"
        ))),
        Err(_) => Err(unsupported(
            "the bytes are not a known image format".to_owned(),
        )),
    }
}

/// Decodes encoded bytes without catching panics (the proptest calls this, so a decoder
/// panic fails it).
pub(crate) fn decode_encoded(bytes: &[u8], limits: &ImageLimits) -> Result<RgbImage, PresetError> {
    if bytes.is_empty() {
        return Err(PresetError::input(
            "image_empty",
            "the image file is empty (0 bytes); send the file's content",
        ));
    }
    let format = accepted_format(bytes)?;
    if format == ImageFormat::Jpeg
        && let Some(decoded) = decode_jpeg(bytes, limits)
    {
        return decoded;
    }
    // Formats whose size sits at a fixed place are checked before a decoder even reads
    // the header: nothing it does can then allocate for a hostile size.
    if let Some((width, height)) = header_dimensions(format, bytes) {
        check_size(width, height, limits)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = ::image::Limits::default();
    decoder_limits.max_alloc = Some(max_alloc(limits));
    reader.limits(decoder_limits);
    let decoder = reader
        .into_decoder()
        .map_err(|err| decode_error(format, &err))?;
    let (width, height) = decoder.dimensions();
    check_size(width, height, limits)?;
    let image = DynamicImage::from_decoder(decoder).map_err(|err| decode_error(format, &err))?;
    Ok(to_rgb_like_pillow(image))
}

/// libjpeg's "Premature end of JPEG file" (`JWRN_JPEG_EOF`), raised where the bytes run
/// out before the image does.
const JPEG_EOF: &str = "Premature end of JPEG file";

/// Decodes a gray, YCbCr or RGB JPEG with libjpeg-turbo's code, as Pillow does; `None`
/// leaves any other color space (CMYK, YCCK: Pillow's "CMYK" mode) to the `image` crate.
///
/// libjpeg reports a fatal error by unwinding (mozjpeg's error manager calls
/// `resume_unwind` with the message, so no panic hook runs and nothing is printed; the C
/// code is built with `-fexceptions` and called through `extern "C-unwind"`, mozjpeg-sys's
/// `unwinding` feature, which mozjpeg turns on): it is caught here, so that no caller of
/// [`decode_encoded`] sees it as a panic. The API used here has no `panic!` of mozjpeg's
/// own (those are on the raw-data and scaling paths). Warnings
/// (e.g. "extraneous bytes before marker", common in camera files) are ignored, as Pillow
/// ignores them, except running out of bytes (see [`JpegSource`]).
fn decode_jpeg(bytes: &[u8], limits: &ImageLimits) -> Option<Result<RgbImage, PresetError>> {
    catch_unwind(AssertUnwindSafe(|| decode_jpeg_unwinding(bytes, limits))).unwrap_or_else(
        |payload| {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("libjpeg failed");
            Some(Err(jpeg_corrupt(
                message.trim_start_matches("libjpeg fatal error: "),
            )))
        },
    )
}

/// [`decode_jpeg`] without the catch: libjpeg's errors unwind out of it.
fn decode_jpeg_unwinding(
    bytes: &[u8],
    limits: &ImageLimits,
) -> Option<Result<RgbImage, PresetError>> {
    // Reads the header only (up to the first scan): no pixel buffer yet.
    let mut header = match Decompress::builder().from_reader(JpegSource(bytes)) {
        Ok(header) => header,
        Err(err) => return Some(Err(jpeg_corrupt(&err.to_string()))),
    };
    if !matches!(
        header.color_space(),
        ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_YCbCr | ColorSpace::JCS_RGB
    ) {
        return None;
    }
    let size = (
        u32::try_from(header.width()),
        u32::try_from(header.height()),
    );
    let (Ok(width), Ok(height)) = size else {
        return Some(Err(jpeg_corrupt("its size does not fit in 32 bits")));
    };
    if let Err(err) = check_size(width, height, limits) {
        return Some(Err(err));
    }
    // libjpeg's defaults, which Pillow keeps: said here because the pixels depend on them.
    header.dct_method(DctMethod::IntegerSlow);
    header.do_fancy_upsampling(true);
    // Gray is replicated into R, G and B by libjpeg, as Pillow's "L" to "RGB" does.
    let decoded = header.rgb().and_then(|mut started| {
        let pixels = started.read_scanlines::<u8>()?;
        started.finish()?;
        Ok(pixels)
    });
    Some(match decoded {
        Ok(pixels) => RgbImage::from_raw(width, height, pixels)
            .ok_or_else(|| jpeg_corrupt("libjpeg gave fewer rows than the header says")),
        // The pixel buffer (within the limit) could not be allocated.
        Err(err) if err.kind() == io::ErrorKind::OutOfMemory => Err(PresetError::input(
            "image_too_large",
            format!(
                "the {width}x{height} JPEG image does not fit in memory ({err}); downscale it \
                 before sending"
            ),
        )),
        Err(err) => Err(jpeg_corrupt(&err.to_string())),
    })
}

/// `image_decode_failed` for a JPEG, with libjpeg's message.
fn jpeg_corrupt(message: &str) -> PresetError {
    PresetError::input(
        "image_decode_failed",
        format!("the JPEG image is corrupt or truncated ({message}); send the complete file"),
    )
}

/// The JPEG bytes as libjpeg's source. libjpeg asks for more bytes only when the image
/// needs them (it stops at the EOI marker), so running out of bytes means the file is
/// truncated: mozjpeg would then fake an EOI, warn (`JWRN_JPEG_EOF`) and fill the rest of
/// the image with gray, where Pillow raises "image file is truncated". This source unwinds
/// with [`JPEG_EOF`] instead, like a libjpeg error, which stops the decoding there. (The
/// same as an error manager whose `emit_message` unwinds on `JWRN_JPEG_EOF`, which mozjpeg
/// raises exactly when this reader runs dry, without `unsafe` or a direct mozjpeg-sys
/// dependency: mozjpeg keeps its error manager private.)
struct JpegSource<'a>(&'a [u8]);

impl Read for JpegSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for JpegSource<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.0.is_empty() {
            resume_unwind(Box::new(JPEG_EOF.to_owned()));
        }
        Ok(self.0)
    }

    fn consume(&mut self, amount: usize) {
        self.0 = self.0.get(amount..).unwrap_or_default();
    }
}

/// Bytes a decoder may allocate for an image within `limits` (its widest pixels plus slack).
fn max_alloc(limits: &ImageLimits) -> u64 {
    limits
        .max_pixels
        .saturating_mul(MAX_BYTES_PER_PIXEL)
        .saturating_add(64 << 20)
}

/// The size in the header of formats that store it at a fixed offset (PNG's IHDR, GIF's
/// logical screen, BMP's info header); `None` when the bytes are too short or the format
/// keeps it elsewhere (JPEG, WebP: their decoders read only the header before allocating).
fn header_dimensions(format: ImageFormat, bytes: &[u8]) -> Option<(u32, u32)> {
    let be32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
    };
    let le16 = |at: usize| {
        bytes
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(u16::from_le_bytes)
    };
    let le32 = |at: usize| {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes)
    };
    match format {
        // Signature (8), chunk length (4), "IHDR" (4), then width and height.
        ImageFormat::Png if bytes.get(12..16) == Some(b"IHDR") => Some((be32(16)?, be32(20)?)),
        ImageFormat::Gif => Some((u32::from(le16(6)?), u32::from(le16(8)?))),
        // BITMAPINFOHEADER and later: signed width and height (negative height = top-down).
        ImageFormat::Bmp if le32(14)? >= 40 => {
            Some((le32(18)?.unsigned_abs(), le32(22)?.unsigned_abs()))
        }
        _ => None,
    }
}

/// Refuses an empty image or one over the pixel limit.
fn check_size(width: u32, height: u32, limits: &ImageLimits) -> Result<(), PresetError> {
    if width == 0 || height == 0 {
        return Err(PresetError::input(
            "image_empty",
            format!("the image is {width}x{height} pixels; send an image with pixels in it"),
        ));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels {
        return Err(PresetError::input(
            "image_too_large",
            format!(
                "the image is {width}x{height} = {pixels} pixels, over the limit of {} pixels; \
                 downscale it before sending",
                limits.max_pixels
            ),
        ));
    }
    Ok(())
}

/// Maps a decoder error onto its reason.
fn decode_error(format: ImageFormat, err: &ImageError) -> PresetError {
    match err {
        ImageError::Limits(_) => PresetError::input(
            "image_too_large",
            format!(
                "decoding this {format:?} image needs more memory than the pixel limit allows \
                 ({err}); downscale it before sending"
            ),
        ),
        ImageError::Unsupported(_) => PresetError::input(
            "image_format_unsupported",
            format!(
                "this {format:?} variant is not supported ({err}); re-encode the image as an \
                 8-bit PNG or a baseline JPEG"
            ),
        ),
        _ => PresetError::input(
            "image_decode_failed",
            format!("the {format:?} image is corrupt or truncated ({err}); send the complete file"),
        ),
    }
}

/// Pillow's `convert("RGB")` of what Pillow would have opened.
fn to_rgb_like_pillow(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    let from_fn = |samples: &[u8], per_pixel: usize, rgb: fn(&[u8]) -> [u8; 3]| {
        let pixels = samples.chunks_exact(per_pixel).flat_map(rgb).collect();
        RgbImage::from_raw(width, height, pixels)
    };
    let from_16 = |samples: &[u16], per_pixel: usize, rgb: fn(&[u16]) -> [u8; 3]| {
        let pixels = samples.chunks_exact(per_pixel).flat_map(rgb).collect();
        RgbImage::from_raw(width, height, pixels)
    };
    let converted = match &image {
        DynamicImage::ImageRgb8(_) => None,
        DynamicImage::ImageLuma8(i) => from_fn(i.as_raw(), 1, |p| [p[0], p[0], p[0]]),
        DynamicImage::ImageLumaA8(i) => from_fn(i.as_raw(), 2, |p| [p[0], p[0], p[0]]),
        DynamicImage::ImageRgba8(i) => from_fn(i.as_raw(), 4, |p| [p[0], p[1], p[2]]),
        // Pillow opens 16-bit gray as `I;16`, whose conversion to RGB clamps at 255.
        DynamicImage::ImageLuma16(i) => from_16(i.as_raw(), 1, |p| {
            let v = p[0].min(255) as u8;
            [v, v, v]
        }),
        DynamicImage::ImageLumaA16(i) => from_16(i.as_raw(), 2, |p| {
            let v = hi_byte(p[0]);
            [v, v, v]
        }),
        DynamicImage::ImageRgb16(i) => from_16(i.as_raw(), 3, |p| {
            [hi_byte(p[0]), hi_byte(p[1]), hi_byte(p[2])]
        }),
        DynamicImage::ImageRgba16(i) => from_16(i.as_raw(), 4, |p| {
            [hi_byte(p[0]), hi_byte(p[1]), hi_byte(p[2])]
        }),
        _ => None,
    };
    match (converted, image) {
        (Some(rgb), _) => rgb,
        (None, DynamicImage::ImageRgb8(rgb)) => rgb,
        // Float images do not come out of the accepted formats' decoders.
        (None, other) => other.to_rgb8(),
    }
}

/// The high byte of a 16-bit sample, as Pillow's `RGB;16B`, `RGBA;16B` and `LA;16B`
/// unpackers keep it.
const fn hi_byte(v: u16) -> u8 {
    (v >> 8) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random bytes behind each accepted signature never panic a decoder.
        #[test]
        fn hostile_bytes_never_panic(
            signature in 0usize..6,
            tail in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let prefixes: [&[u8]; 6] = [
                b"\x89PNG\r\n\x1a\n",
                b"\xff\xd8\xff",
                b"GIF89a",
                b"BM",
                b"RIFF\x10\x00\x00\x00WEBPVP8 ",
                b"",
            ];
            let mut bytes = prefixes[signature].to_vec();
            bytes.extend_from_slice(&tail);
            let limits = ImageLimits { max_pixels: 1 << 20 };
            if let Err(err) = decode_encoded(&bytes, &limits) {
                let PresetError::InvalidInput { reason, .. } = err else {
                    panic!("not an input error: {err}");
                };
                prop_assert!(matches!(
                    reason,
                    "image_format_unsupported" | "image_empty" | "image_too_large"
                        | "image_decode_failed"
                ));
            }
        }
    }

    /// A 4:2:0 baseline JPEG (its SOF0 segment starts at byte 158).
    const PHOTO_420: &[u8] = include_bytes!("../../../../tests/data/images/photo_420.jpg");

    fn decode_error_reason(bytes: &[u8]) -> &'static str {
        match decode_encoded(bytes, &ImageLimits::default()) {
            Err(PresetError::InvalidInput { reason, .. }) => reason,
            other => panic!("not an input error: {other:?}"),
        }
    }

    /// A small JPEG of `color_space` from mozjpeg's encoder (gray ramps in every channel).
    fn encode_jpeg(color_space: ColorSpace, channels: usize) -> Vec<u8> {
        let (width, height) = (24, 16);
        let samples: Vec<u8> = (0..width * height * channels)
            .map(|i| u8::try_from(i * 7 % 251).unwrap_or(0))
            .collect();
        let mut compress = mozjpeg::Compress::new(color_space);
        compress.set_size(width, height);
        compress.set_quality(90.0);
        let mut started = compress.start_compress(Vec::new()).expect("start");
        started.write_scanlines(&samples).expect("scanlines");
        started.finish().expect("finish")
    }

    #[test]
    fn truncated_jpeg_is_refused_like_pillow() {
        // mozjpeg alone would fake an EOI and fill the missing rows with gray.
        for cut in [PHOTO_420.len() / 2, PHOTO_420.len() - 2, 700] {
            assert_eq!(
                decode_error_reason(&PHOTO_420[..cut]),
                "image_decode_failed"
            );
        }
        let err = decode_encoded(&PHOTO_420[..PHOTO_420.len() / 2], &ImageLimits::default())
            .expect_err("truncated");
        assert!(err.to_string().contains(JPEG_EOF), "{err}");
        // Cut inside the header: no image size known yet.
        assert_eq!(
            decode_error_reason(&PHOTO_420[..100]),
            "image_decode_failed"
        );
    }

    #[test]
    fn extraneous_bytes_before_a_marker_are_ignored_like_pillow() {
        let whole = decode_encoded(PHOTO_420, &ImageLimits::default()).expect("photo");
        // Garbage between the first DQT segment and the second (libjpeg warns
        // "Corrupt JPEG data: 3 extraneous bytes before marker 0xdb" and goes on).
        let mut bytes = PHOTO_420.to_vec();
        bytes.splice(89..89, [0x00, 0x12, 0x34]);
        let with_garbage = decode_encoded(&bytes, &ImageLimits::default()).expect("garbage");
        assert_eq!(with_garbage.as_raw(), whole.as_raw());
        // Trailing bytes after EOI are ignored too.
        let mut bytes = PHOTO_420.to_vec();
        bytes.extend_from_slice(b"trailer");
        let trailed = decode_encoded(&bytes, &ImageLimits::default()).expect("trailer");
        assert_eq!(trailed.as_raw(), whole.as_raw());
    }

    #[test]
    fn corrupt_jpeg_is_an_input_error_not_a_panic() {
        // An unknown marker right after SOI: libjpeg's fatal error, caught.
        let err = decode_encoded(b"\xff\xd8\xff\x02\x00\x04", &ImageLimits::default())
            .expect_err("corrupt");
        let PresetError::InvalidInput { reason, .. } = &err else {
            panic!("not an input error: {err}");
        };
        assert_eq!(*reason, "image_decode_failed");
        assert!(
            err.to_string().contains("Unsupported marker type 0x02"),
            "{err}"
        );
    }

    #[test]
    fn jpeg_bomb_is_refused_from_its_header() {
        // SOF0 height and width (bytes 163..167) set to 65000 x 65000.
        let mut bytes = PHOTO_420.to_vec();
        bytes[163..167].copy_from_slice(&[0xfd, 0xe8, 0xfd, 0xe8]);
        assert_eq!(decode_error_reason(&bytes), "image_too_large");
    }

    #[test]
    fn gray_jpeg_is_replicated_and_cmyk_falls_back_to_image() {
        let gray = encode_jpeg(ColorSpace::JCS_GRAYSCALE, 1);
        let rgb = decode_encoded(&gray, &ImageLimits::default()).expect("gray");
        let luma = Decompress::new_mem(&gray)
            .and_then(|d| d.grayscale())
            .and_then(|mut d| d.read_scanlines::<u8>())
            .expect("luma");
        let replicated: Vec<u8> = luma.iter().flat_map(|&v| [v, v, v]).collect();
        assert_eq!(rgb.as_raw(), &replicated);

        let cmyk = encode_jpeg(ColorSpace::JCS_CMYK, 4);
        let header = Decompress::new_mem(&cmyk).expect("header");
        assert!(matches!(
            header.color_space(),
            ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK
        ));
        let rgb = decode_encoded(&cmyk, &ImageLimits::default()).expect("cmyk");
        assert_eq!(rgb.dimensions(), (24, 16));
    }

    #[test]
    fn default_limit_is_pillows_bomb_error() {
        assert_eq!(ImageLimits::default().max_pixels, 178_956_970);
    }

    #[test]
    fn sixteen_bit_gray_clamps_like_pillow() {
        let gray =
            ::image::ImageBuffer::<::image::Luma<u16>, _>::from_raw(3, 1, vec![7, 255, 4000])
                .map(DynamicImage::ImageLuma16);
        let rgb = to_rgb_like_pillow(gray.expect("3 samples"));
        assert_eq!(rgb.as_raw(), &[7, 7, 7, 255, 255, 255, 255, 255, 255]);
    }
}
