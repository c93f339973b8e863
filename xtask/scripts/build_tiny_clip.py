"""Builds the tiny random-weight CLIP test models in the Hugging Face layout, without PyTorch.

Run by `cargo xtask setup` (asset `tiny-clip`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt (only numpy and the standard library are used):

    python build_tiny_clip.py BPE_GZ OUT_DIR

BPE_GZ is `open_clip/bpe_simple_vocab_16e6.txt.gz` from the pinned `open_clip_torch` wheel: the
merges of the real CLIP BPE tokenizer. OUT_DIR receives one folder per model of MODELS below
(`tiny-clip`, `tiny-clip-wide`), each with:

- `config.json`: a Hugging Face `CLIPConfig` (`CLIPModel`, quick_gelu, the openai token ids:
  text_config.eos_token_id 2 makes transformers pool the text at `input_ids.argmax(-1)`, the
  position of `<|endoftext|>`, the largest id, as the original CLIP does);
- `model.safetensors`: every parameter of `CLIPModel` under its Hugging Face name, float32,
  deterministic random values from numpy's `default_rng(seed)`;
- `preprocessor_config.json`: a `CLIPImageProcessor` config (bicubic resize of the shortest
  edge to image_size, centre crop, OpenAI mean and std);
- `tokenizer.json`, `tokenizer_config.json`: the real CLIP BPE
  tokenizer, as transformers 5.17's `CLIPTokenizerFast(vocab=..., merges=...).save_pretrained`
  writes it (tests/data/reference/clip/make_reference.py checks that both tokenize alike).

Every file is byte-deterministic, so `xtask/src/setup/clip.rs` pins their sha256.

The same generator also writes full-size random-weight models of FULL_SIZE below, on request
only (`cargo xtask bench clip` makes `clip-vit-b32-random`, the shapes of
openai/clip-vit-base-patch32, to time the real architecture; setup never builds them):

    python build_tiny_clip.py --model clip-vit-b32-random --tokenizer-from TINY_CLIP_DIR OUT_DIR

which writes OUT_DIR/clip-vit-b32-random with the files above, its tokenizer files copied
from TINY_CLIP_DIR (a folder this script wrote: the tokenizer is the same in every model).
"""

import gzip
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

VOCAB_SIZE = 49408
MAX_POSITIONS = 77

# Two differently shaped models, so that nothing can hard-code one shape.
MODELS = {
    "tiny-clip": {
        "seed": 20261202,
        "projection_dim": 24,
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
        "vision": {
            "hidden_size": 32,
            "intermediate_size": 80,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": 32,
            "patch_size": 8,
        },
    },
    "tiny-clip-wide": {
        "seed": 20261203,
        "projection_dim": 40,
        "text": {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 3},
        "vision": {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": 48,
            "patch_size": 16,
        },
    },
}

# Full-size models, built only when asked for by name (not by setup: their outputs are not
# pinned, and nothing in CI pays for them). The shapes of openai/clip-vit-base-patch32.
FULL_SIZE = {
    "clip-vit-b32-random": {
        "seed": 20261204,
        "projection_dim": 512,
        "text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12, "num_attention_heads": 8},
        "vision": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
    },
}


def clip_config(spec: dict) -> dict:
    """The config.json of a model, in the layout of openai/clip-vit-base-patch32's."""
    dim = spec["projection_dim"]
    text = {
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "dropout": 0.0,
        "eos_token_id": 2,
        "hidden_act": "quick_gelu",
        "hidden_size": spec["text"]["hidden_size"],
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": spec["text"]["intermediate_size"],
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": MAX_POSITIONS,
        "model_type": "clip_text_model",
        "num_attention_heads": spec["text"]["num_attention_heads"],
        "num_hidden_layers": spec["text"]["num_hidden_layers"],
        "pad_token_id": 1,
        "projection_dim": dim,
        "vocab_size": VOCAB_SIZE,
    }
    vision = {
        "attention_dropout": 0.0,
        "dropout": 0.0,
        "hidden_act": "quick_gelu",
        "hidden_size": spec["vision"]["hidden_size"],
        "image_size": spec["vision"]["image_size"],
        "initializer_factor": 1.0,
        "initializer_range": 0.02,
        "intermediate_size": spec["vision"]["intermediate_size"],
        "layer_norm_eps": 1e-05,
        "model_type": "clip_vision_model",
        "num_attention_heads": spec["vision"]["num_attention_heads"],
        "num_channels": 3,
        "num_hidden_layers": spec["vision"]["num_hidden_layers"],
        "patch_size": spec["vision"]["patch_size"],
        "projection_dim": dim,
    }
    return {
        "architectures": ["CLIPModel"],
        "dtype": "float32",
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": dim,
        "text_config": text,
        "vision_config": vision,
    }


