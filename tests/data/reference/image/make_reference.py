"""Reference outputs of the image_resize_normalize and image_letterbox pixel pipelines.

Run from this folder with the versions of requirements.txt:
    python make_reference.py
It writes inputs/*.png (deterministic synthetic images, made once and kept), outputs/*.png
(the uint8 images each pipeline produced before its float step) and reference.json
(cases, parameters, letterbox geometry). The float step is a formula the Rust test
applies to these uint8 images: resize_normalize = (f32(u8 * (1/255 as f64)) - mean) / std
in float32 (transformers' rescale + normalize), letterbox = u8 / 255 in float32.
"""

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

HERE = Path(__file__).parent
INPUTS = HERE / "inputs"
OUTPUTS = HERE / "outputs"


def make_inputs():
    """Small images with edges, gradients and odd sizes (kept small to commit)."""
    INPUTS.mkdir(exist_ok=True)
    rng = np.random.default_rng(365)
    y, x = np.mgrid[0:61, 0:97]
    scene = np.stack(
        [
            (x * 255 / 96),
            (127 + 120 * np.sin(x / 5.0) * np.cos(y / 7.0)),
            ((x // 12 + y // 9) % 2) * 200 + 20,
        ],
        axis=-1,
    )
    scene[20:40, 30:60] = [250, 10, 10]  # a hard-edged block: over/undershoot of the kernels
    images = {
        "scene_97x61.png": scene.clip(0, 255).astype(np.uint8),
        "odd_3x5.png": rng.integers(0, 256, (5, 3, 3), dtype=np.uint8),
        "strip_1000x20.png": np.stack(
            [np.tile((np.arange(1000) * 7 % 256), (20, 1))] * 3, axis=-1
        ).astype(np.uint8),
        "tall_31x200.png": np.stack(
            [np.tile((np.arange(200)[:, None] * 3 % 256), (1, 31))] * 3, axis=-1
        ).astype(np.uint8),
    }
    for name, pixels in images.items():
        path = INPUTS / name
        if not path.exists():
            Image.fromarray(pixels, "RGB").save(path, optimize=True)


def ultralytics_letterbox(rgb, size):
    """ultralytics.data.augment.LetterBox(new_shape=(size, size), auto=False,
    scale_fill=False, scaleup=True, center=True) on an HWC uint8 image."""
    shape = rgb.shape[:2]
    r = min(size / shape[0], size / shape[1])
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = size - new_unpad[0], size - new_unpad[1]
    dw /= 2
    dh /= 2
    if shape[::-1] != new_unpad:
        rgb = cv2.resize(rgb, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = cv2.copyMakeBorder(
        rgb, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114)
    )
    geometry = {
        "scale": r,
        "pad_left": left,
        "pad_top": top,
        "resized_width": new_unpad[0],
        "resized_height": new_unpad[1],
    }
    return out, geometry


def main():
    make_inputs()
    OUTPUTS.mkdir(exist_ok=True)
    cases = []
    resize_settings = [
        {"image_size": [224, 224], "resample": "bilinear", "pil": Image.BILINEAR},
        {"image_size": [80, 96], "resample": "bicubic", "pil": Image.BICUBIC},
    ]
    for path in sorted(INPUTS.glob("*.png")):
        img = Image.open(path).convert("RGB")
        for setting in resize_settings:
            h, w = setting["image_size"]
            out = img.resize((w, h), setting["pil"])
            name = f"{path.stem}.resize_{setting['resample']}_{h}x{w}.png"
            out.save(OUTPUTS / name, optimize=True)
            cases.append(
                {
                    "kind": "resize_normalize",
                    "input": path.name,
                    "output": name,
                    "params": {
                        "image_size": [h, w],
                        "resample": setting["resample"],
                        "mean": [0.485, 0.456, 0.406],
                        "std": [0.229, 0.224, 0.225],
                    },
                }
            )
        for size in (64, 160):
            out, geometry = ultralytics_letterbox(np.asarray(img), size)
            name = f"{path.stem}.letterbox_{size}.png"
            Image.fromarray(out, "RGB").save(OUTPUTS / name, optimize=True)
            cases.append(
                {
                    "kind": "letterbox",
                    "input": path.name,
                    "output": name,
                    "params": {"image_size": size},
                    "geometry": geometry,
                }
            )
    (HERE / "reference.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()
