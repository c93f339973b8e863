"""Makes the CLIP reference outputs of this folder with Hugging Face transformers (PyTorch).

Reads the files `cargo xtask setup` made (.dp-assets/models/tiny-clip, tiny-clip-wide,
.dp-assets/images/skimage) and the odd test images of tests/data/images/ (which it makes
first when they are missing), and writes:

- pixels.json and pixels/*.png: what transformers' CLIPImageProcessor makes of each image
  under three processor configs (openai/clip-vit-base-patch32's, tiny-clip's, tiny-clip-wide's):
  the processor works in 8 bits up to the crop, so the exact uint8 crop is stored as a PNG and
  `(u8 * rescale_factor - mean) / std` gives pixel_values back (asserted here within 1e-5);
- tiny-clip.json, tiny-clip-wide.json: token ids, normalized text and image embeddings,
  logit_scale and zero-shot probabilities of CLIPModel on those folders.

Run it from anywhere, in a venv with requirements.txt of this folder (see README.md):

    python tests/data/reference/clip/make_reference.py --open-clip-wheel PATH/open_clip_torch-3.3.0-py3-none-any.whl
"""

import argparse
import gzip
import hashlib
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import PIL
import torch
import transformers
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizerFast

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
ASSETS = ROOT / ".dp-assets"
IMAGES = ROOT / "tests" / "data" / "images"
PHOTOS = ASSETS / "images" / "skimage"
PHOTO_NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "logo.png"]
ODD_NAMES = [
    "odd_3x5.png",
    "odd_1000x20.png",
    "gray.png",
    "palette.png",
    "rgba.png",
    "la.png",
    "photo_420.jpg",
    "small.webp",
    "anim.gif",
    "plain.bmp",
]
MODELS = ["tiny-clip", "tiny-clip-wide"]
OPENAI_CONFIG_DIR = HERE / "openai-clip-vit-base-patch32"

TEXTS = [
    "a photo of a cat",
    "A PHOTO OF AN ASTRONAUT!!!",
    "",
    "naïve café — 3.14159 déjà vu, 東京 🚀 ﬁne",
    "it's a dog's life, isn't it?   tabs\tand\nnewlines don't    matter",
    "the quick brown fox jumps over the lazy dog " * 10,  # 102 tokens: truncated to 77
]
LABELS = ["a photo of a cat", "a photo of an astronaut", "a cup of coffee", "a rocket"]
MODEL_IMAGES = PHOTO_NAMES + ["odd_3x5.png", "rgba.png", "palette.png", "photo_420.jpg", "anim.gif", "la.png"]

# Strings the tokenizer check runs through both tokenizers.
TRICKY = TEXTS + [
    "Hello, World! HELLO world?!",
    "1234567890 12.5% $99.99 #hashtag @user",
    "emoji 😀👍🏽 and CJK 漢字かなカナ 한국어",
    "  leading and trailing  ",
    "<|startoftext|> literal specials <|endoftext|>",
    "ÀÉÎÕÜ ß ǅ İ",
    "don't won't can't I'm you're we've they'll he'd",
    "a" * 300,
    "\u00a0non-breaking\u2003spaces\u200bzero-width",
]


def sig7(x: float) -> float:
    return float(f"{float(x):.7g}")


def sig7_list(a) -> list:
    return [sig7(v) for v in np.asarray(a).reshape(-1)]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- odd images