def preprocessor_config(image_size: int) -> dict:
    return {
        "crop_size": {"height": image_size, "width": image_size},
        "do_center_crop": True,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": OPENAI_CLIP_MEAN,
        "image_processor_type": "CLIPImageProcessor",
        "image_std": OPENAI_CLIP_STD,
        "processor_class": "CLIPProcessor",
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"shortest_edge": image_size},
    }


class Init:
    """Deterministic random parameters, drawn in the order they are requested."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}

    def normal(self, name: str, shape: tuple, std: float, mean: float = 0.0) -> None:
        self.tensors[name] = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)

    def linear(self, name: str, out_dim: int, in_dim: int, bias: bool = True) -> None:
        self.normal(f"{name}.weight", (out_dim, in_dim), 1.0 / math.sqrt(in_dim))
        if bias:
            self.normal(f"{name}.bias", (out_dim,), 0.02)

    def layer_norm(self, name: str, dim: int) -> None:
        self.normal(f"{name}.weight", (dim,), 0.05, mean=1.0)
        self.normal(f"{name}.bias", (dim,), 0.02)

    def encoder(self, prefix: str, hidden: int, intermediate: int, layers: int) -> None:
        for i in range(layers):
            p = f"{prefix}.encoder.layers.{i}"
            for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
                self.linear(f"{p}.self_attn.{proj}", hidden, hidden)
            self.layer_norm(f"{p}.layer_norm1", hidden)
            self.linear(f"{p}.mlp.fc1", intermediate, hidden)
            self.linear(f"{p}.mlp.fc2", hidden, intermediate)
            self.layer_norm(f"{p}.layer_norm2", hidden)


def clip_weights(spec: dict) -> dict:
    """Every parameter of Hugging Face's CLIPModel for `spec`."""
    init = Init(spec["seed"])
    dim = spec["projection_dim"]
    t, v = spec["text"], spec["vision"]
    ht, hv = t["hidden_size"], v["hidden_size"]

    init.normal("text_model.embeddings.token_embedding.weight", (VOCAB_SIZE, ht), 0.02)
    init.normal("text_model.embeddings.position_embedding.weight", (MAX_POSITIONS, ht), 0.01)
    init.encoder("text_model", ht, t["intermediate_size"], t["num_hidden_layers"])
    init.layer_norm("text_model.final_layer_norm", ht)

    patch = v["patch_size"]
    patches = (v["image_size"] // patch) ** 2
    init.normal("vision_model.embeddings.class_embedding", (hv,), 0.02)
    init.normal("vision_model.embeddings.patch_embedding.weight", (hv, 3, patch, patch), 1.0 / math.sqrt(3 * patch * patch))
    init.normal("vision_model.embeddings.position_embedding.weight", (patches + 1, hv), 0.02)
    init.layer_norm("vision_model.pre_layrnorm", hv)
    init.encoder("vision_model", hv, v["intermediate_size"], v["num_hidden_layers"])
    init.layer_norm("vision_model.post_layernorm", hv)

    init.linear("visual_projection", dim, hv, bias=False)
    init.linear("text_projection", dim, ht, bias=False)
    init.tensors["logit_scale"] = np.array(math.log(1 / 0.07), dtype=np.float32)
    return init.tensors


def safetensors_bytes(tensors: dict) -> bytes:
    """The safetensors encoding: u64 header length, JSON header (names sorted, padded with spaces
    to 8 bytes), then the little-endian data in header order."""
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        array = np.asarray(tensors[name], dtype="<f4")  # keeps 0-d logit_scale 0-d
        data = array.tobytes(order="C")
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def bytes_to_unicode() -> dict:
    """GPT-2's reversible byte-to-character map, which CLIP's BPE uses too."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_vocab_and_merges(bpe_gz: Path) -> tuple:
    """CLIP's vocabulary and merges, as open_clip's SimpleTokenizer builds them."""
    lines = gzip.decompress(bpe_gz.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != VOCAB_SIZE:
        raise SystemExit(f"{bpe_gz}: the vocabulary has {len(tokens)} tokens, expected {VOCAB_SIZE}")
    return {tok: i for i, tok in enumerate(tokens)}, merges


def added_token(content: str, id_: int) -> dict:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def tokenizer_json(vocab: dict, merges: list) -> dict:
    """The tokenizer.json transformers' CLIP converter writes (same keys, same order)."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token("<|startoftext|>", 49406), added_token("<|endoftext|>", 49407)],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"},
            ],
        },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {
                        "Regex": "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"
                    },
                    "behavior": "Removed",
                    "invert": True,
                },
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
            ],
        },
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": ["<|endoftext|>", 49407],
            "cls": ["<|startoftext|>", 49406],
            "trim_offsets": False,
            "add_prefix_space": False,
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<|endoftext|>",
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [list(m) for m in merges],
        },
    }


