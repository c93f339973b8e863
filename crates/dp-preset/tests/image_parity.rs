//! The image pipelines against their Python references (transformers' CLIP processor,
//! Pillow, OpenCV + Ultralytics' letterbox arithmetic), and decoding of good and bad files.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dp_preset::image::{
    ClipImageConfig, ImageLimits, LetterboxConfig, ResizeNormalizeConfig, clip_pixel_values,
    decode_rgb, letterbox, resize, resize_normalize,
};
use dp_preset::{ImageInput, PresetError};
use image::{ImageFormat, Rgb, RgbImage};
use proptest::prelude::*;
use serde_json::Value;

/// The workspace root (references and `.dp-assets` are found from it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A PNG read with the decoder under test (references are lossless, 8-bit RGB).
fn read_png(path: &Path) -> RgbImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    decode_rgb(&ImageInput::Encoded(bytes), &ImageLimits::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reason of an input error.
fn reason(result: Result<RgbImage, PresetError>) -> &'static str {
    match result {
        Err(PresetError::InvalidInput { reason, .. }) => reason,
        Err(other) => panic!("not an input error: {other}"),
        Ok(img) => panic!("decoded a {}x{} image", img.width(), img.height()),
    }
}

fn decode(bytes: Vec<u8>) -> Result<RgbImage, PresetError> {
    decode_rgb(&ImageInput::Encoded(bytes), &ImageLimits::default())
}

/// An image with some structure, for the encoders.
fn pattern(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        Rgb([
            (x * 37 % 256) as u8,
            (y * 59 % 256) as u8,
            ((x ^ y) * 11 % 256) as u8,
        ])
    })
}

fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encodes");
    out.into_inner()
}

/// A PNG chunk with its CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    // CRC-32 (ISO 3309), bit by bit: a test needs no table.
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in kind.iter().chain(data) {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    let mut out = (data.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&(!crc).to_be_bytes());
    out
}

/// A PNG whose header declares `width` x `height` (8-bit RGB) and that has no pixels.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    out.extend(png_chunk(b"IHDR", &ihdr));
    out.extend(png_chunk(b"IEND", &[]));
    out
}

#[test]
fn every_accepted_format_decodes() {
    let img = pattern(13, 7);
    for format in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::WebP] {
        let decoded = decode(encode(&img, format)).expect("lossless round trip");
        assert_eq!(decoded, img, "{format:?}");
    }
    let jpeg = decode(encode(&img, ImageFormat::Jpeg)).expect("jpeg");
    assert_eq!(jpeg.dimensions(), (13, 7));
    let gif = decode(encode(&img, ImageFormat::Gif)).expect("gif");
    assert_eq!(gif.dimensions(), (13, 7));
    // The committed odd files (palette, gray + alpha, animation, …).
    let dir = root().join("tests/data/images");
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let bytes = std::fs::read(entry.path()).expect("readable");
            decode(bytes).unwrap_or_else(|e| panic!("{}: {e}", entry.path().display()));
        }
    }
}

#[test]
fn bad_inputs_have_their_reasons() {
    assert_eq!(
        reason(decode(b"hello, not an image".to_vec())),
        "image_format_unsupported"
    );
    assert_eq!(
        reason(decode(b"II*\0 a tiff header".to_vec())),
        "image_format_unsupported"
    );
    assert_eq!(reason(decode(Vec::new())), "image_empty");
    assert_eq!(reason(decode(png_header(0, 10))), "image_empty");
    let png = encode(&pattern(64, 64), ImageFormat::Png);
    assert_eq!(
        reason(decode(png[..png.len() / 2].to_vec())),
        "image_decode_failed"
    );
    let jpeg = encode(&pattern(64, 64), ImageFormat::Jpeg);
    assert_eq!(reason(decode(jpeg[..20].to_vec())), "image_decode_failed");
    let limits = ImageLimits::default();
    let rgb = |width, height, len| ImageInput::Rgb8 {
        width,
        height,
        pixels: vec![0; len],
    };
    assert_eq!(
        reason(decode_rgb(&rgb(2, 2, 11), &limits)),
        "image_bad_pixels"
    );
    assert_eq!(reason(decode_rgb(&rgb(0, 2, 0), &limits)), "image_empty");
    assert!(decode_rgb(&rgb(2, 2, 12), &limits).is_ok());
    let small = ImageLimits { max_pixels: 100 };
    assert_eq!(
        reason(decode_rgb(&rgb(11, 10, 330), &small)),
        "image_too_large"
    );
    let bytes = encode(&pattern(11, 10), ImageFormat::Jpeg);
    assert_eq!(
        reason(decode_rgb(&ImageInput::Encoded(bytes), &small)),
        "image_too_large"
    );
}