def make_odd_images() -> None:
    """The small odd images of tests/data/images/, from a fixed RNG (kept when present)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    if all((IMAGES / n).is_file() for n in ODD_NAMES):
        return
    rng = np.random.default_rng(20261202)

    def smooth(h: int, w: int, c: int) -> np.ndarray:
        """Gradients plus noise: varied pixels that still compress."""
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256][:c], -1)
        noise = rng.integers(-20, 21, size=(h, w, c))
        return np.clip(base + noise, 0, 255).astype(np.uint8)

    Image.fromarray(rng.integers(0, 256, size=(5, 3, 3), dtype=np.uint8), "RGB").save(IMAGES / "odd_3x5.png")
    Image.fromarray(smooth(20, 1000, 3), "RGB").save(IMAGES / "odd_1000x20.png")
    Image.fromarray(smooth(48, 64, 1)[..., 0], "L").save(IMAGES / "gray.png")
    palette_image = Image.fromarray(rng.integers(0, 16, size=(40, 56), dtype=np.uint8), "P")
    palette_image.putpalette(rng.integers(0, 256, size=16 * 3, dtype=np.uint8).tolist())
    palette_image.save(IMAGES / "palette.png")
    rgba = smooth(50, 70, 3)
    alpha = np.tile(np.linspace(0, 255, 70).astype(np.uint8), (50, 1))
    Image.fromarray(np.dstack([rgba, alpha]), "RGBA").save(IMAGES / "rgba.png")
    la = smooth(30, 45, 1)[..., 0]
    Image.fromarray(np.dstack([la, alpha[:30, :45][:, ::-1]]), "LA").save(IMAGES / "la.png")
    with Image.open(PHOTOS / "chelsea.png") as chelsea:
        crop = chelsea.convert("RGB").crop((120, 40, 320, 190))  # 200 x 150: the cat's face
    crop.save(IMAGES / "photo_420.jpg", quality=90, subsampling=2)  # 2 = 4:2:0
    Image.fromarray(smooth(36, 52, 3), "RGB").save(IMAGES / "small.webp", lossless=True)
    frames = [Image.fromarray(smooth(32, 40, 3), "RGB").quantize(32, dither=Image.Dither.NONE) for _ in range(2)]
    frames[0].save(IMAGES / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    Image.fromarray(smooth(30, 40, 3), "RGB").save(IMAGES / "plain.bmp")
    for name in ODD_NAMES:
        size = (IMAGES / name).stat().st_size
        assert size < 60_000, f"{name} is {size} bytes"


def image_path(name: str) -> Path:
    return (PHOTOS if name in PHOTO_NAMES else IMAGES) / name


def open_image(name: str) -> Image.Image:
    """The image as a user would pass it: PIL.Image.open, loaded (the first frame of a GIF)."""
    image = Image.open(image_path(name))
    image.load()
    return image


# ---------------------------------------------------------------------------- pixels


def processor_configs() -> dict:
    return {
        "openai": OPENAI_CONFIG_DIR,
        "tiny-clip": ASSETS / "models" / "tiny-clip",
        "tiny-clip-wide": ASSETS / "models" / "tiny-clip-wide",
    }


def make_pixels() -> dict:
    out_dir = HERE / "pixels"
    out_dir.mkdir(exist_ok=True)
    configs = {}
    images = {}
    for config_name, folder in processor_configs().items():
        processor = CLIPImageProcessor.from_pretrained(folder)
        mean = np.array(processor.image_mean, np.float64)
        std = np.array(processor.image_std, np.float64)
        factor = float(processor.rescale_factor)
        configs[config_name] = {
            "source": str(folder.relative_to(ROOT)),
            "preprocessor_config_sha256": sha256(folder / "preprocessor_config.json"),
            "processor_class": type(processor).__name__,
            "size": dict(processor.size),
            "crop_size": dict(processor.crop_size),
            "resample": int(processor.resample),
            "rescale_factor": factor,
            "image_mean": list(processor.image_mean),
            "image_std": list(processor.image_std),
        }
        # Record the size the processor resizes to, before the crop.
        resized_sizes = []
        original_resize = processor.resize

        def recording_resize(image, *args, **kwargs):
            result = original_resize(image, *args, **kwargs)
            resized_sizes.append([int(result.shape[-2]), int(result.shape[-1])])  # channels first
            return result

        processor.resize = recording_resize
        for name in PHOTO_NAMES + ODD_NAMES:
            resized_sizes.clear()
            with open_image(name) as image:
                mode, size = image.mode, image.size
                pixel_values = processor(images=image, return_tensors="np")["pixel_values"]
            assert len(resized_sizes) == 1
            pv = pixel_values[0].astype(np.float64)  # [3, H, W]
            u8f = np.round((pv * std[:, None, None] + mean[:, None, None]) / factor)
            assert u8f.min() >= 0 and u8f.max() <= 255, (name, config_name)
            u8 = u8f.astype(np.uint8)
            back = (u8.astype(np.float64) * factor - mean[:, None, None]) / std[:, None, None]
            err = float(np.abs(back - pixel_values[0]).max())
            assert err <= 1e-5, f"{name} under {config_name}: the processor is not 8-bit ({err})"
            png = out_dir / f"{name}.{config_name}.png"
            Image.fromarray(np.ascontiguousarray(u8.transpose(1, 2, 0)), "RGB").save(png, optimize=True)
            entry = images.setdefault(
                name,
                {
                    "path": str(image_path(name).relative_to(ROOT)),
                    "sha256": sha256(image_path(name)),
                    "mode": mode,
                    "width": size[0],
                    "height": size[1],
                    "configs": {},
                },
            )
            entry["configs"][config_name] = {
                "pixel_values_shape": list(pixel_values.shape),
                "pixel_values_dtype": str(pixel_values.dtype),
                "resized_height_width": resized_sizes[0],
                "crop_png": str(png.relative_to(HERE)),
                "crop_png_sha256": sha256(png),
                "max_abs_error_of_u8_reconstruction": sig7(err),
            }
    return {
        "what": "CLIPImageProcessor(...)(images=PIL.Image.open(path), return_tensors='np') of transformers "
        + transformers.__version__
        + "; pixel_values[0] == (crop_png as uint8 RGB, HWC -> CHW) * rescale_factor - image_mean) / image_std "
        "within 1e-5 for every element (asserted when made); resized_height_width is the size after the "
        "shortest-edge bicubic resize, before the centre crop",
        "versions": versions(),
        "configs": configs,
        "images": images,
    }


# ---------------------------------------------------------------------------- tokenizer check


def bytes_to_unicode() -> dict:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def check_tokenizer(open_clip_wheel: Path) -> dict:
    """Builds CLIPTokenizerFast from open_clip's merges with transformers and compares it with
    the tokenizer.json setup wrote (bytes, and ids over TRICKY)."""
    with zipfile.ZipFile(open_clip_wheel) as z:
        lines = gzip.decompress(z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    built = CLIPTokenizerFast(vocab=vocab, merges=merges)
    setup_dir = ASSETS / "models" / "tiny-clip"
    loaded = CLIPTokenizerFast.from_pretrained(setup_dir)
    with tempfile.TemporaryDirectory() as tmp:
        built.save_pretrained(tmp)
        same_bytes = (Path(tmp) / "tokenizer.json").read_bytes() == (setup_dir / "tokenizer.json").read_bytes()
    mismatches = []
    for text in TRICKY:
        a = built(text, truncation=True, max_length=77)["input_ids"]
        b = loaded(text, truncation=True, max_length=77)["input_ids"]
        if a != b:
            mismatches.append(text)
    cat = loaded("a photo of a cat")["input_ids"]
    assert cat == [49406, 320, 1125, 539, 320, 2368, 49407], cat
    assert not mismatches, mismatches
    return {
        "tokenizer_json_identical_to_save_pretrained": same_bytes,
        "strings_compared": len(TRICKY),
        "mismatches": mismatches,
        "class_loaded": type(loaded).__name__,
    }


# ---------------------------------------------------------------------------- models


def features(output, name: str) -> torch.Tensor:
    """get_*_features returns a tensor in transformers 4 and an output object in 5."""
    if isinstance(output, torch.Tensor):
        return output
    value = getattr(output, name, None)
    return value if value is not None else output.pooler_output


def normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def make_model_reference(name: str, tokenizer_check: dict) -> dict:
    folder = ASSETS / "models" / name
    model = CLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
    processor = CLIPProcessor.from_pretrained(folder)
    tokenizer = processor.tokenizer
    config = json.loads((folder / "config.json").read_text())

    with torch.no_grad():
        texts = []
        batch = tokenizer(TEXTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        batch_embeds = normalize(features(model.get_text_features(**batch), "text_embeds"))
        for i, text in enumerate(TEXTS):
            alone = tokenizer(text, truncation=True, max_length=77, return_tensors="pt")
            embeds = normalize(features(model.get_text_features(**alone), "text_embeds"))[0]
            # Padding must not change an embedding.
            assert torch.allclose(embeds, batch_embeds[i], atol=1e-5), text
            untruncated = len(tokenizer(text)["input_ids"])
            texts.append(
                {
                    "text": text,
                    "input_ids": alone["input_ids"][0].tolist(),
                    "untruncated_length": untruncated,
                    "embedding": sig7_list(embeds),
                }
            )

        images = []
        opened = [open_image(n) for n in MODEL_IMAGES]
        pixel_values = processor(images=opened, return_tensors="pt")["pixel_values"]
        image_embeds = normalize(features(model.get_image_features(pixel_values=pixel_values), "image_embeds"))
        labels = tokenizer(LABELS, padding=True, truncation=True, max_length=77, return_tensors="pt")
        outputs = model(input_ids=labels["input_ids"], attention_mask=labels["attention_mask"], pixel_values=pixel_values)
        probs = outputs.logits_per_image.softmax(-1)
        for i, image_name in enumerate(MODEL_IMAGES):
            images.append(
                {
                    "image": image_name,
                    "path": str(image_path(image_name).relative_to(ROOT)),
                    "sha256": sha256(image_path(image_name)),
                    "embedding": sig7_list(image_embeds[i]),
                    "zero_shot_probs": sig7_list(probs[i]),
                }
            )
        label_embeds = normalize(features(model.get_text_features(**labels), "text_embeds"))
        for image in opened:
            image.close()

    return {
        "what": "CLIPModel.from_pretrained(folder) (eval, float32) and CLIPProcessor.from_pretrained(folder) of "
        "transformers " + transformers.__version__ + "; texts tokenized one by one with truncation=True, "
        "max_length=77 (the embeddings are the same in a padded batch, asserted); embeddings are "
        "get_*_features then divided by their L2 norm; zero_shot_probs = "
        "outputs.logits_per_image.softmax(-1) over labels; floats rounded to 7 significant digits",
        "versions": versions(),
        "model": str(folder.relative_to(ROOT)),
        "model_sha256": sha256(folder / "model.safetensors"),
        "config": {
            "projection_dim": config["projection_dim"],
            "text": {k: config["text_config"][k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")},
            "vision": {
                k: config["vision_config"][k]
                for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size")
            },
        },
        "processor_classes": {
            "image_processor": type(processor.image_processor).__name__,
            "tokenizer": type(tokenizer).__name__,
        },
        "tokenizer_check": tokenizer_check,
        "logit_scale": sig7(model.logit_scale.exp().item()),
        "texts": texts,
        "labels": LABELS,
        "label_embeddings": [sig7_list(e) for e in label_embeds],
        "images": images,
    }


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "Pillow": PIL.__version__,
        "numpy": np.__version__,
    }


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--open-clip-wheel", type=Path, required=True, help="open_clip_torch-3.3.0-py3-none-any.whl")
    args = parser.parse_args()
    torch.manual_seed(0)
    make_odd_images()
    write_json(HERE / "pixels.json", make_pixels())
    check = check_tokenizer(args.open_clip_wheel)
    for name in MODELS:
        write_json(HERE / f"{name}.json", make_model_reference(name, check))
    print("tokenizer check:", check)


if __name__ == "__main__":
    main()
