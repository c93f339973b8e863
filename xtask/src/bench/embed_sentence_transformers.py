"""The sentence-transformers side of `cargo xtask bench embed` (PyTorch CPU).

Prints one JSON object with the same fields as the Rust runners (tests/benches/common/
embed_runner.rs): cold load (model folder -> ready SentenceTransformer, its --loads
runs after one unmeasured run) and sentences per second of `encode` on the `short` and
`long` texts of --texts, one text per call (b1) and 32 per call (b32), each workload for
at least --min-seconds (at least one call), after one warm-up call of 32 short texts and
one of a long text.

With --rss, it is instead the Python equivalent of `dp embed --input FILE --json`: load the
model, embed the texts of --texts (a JSON array), print the embeddings as JSON -- for the
peak-memory row.
"""

import argparse
import json
import os
import sys
import time

# Never reach a hub: the model is a local folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def throughput(model, texts, batch, min_seconds):
    calls = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    done = 0
    start = time.perf_counter()
    while True:
        for call in calls:
            out = model.encode(call, batch_size=batch)
            assert len(out) == len(call)
            done += len(call)
            if time.perf_counter() - start >= min_seconds:
                return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loads", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--rss", action="store_true")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    with open(args.texts, encoding="utf-8") as f:
        texts = json.load(f)
    if args.rss:
        model = SentenceTransformer(args.model_dir, device="cpu")
        embeddings = model.encode(texts, batch_size=32)
        json.dump({"embeddings": embeddings.tolist()}, sys.stdout)
        print()
        return

    def load():
        start = time.perf_counter()
        model = SentenceTransformer(args.model_dir, device="cpu")
        return time.perf_counter() - start, model

    load()
    loads = [load()[0] for _ in range(max(args.loads, 1))]
    _, model = load()
    short, long = texts["short"], texts["long"]
    model.encode(short, batch_size=32)
    model.encode(long[:1], batch_size=1)
    figures = {
        "cold_load_all_s": loads,
        "short_b1": throughput(model, short, 1, args.min_seconds),
        "short_b32": throughput(model, short, 32, args.min_seconds),
        "long_b1": throughput(model, long, 1, args.min_seconds),
        "long_b32": throughput(model, long, 32, args.min_seconds),
        "threads": args.threads,
        "torch": torch.__version__,
    }
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
