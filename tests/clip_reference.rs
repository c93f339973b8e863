//! Reading the CLIP reference outputs of `transformers` (`tests/data/reference/clip/`) for
//! the provider tests: token ids, the processor's exact pixels (rebuilt from its 8-bit
//! crops), label ids from a model's tokenizer, and the comparisons.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test helpers fail loudly"
)]

use std::path::Path;

use dp_spec::tensor_names::{ATTENTION_MASK, INPUT_IDS};
use dp_spec::{NamedTensors, Tensor, TensorData};
use serde_json::Value;

/// A JSON array of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    #[allow(clippy::cast_possible_truncation, reason = "reference values are f32")]
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// A JSON array of token ids.
pub fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// The values of an fp32 tensor.
pub fn fp32(t: &Tensor) -> Vec<f32> {
    match t.data() {
        TensorData::Fp32(v) => v.clone(),
        other => panic!("not fp32: {other:?}"),
    }
}

/// `v` scaled to unit L2 norm.
pub fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// The dot product.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Right-padded ids (with `<|endoftext|>`, as CLIP's tokenizer pads) and their mask.
pub fn batch(rows: &[Vec<i64>]) -> NamedTensors {
    let seq = rows.iter().map(Vec::len).max().unwrap();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    for row in rows {
        for i in 0..seq {
            ids.push(row.get(i).copied().unwrap_or(49407));
            mask.push(i64::from(i < row.len()));
        }
    }
    let shape = vec![rows.len(), seq];
    NamedTensors::from([
        (
            INPUT_IDS.to_owned(),
            Tensor::new(shape.clone(), TensorData::Int64(ids)).unwrap(),
        ),
        (
            ATTENTION_MASK.to_owned(),
            Tensor::new(shape, TensorData::Int64(mask)).unwrap(),
        ),
    ])
}

/// The processor's pixel_values of `image` under `config`, rebuilt exactly from the stored
/// uint8 crop: `(u8 * rescale_factor - mean) / std`, channels first.
pub fn pixel_values(pixels: &Value, image: &str, config: &str) -> (Vec<f32>, usize) {
    let settings = &pixels["configs"][config];
    let factor = settings["rescale_factor"].as_f64().unwrap();
    let mean: Vec<f64> = settings["image_mean"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let std: Vec<f64> = settings["image_std"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let png = pixels["images"][image]["configs"][config]["crop_png"]
        .as_str()
        .unwrap();
    let path = crate::data_dir().join("reference/clip").join(png);
    let rgb = image::open(&path).unwrap().to_rgb8();
    let (w, h) = rgb.dimensions();
    assert_eq!(w, h, "{png} is not square");
    let side = w as usize;
    let mut out = vec![0.0_f32; 3 * side * side];
    for (x, y, p) in rgb.enumerate_pixels() {
        for c in 0..3 {
            #[allow(clippy::cast_possible_truncation, reason = "pixels are f32")]
            let v = ((f64::from(p.0[c]) * factor - mean[c]) / std[c]) as f32;
            out[c * side * side + y as usize * side + x as usize] = v;
        }
    }
    (out, side)
}

/// Token ids of the labels, with the model folder's tokenizer (BOS + text + EOS).
pub fn label_ids(folder: &Path, labels: &Value) -> Vec<Vec<i64>> {
    let tokenizer = tokenizers::Tokenizer::from_file(folder.join("tokenizer.json")).unwrap();
    labels
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let encoding = tokenizer.encode(l.as_str().unwrap(), true).unwrap();
            encoding.get_ids().iter().map(|&i| i64::from(i)).collect()
        })
        .collect()
}

/// The worst cosine over rows of `[n, dim]` embeddings against normalized references.
pub fn worst_cosine(embeds: &[f32], dim: usize, references: &[Vec<f32>]) -> f32 {
    assert_eq!(embeds.len(), dim * references.len());
    embeds
        .chunks(dim)
        .zip(references)
        .map(|(row, reference)| dot(&normalized(row), reference))
        .fold(1.0_f32, f32::min)
}

/// The largest difference between the zero-shot probabilities of `[n, dim]` image and
/// `[labels, dim]` text embeddings (softmax over labels of `logit_scale` × cosine) and each
/// reference image's `zero_shot_probs`.
pub fn worst_zero_shot_error(
    image_embeds: &[f32],
    label_embeds: &[f32],
    dim: usize,
    logit_scale: f32,
    images: &[Value],
) -> f32 {
    let labels_n: Vec<Vec<f32>> = label_embeds.chunks(dim).map(normalized).collect();
    let mut worst_prob = 0.0_f32;
    for (row, image) in image_embeds.chunks(dim).zip(images) {
        let row = normalized(row);
        let logits: Vec<f32> = labels_n
            .iter()
            .map(|l| logit_scale * dot(&row, l))
            .collect();
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        for (p, want) in exps
            .iter()
            .map(|e| e / sum)
            .zip(floats(&image["zero_shot_probs"]))
        {
            worst_prob = worst_prob.max((p - want).abs());
        }
    }
    worst_prob
}