#[test]
fn a_decompression_bomb_header_is_refused_at_once() {
    let start = Instant::now();
    assert_eq!(
        reason(decode(png_header(100_000, 100_000))),
        "image_too_large"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Truncated or corrupted files of every format fail cleanly (no panic).
    #[test]
    fn truncated_and_corrupted_files_fail_cleanly(
        format in 0usize..5,
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..4),
    ) {
        let formats = [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::Gif,
                       ImageFormat::Bmp, ImageFormat::WebP];
        let mut bytes = encode(&pattern(17, 9), formats[format]);
        for (at, value) in flips {
            let i = (at * bytes.len() as f64) as usize % bytes.len();
            bytes[i] = value;
        }
        bytes.truncate((cut * bytes.len() as f64) as usize + 1);
        if let Err(err) = decode(bytes) {
            let PresetError::InvalidInput { reason, .. } = err else {
                panic!("not an input error: {err}");
            };
            prop_assert!(matches!(reason, "image_format_unsupported" | "image_empty"
                | "image_too_large" | "image_decode_failed"));
        }
    }
}

/// max and mean |a - b|.
fn deltas(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let sum: f64 = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).sum();
    (max, (sum / a.len() as f64) as f32)
}

/// `(u8 * rescale_factor as f64) as f32`, then `(x - mean) / std` in f32, CHW.
fn normalized(img: &RgbImage, rescale: f64, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    (0..3)
        .flat_map(|c| {
            img.pixels()
                .map(move |p| ((f64::from(p[c]) * rescale) as f32 - mean[c]) / std[c])
        })
        .collect()
}

/// max and mean |Δ| in 8-bit levels.
fn level_deltas(a: &RgbImage, b: &RgbImage) -> (u8, f64) {
    assert_eq!(a.dimensions(), b.dimensions());
    let d: Vec<u8> = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .collect();
    let sum: u64 = d.iter().map(|v| u64::from(*v)).sum();
    (
        d.iter().copied().max().unwrap_or(0),
        sum as f64 / d.len() as f64,
    )
}

/// One 8-bit level after CLIP's normalization (the smallest std is 0.2613: 1/255/0.2613 =
/// 0.0150), with room for `f32`: every image must be within this of Pillow.
const CLIP_MAX: f32 = 0.02;
/// The mean |Δ| allowed over an image's pixel values.
const CLIP_MEAN: f32 = 0.002;