def write_json(path: Path, value: dict, newline: str = "\n") -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + newline, encoding="utf-8")


def write_model(folder: Path, spec: dict) -> None:
    """config.json, preprocessor_config.json and model.safetensors of `spec` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", clip_config(spec))
    write_json(folder / "preprocessor_config.json", preprocessor_config(spec["vision"]["image_size"]))
    (folder / "model.safetensors").write_bytes(safetensors_bytes(clip_weights(spec)))


def main_full_size(args: list) -> None:
    """`--model NAME --tokenizer-from DIR OUT_DIR`: one model of FULL_SIZE."""
    usage = "usage: build_tiny_clip.py --model NAME --tokenizer-from TINY_CLIP_DIR OUT_DIR"
    if len(args) != 5 or args[0] != "--model" or args[2] != "--tokenizer-from":
        raise SystemExit(usage)
    name, tokenizer_dir, out = args[1], Path(args[3]), Path(args[4])
    if name not in FULL_SIZE:
        raise SystemExit(f"unknown model {name!r} (known: {', '.join(FULL_SIZE)})")
    folder = out / name
    write_model(folder, FULL_SIZE[name])
    for file in ("tokenizer.json", "tokenizer_config.json"):
        (folder / file).write_bytes((tokenizer_dir / file).read_bytes())


def main() -> None:
    if sys.argv[1:2] == ["--model"]:
        main_full_size(sys.argv[1:])
        return
    if len(sys.argv) != 3:
        raise SystemExit("usage: build_tiny_clip.py BPE_GZ OUT_DIR")
    bpe_gz, out = Path(sys.argv[1]), Path(sys.argv[2])
    vocab, merges = clip_vocab_and_merges(bpe_gz)
    for name, spec in MODELS.items():
        folder = out / name
        write_model(folder, spec)
        # No final newline: byte for byte what save_pretrained writes.
        write_json(folder / "tokenizer.json", tokenizer_json(vocab, merges), newline="")
        write_json(folder / "tokenizer_config.json", TOKENIZER_CONFIG)


# What transformers 5.17's save_pretrained writes beside tokenizer.json, except model_max_length:
# 77 as in openai/clip-vit-base-patch32's tokenizer_config.json (save_pretrained writes its
# "no limit" default when the tokenizer is built from a vocabulary).
TOKENIZER_CONFIG = {
    "backend": "tokenizers",
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "model_max_length": MAX_POSITIONS,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": "<|endoftext|>",
}

if __name__ == "__main__":
    main()
