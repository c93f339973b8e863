"""The Python ONNX Runtime side of `cargo xtask bench embed`: the same model.onnx, the same
threads, the same tokenizer.json, mean pooling and L2 normalization in numpy.

Runs in .dp-assets/venv-onnx (xtask/requirements/python-onnx.txt). Prints one JSON object
with the fields of the Rust runners: cold load (folder -> tokenizer and session ready,
median of --loads runs after one unmeasured warm-up) and throughput on batches.
"""

import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    def load():
        start = time.perf_counter()
        tokenizer = Tokenizer.from_file(f"{args.model_dir}/tokenizer.json")
        tokenizer.enable_truncation(args.max_length)
        tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(f"{args.model_dir}/model.onnx", options, providers=["CPUExecutionProvider"])
        return time.perf_counter() - start, tokenizer, session

    load()
    loads = [load()[0] for _ in range(args.loads)]
    _, tokenizer, session = load()
    with open(args.sentences, encoding="utf-8") as f:
        sentences = json.load(f)

    def embed():
        encodings = tokenizer.encode_batch(sentences)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    for _ in range(2):
        embed()
    start = time.perf_counter()
    for _ in range(args.batches):
        out = embed()
        assert out.shape[0] == len(sentences)
    seconds = time.perf_counter() - start
    json.dump(
        {
            "cold_load_median_s": statistics.median(loads),
            "cold_load_s": loads,
            "sentences_per_s": args.batches * len(sentences) / seconds,
            "batch": len(sentences),
            "threads": args.threads,
            "onnxruntime": ort.__version__,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
