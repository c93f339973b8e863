"""Checks the ONNX graphs `cargo xtask setup` builds against the references of this folder,
without PyTorch: tokenizer.json read by the `tokenizers` library, the graph run by ONNX Runtime,
pooling and normalization in numpy, as a Rust implementation would do it.

Run it from the repository root in the ONNX venv of setup (onnxruntime, tokenizers, numpy):

    .dp-assets/venv-onnx/bin/python tests/data/reference/text/check_onnx.py

For each embedder (.dp-assets/models/<name>-onnx): every text of <name>.json, with each prompt,
tokenized alone (prompt + text, truncated to max_seq_length, no padding) must give the recorded
token ids; the whole batch, padded, through model.onnx, pooled (mean over attention_mask, or
the first token) and L2-normalized, must match the recorded embeddings within 1e-5. For each
reranker: every (query, document) pair, truncated longest-first to max_length, must give the
recorded ids, and model.onnx's `logits` must match the recorded logits within 1e-5.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
MODELS_DIR = ROOT / ".dp-assets" / "models"
TOLERANCE = 1e-5


def load(folder: Path, max_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    # MiniLM's tokenizer.json carries padding to 128 and truncation at 128: the model's own
    # limit wins, and a batch is padded here.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
    return tokenizer


def run(session: ort.InferenceSession, encodings: list, pad_id: int) -> tuple:
    width = max(len(e.ids) for e in encodings)
    ids = np.full((len(encodings), width), pad_id, np.int64)
    mask = np.zeros_like(ids)
    types = np.zeros_like(ids)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = 1
        types[row, : len(e.ids)] = e.type_ids
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: feeds[n] for n in names})[0], mask


def recorded_ids(tokens: dict, encoding) -> bool:
    if tokens["input_ids"] != encoding.ids:
        return False
    return "token_type_ids" not in tokens or tokens["token_type_ids"] == encoding.type_ids


def check_embedder(name: str, ref: dict) -> float:
    folder = MODELS_DIR / f"{name}-onnx"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tokenizer = load(folder, ref["max_seq_length"])
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    worst = 0.0
    for key, out in ref["outputs"].items():
        encodings = tokenizer.encode_batch([out["prompt"] + t for t in ref["texts"]])
        for text, tokens, e in zip(ref["texts"], out["token_ids"], encodings):
            if not recorded_ids(tokens, e):
                raise SystemExit(f"{name} [{key}] {text!r}: ids {e.ids} differ from the recorded {tokens['input_ids']}")
        hidden, mask = run(session, encodings, config["pad_token_id"])
        if ref["pooling"] == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        worst = max(worst, float(np.abs(pooled - np.array(out["embeddings"], np.float32)).max()))
    return worst


def check_reranker(name: str, ref: dict) -> float:
    folder = MODELS_DIR / f"{name}-onnx"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    tokenizer = load(folder, ref["max_length"])
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    encodings = tokenizer.encode_batch([(ref["query"], d) for d in ref["documents"]])
    for doc, tokens, e in zip(ref["documents"], ref["pair_token_ids"], encodings):
        if not recorded_ids(tokens, e):
            raise SystemExit(f"{name} {doc[:30]!r}: ids {e.ids} differ from the recorded {tokens['input_ids']}")
    logits, _ = run(session, encodings, config["pad_token_id"])
    return float(np.abs(logits[:, 0] - np.array(ref["logits"], np.float32)).max())


def main() -> None:
    failed = False
    for path in sorted(HERE.glob("*.json")):
        ref = json.loads(path.read_text(encoding="utf-8"))
        check = check_embedder if ref["kind"] == "embedding" else check_reranker
        worst = check(ref["model"], ref)
        ok = worst < TOLERANCE
        failed |= not ok
        print(f"{ref['model']}: token ids as recorded; max abs difference {worst:.3g} ({'ok' if ok else 'FAILED'})")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
