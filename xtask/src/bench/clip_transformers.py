"""The transformers side of `cargo xtask bench clip` (PyTorch CPU, Pillow), in the bench venv.

Three modes:

- `--make-images SRC_DIR OUT_DIR --count N`: the bench's photographs, made once at set-up:
  the scikit-image photos of SRC_DIR (RGB), each resized to 1024x768 (bicubic) and saved
  as JPEG quality 90; photo i is SRC[i % len(SRC)], mirrored for the second pass over
  SRC, flipped upside down for the third, so that no two files are alike.
- `--write-pixels FILE --model-dir DIR --images DIR --batch B`: the pixel_values of the
  first B photographs, as `CLIPImageProcessorPil` makes them, written as raw little-endian
  float32 [B, 3, H, W]: the one batch every image-tower runner (candle, ONNX Runtime,
  PyTorch, Python onnxruntime) is fed.
- timing (default): prints one JSON object with
  - `preprocess_s`: seconds per call of `CLIPImageProcessorPil(images=..., return_tensors=
    "np")` on every JPEG of --images, each decoded from its bytes with PIL inside the timed
    call (as dp decodes inside its own);
  - `image_s`: seconds per call of `CLIPModel.get_image_features(pixel_values)` under
    `torch.inference_mode()` on the batch of --pixels;
  - `probe_norm`, `probe_mix`, `probe_dim`: the norm of the (not normalized) image embedding
    of the batch's first image, and its dot product with the vector (sin i), for xtask to
    check that every runner computes the same thing;
  each workload after one warm-up call, for at least --min-seconds and --min-calls calls.

`CLIPImageProcessorPil` is what transformers 5.17 gives for CLIP without torchvision (this
venv has none; `AutoImageProcessor` would even refuse to load without it): named here so
that a torchvision appearing in the venv cannot change the anchor silently.
"""

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path

# Never reach a hub: the model is a local folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

WIDTH, HEIGHT = 1024, 768
JPEG_QUALITY = 90


def make_images(src: Path, out: Path, count: int) -> None:
    from PIL import Image, ImageOps

    sources = sorted(p for p in src.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not sources:
        raise SystemExit(f"no photographs in {src}")
    out.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as photo:
            image = photo.convert("RGB").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
        variant = (i // len(sources)) % 3
        if variant == 1:
            image = ImageOps.mirror(image)
        elif variant == 2:
            image = ImageOps.flip(image)
        image.save(out / f"photo-{i:02}.jpg", "JPEG", quality=JPEG_QUALITY)


def jpegs(folder: Path) -> list:
    return [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]


def processor(model_dir: str):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    return CLIPImageProcessorPil.from_pretrained(model_dir)


def preprocess(proc, blobs: list):
    from PIL import Image

    images = [Image.open(io.BytesIO(b)) for b in blobs]
    return proc(images=images, return_tensors="np")["pixel_values"]


def timed(call, min_seconds: float, min_calls: int) -> list:
    call()  # warm-up
    samples = []
    start = time.perf_counter()
    while len(samples) < min_calls or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return samples


def probe(embedding) -> dict:
    """What xtask compares across runners: the embedding's norm, and its dot product with
    the vector (sin i)."""
    import numpy as np

    v = np.asarray(embedding, dtype=np.float64)
    return {
        "probe_norm": float(np.sqrt((v * v).sum())),
        "probe_mix": float((v * np.sin(np.arange(v.size))).sum()),
        "probe_dim": int(v.size),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--make-images", nargs=2, metavar=("SRC_DIR", "OUT_DIR"))
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--write-pixels")
    parser.add_argument("--model-dir")
    parser.add_argument("--images")
    parser.add_argument("--pixels")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--min-calls", type=int, default=3)
    args = parser.parse_args()

    if args.make_images:
        make_images(Path(args.make_images[0]), Path(args.make_images[1]), args.count)
        return
    import numpy as np

    if args.write_pixels:
        blobs = jpegs(Path(args.images))[: args.batch]
        if len(blobs) < args.batch:
            raise SystemExit(f"{args.images} holds {len(blobs)} JPEGs, fewer than --batch {args.batch}")
        pixels = preprocess(processor(args.model_dir), blobs)
        np.ascontiguousarray(pixels, dtype="<f4").tofile(args.write_pixels)
        return

    import PIL
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    from transformers import CLIPModel

    proc = processor(args.model_dir)
    blobs = jpegs(Path(args.images))
    out = preprocess(proc, blobs)
    assert out.shape[0] == len(blobs), out.shape
    preprocess_s = timed(lambda: preprocess(proc, blobs), args.min_seconds, args.min_calls)

    model = CLIPModel.from_pretrained(args.model_dir).eval()
    side = model.config.vision_config.image_size
    flat = np.fromfile(args.pixels, dtype="<f4")
    pixels = torch.from_numpy(flat.reshape(-1, 3, side, side).copy())

    def embed():
        result = model.get_image_features(pixel_values=pixels)
        # transformers 5 returns a model output whose pooler_output is the projection.
        return result if isinstance(result, torch.Tensor) else result.pooler_output

    with torch.inference_mode():
        first = embed()
        assert tuple(first.shape) == (pixels.shape[0], model.config.projection_dim), first.shape
        image_s = timed(embed, args.min_seconds, args.min_calls)
    json.dump(
        {
            "preprocess_s": preprocess_s,
            "preprocess_images": len(blobs),
            "image_s": image_s,
            "batch": int(pixels.shape[0]),
            **probe(first[0].tolist()),
            "threads": args.threads,
            "processor": type(proc).__name__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "pillow": PIL.__version__,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
