"""Checks the ONNX graphs `cargo xtask setup` builds (.dp-assets/models/tiny-clip-onnx) against the
transformers references of this folder, with ONNX Runtime and no PyTorch.

Run in the venv of requirements.txt of this folder (it has onnxruntime 1.31.1, the version of
xtask/requirements/python-onnx.txt, and Pillow for the PNG crops):

    python tests/data/reference/clip/check_onnx.py

Texts: the `input_ids` of tiny-clip.json, one by one and as one right-padded batch. Images:
pixel_values rebuilt from the uint8 crops of pixels.json (config `tiny-clip`), which also checks
that those crops stand for what the processor fed the model. Every cosine must be >= 0.99999.
"""

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
MODEL = ROOT / ".dp-assets" / "models" / "tiny-clip-onnx"
MIN_COSINE = 0.99999


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    reference = json.loads((HERE / "tiny-clip.json").read_text())
    pixels = json.loads((HERE / "pixels.json").read_text())
    text = ort.InferenceSession(str(MODEL / "text_model.onnx"), providers=["CPUExecutionProvider"])
    vision = ort.InferenceSession(str(MODEL / "vision_model.onnx"), providers=["CPUExecutionProvider"])
    worst = 1.0

    ids = [t["input_ids"] for t in reference["texts"]]
    longest = max(map(len, ids))
    batch_ids = np.full((len(ids), longest), 49407, np.int64)
    batch_mask = np.zeros((len(ids), longest), np.int64)
    for i, row in enumerate(ids):
        batch_ids[i, : len(row)] = row
        batch_mask[i, : len(row)] = 1
    batch_embeds, scale = text.run(None, {"input_ids": batch_ids, "attention_mask": batch_mask})
    assert abs(float(scale[0]) - reference["logit_scale"]) < 1e-4, scale
    for i, entry in enumerate(reference["texts"]):
        row = np.array([entry["input_ids"]], np.int64)
        alone, _ = text.run(None, {"input_ids": row, "attention_mask": np.ones_like(row)})
        for got in (alone[0], batch_embeds[i]):
            c = cosine(got, np.array(entry["embedding"]))
            worst = min(worst, c)
            assert c >= MIN_COSINE, (entry["text"], c)

    config = pixels["configs"]["tiny-clip"]
    mean = np.array(config["image_mean"])[:, None, None]
    std = np.array(config["image_std"])[:, None, None]
    for entry in reference["images"]:
        crop = pixels["images"][entry["image"]]["configs"]["tiny-clip"]["crop_png"]
        u8 = np.asarray(Image.open(HERE / crop).convert("RGB")).transpose(2, 0, 1).astype(np.float64)
        pv = ((u8 * config["rescale_factor"] - mean) / std).astype(np.float32)[None]
        embeds, _ = vision.run(None, {"pixel_values": pv})
        c = cosine(embeds[0], np.array(entry["embedding"]))
        worst = min(worst, c)
        assert c >= MIN_COSINE, (entry["image"], c)
    print(f"tiny-clip-onnx matches transformers: {len(ids)} texts, {len(reference['images'])} images, worst cosine {worst:.8f}")


if __name__ == "__main__":
    main()
