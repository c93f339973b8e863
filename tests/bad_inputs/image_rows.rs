//! Rows of the `image_rows` area: images a CLIP model (`image_clip`) cannot take, and
//! image or label requests a model cannot serve. Each image is a file under the fixture's
//! `outside/` folder, read as a caller would; the tiny CLIP of `cargo xtask setup` is the
//! model (copied into the fixture's models root with its catalog spec).

use dp_manager::preset::{ImageInput, PresetInputs};

use super::*;

/// The tiny CLIP, as `cargo xtask setup` made it, with its catalog spec.
fn tiny_clip(fx: &Fixture) {
    let from = dp_tests::workspace_root().join(".dp-assets/models/tiny-clip");
    dp_tests::copy_dir(&from, &fx.model_file("tiny-clip")).unwrap();
    let spec = dp_tests::sample_catalog().join("image_embedding/tiny-clip.yaml");
    fx.spec_file(
        "image_embedding",
        "tiny-clip.yaml",
        &fs::read_to_string(spec).unwrap(),
    );
}

/// A CRC-32 (IEEE), for PNG chunks built by hand.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG that declares `width` × `height` RGB pixels and holds no pixel data.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = Vec::with_capacity(33);
    png.extend_from_slice(&[0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n']);
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13_u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    png
}

/// Embeds the image file `outside/<name>` with the tiny CLIP.
fn embed_outside(fx: &Fixture, name: &str) -> Outcome {
    let bytes = fs::read(fx.outside().join(name)).unwrap();
    fx.manager()?
        .embed_images("tiny-clip", &[ImageInput::Encoded(bytes)])
        .map(drop)
        .map_err(Refusal::from)
}

pub(crate) fn rows() -> Vec<Case> {
    use ErrorCode as C;
    vec![
        Case {
            name: "image_truncated_png",
            needs: Needs::TinyClip,
            setup: |fx| {
                tiny_clip(fx);
                let png = fs::read(dp_tests::data_dir().join("images/gray.png")).unwrap();
                fx.write("outside/cut.png", &png[..png.len() / 2]);
            },
            action: |fx| embed_outside(fx, "cut.png"),
            code: C::InvalidInput,
            says: &["image 0", "corrupt or truncated", "send the complete file"],
        },
        Case {
            name: "image_in_an_unsupported_format",
            needs: Needs::TinyClip,
            setup: |fx| {
                tiny_clip(fx);
                fx.write("outside/doc.pdf", b"%PDF-1.7\n1 0 obj << >> endobj\n");
            },
            action: |fx| embed_outside(fx, "doc.pdf"),
            code: C::InvalidInput,
            says: &["image 0", "send a JPEG, PNG, WebP, GIF or BMP"],
        },
        Case {
            name: "image_file_of_zero_bytes",
            needs: Needs::TinyClip,
            setup: |fx| {
                tiny_clip(fx);
                fx.write("outside/empty.jpg", b"");
            },
            action: |fx| embed_outside(fx, "empty.jpg"),
            code: C::InvalidInput,
            says: &["image 0", "empty (0 bytes)"],
        },
        Case {
            // A decompression bomb: 10^10 pixels declared in 33 bytes; refused from the
            // header, before any pixel buffer exists.
            name: "image_png_declaring_100000_by_100000_pixels",
            needs: Needs::TinyClip,
            setup: |fx| {
                tiny_clip(fx);
                fx.write("outside/bomb.png", png_header(100_000, 100_000));
            },
            action: |fx| embed_outside(fx, "bomb.png"),
            code: C::InvalidInput,
            says: &["100000x100000", "over the limit", "downscale it"],
        },
        Case {
            name: "image_png_of_zero_width",
            needs: Needs::TinyClip,
            setup: |fx| {
                tiny_clip(fx);
                fx.write("outside/flat.png", png_header(0, 10));
            },
            action: |fx| embed_outside(fx, "flat.png"),
            code: C::InvalidInput,
            says: &["image 0"],
        },
        Case {
            name: "image_rgb_pixels_of_the_wrong_length",
            needs: Needs::TinyClip,
            setup: tiny_clip,
            action: |fx| {
                let image = ImageInput::Rgb8 {
                    width: 4,
                    height: 4,
                    pixels: vec![0; 47],
                };
                fx.manager()?
                    .embed_images("tiny-clip", &[image])
                    .map(drop)
                    .map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["4x4", "needs 48 bytes", "47 were given"],
        },
        Case {
            name: "zero_shot_classification_without_labels",
            needs: Needs::TinyClip,
            setup: tiny_clip,
            action: |fx| {
                let png = fs::read(dp_tests::data_dir().join("images/gray.png")).unwrap();
                let task = TaskRequest::new(
                    TaskType::ZeroShotClassification,
                    "tiny-clip",
                    Some(TaskData::ImagesWithLabels {
                        images: vec![ImageInput::Encoded(png)],
                        labels: vec![],
                    }),
                );
                fx.manager()?.task(task).map(drop).map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["at least one label", "--label"],
        },
        Case {
            name: "images_given_to_a_text_only_model",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| {
                let png = fs::read(dp_tests::data_dir().join("images/gray.png")).unwrap();
                fx.manager()?
                    .run_preset(TINY_BERT, PresetInputs::Images(&[ImageInput::Encoded(png)]))
                    .map(drop)
                    .map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["sentence_embedding", "does not take images"],
        },
        Case {
            name: "texts_given_to_an_image_embedding_task",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| {
                let task = TaskRequest::new(
                    TaskType::ImageEmbedding,
                    TINY_BERT,
                    Some(TaskData::Texts(vec!["a".to_owned()])),
                );
                fx.manager()?.task(task).map(drop).map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["image_embedding task takes images, not texts"],
        },
    ]
}