/// transformers 5.17 `CLIPImageProcessorPil` (tests/data/reference/clip/pixels.json).
#[test]
fn clip_pixels_match_transformers() {
    let dir = root().join("tests/data/reference/clip");
    let reference = read_json(&dir.join("pixels.json"));
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut checked = 0;
    // Per config: the worst max |Δ| and mean |Δ| over the images.
    let mut worst: std::collections::BTreeMap<String, (f32, f32)> = Default::default();
    for (name, image) in reference["images"].as_object().expect("images") {
        let path = root().join(image["path"].as_str().expect("path"));
        let Ok(bytes) = std::fs::read(&path) else {
            assert!(
                !ci,
                "{} is missing (run `cargo xtask setup`)",
                path.display()
            );
            println!(
                "NOT RUN: {name}: {} is missing (run `cargo xtask setup`)",
                path.display()
            );
            continue;
        };
        let img = decode_rgb(&ImageInput::Encoded(bytes), &ImageLimits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        for (config_name, expected) in image["configs"].as_object().expect("configs") {
            let config = &reference["configs"][config_name];
            let cfg = ClipImageConfig::from_preprocessor_config(config, "pixels.json")
                .expect("valid config");
            let crop = read_png(&dir.join(expected["crop_png"].as_str().expect("crop_png")));
            let want = normalized(&crop, cfg.rescale_factor, cfg.mean, cfg.std);
            let got = clip_pixel_values(&img, &cfg).expect("pixel values");
            let (max, mean) = deltas(&got, &want);
            println!("clip {name} {config_name}: max |Δ| {max:.5}, mean |Δ| {mean:.6}");
            let entry = worst.entry(config_name.clone()).or_default();
            *entry = (entry.0.max(max), entry.1.max(mean));
            assert!(max <= CLIP_MAX, "{name} {config_name}: max {max}");
            assert!(mean <= CLIP_MEAN, "{name} {config_name}: mean {mean}");
            checked += 1;
        }
    }
    for (config_name, (max, mean)) in &worst {
        println!(
            "clip {config_name}: worst max |Δ| {max:.5}, worst mean |Δ| {mean:.6} (allowed \
             {CLIP_MAX}, {CLIP_MEAN})"
        );
    }
    println!("clip: {checked} image x config pairs checked");
}

/// Pillow resize + the rescale/normalize formula, and OpenCV + Ultralytics' letterbox
/// (tests/data/reference/image, made by make_reference.py).
#[test]
fn resize_normalize_and_letterbox_match_their_references() {
    let dir = root().join("tests/data/reference/image");
    let reference = read_json(&dir.join("reference.json"));
    for case in reference["cases"].as_array().expect("cases") {
        let input = read_png(
            &dir.join("inputs")
                .join(case["input"].as_str().expect("input")),
        );
        let want = read_png(
            &dir.join("outputs")
                .join(case["output"].as_str().expect("output")),
        );
        let label = case["output"].as_str().unwrap_or_default();
        let params = serde_json::from_value(case["params"].clone()).expect("params object");
        match case["kind"].as_str() {
            Some("resize_normalize") => {
                let cfg = ResizeNormalizeConfig::from_params(&params, None).expect("valid");
                let got = resize(&input, cfg.width, cfg.height, cfg.resample).expect("resized");
                let (max, mean) = level_deltas(&got, &want);
                println!("{label}: max |Δ| {max} levels, mean |Δ| {mean:.5} levels");
                // One level: the passes run in `f32` and round as Pillow's do; only an exact
                // rounding tie can fall the other way than with Pillow's 22-bit coefficients.
                assert!(max <= 1 && mean <= 0.001, "{label}: {max} {mean}");
                let values = resize_normalize(&input, &cfg).expect("values");
                let (max, mean) = deltas(
                    &values,
                    &normalized(&want, cfg.rescale_factor, cfg.mean, cfg.std),
                );
                println!("{label}: normalized max |Δ| {max:.5}, mean |Δ| {mean:.6}");
                assert!(
                    max <= 1.0 / 255.0 / 0.224 + 1e-4 && mean <= 0.0001,
                    "{label}"
                );
            }
            Some("letterbox") => {
                let cfg = LetterboxConfig::from_params(&params).expect("valid");
                let (values, geometry) = letterbox(&input, &cfg).expect("letterboxed");
                let g = &case["geometry"];
                assert_eq!(
                    (geometry.pad_left, geometry.pad_top),
                    (
                        g["pad_left"].as_u64().unwrap_or(0) as u32,
                        g["pad_top"].as_u64().unwrap_or(0) as u32
                    ),
                    "{label}"
                );
                assert_eq!(
                    (geometry.resized_width, geometry.resized_height),
                    (
                        g["resized_width"].as_u64().unwrap_or(0) as u32,
                        g["resized_height"].as_u64().unwrap_or(0) as u32
                    ),
                    "{label}"
                );
                let expected: Vec<f32> = (0..3)
                    .flat_map(|c| want.pixels().map(move |p| f32::from(p[c]) / 255.0))
                    .collect();
                let (max, mean) = deltas(&values, &expected);
                println!(
                    "{label}: max |Δ| {:.2} levels, mean |Δ| {:.5} levels",
                    max * 255.0,
                    mean * 255.0
                );
                assert!(
                    max * 255.0 <= 1.01 && mean * 255.0 <= 0.1,
                    "{label}: {max} {mean}"
                );
            }
            other => panic!("unknown case kind {other:?}"),
        }
    }
}
