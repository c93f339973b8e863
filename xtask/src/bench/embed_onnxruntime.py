"""The Python ONNX Runtime side of `cargo xtask bench embed`: the same model.onnx, the same
threads, the same tokenizer.json (truncation to --max-length, padding to the longest of the
call), mean pooling and L2 normalization in numpy -- what the manager's preset does.

Runs in .dp-assets/venv-onnx (xtask/requirements/python-onnx.txt). Prints one JSON object
with the fields of the Rust runners: cold load (folder -> tokenizer and session ready,
its --loads runs after one unmeasured run) and sentences per second on the `short`
and `long` texts of --texts, one text per call (b1) and 32 per call (b32), each workload
for at least --min-seconds (at least one call), after one warm-up call of 32 short texts
and one of a long text.
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
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
    loads = [load()[0] for _ in range(max(args.loads, 1))]
    _, tokenizer, session = load()
    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)

    def embed(batch):
        encodings = tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        (hidden,) = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})
        m = mask[..., None].astype(np.float32)
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def throughput(items, batch):
        calls = [items[i : i + batch] for i in range(0, len(items), batch)]
        done = 0
        start = time.perf_counter()
        while True:
            for call in calls:
                out = embed(call)
                assert out.shape[0] == len(call)
                done += len(call)
                if time.perf_counter() - start >= args.min_seconds:
                    return done / (time.perf_counter() - start)

    short, long = texts["short"], texts["long"]
    embed(short)
    embed(long[:1])
    json.dump(
        {
            "cold_load_all_s": loads,
            "short_b1": throughput(short, 1),
            "short_b32": throughput(short, 32),
            "long_b1": throughput(long, 1),
            "long_b32": throughput(long, 32),
            "threads": args.threads,
            "onnxruntime": ort.__version__,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
