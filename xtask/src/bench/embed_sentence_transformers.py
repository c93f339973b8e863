"""The sentence-transformers side of `cargo xtask bench embed` (PyTorch CPU).

Prints one JSON object with the same fields as the candle runner (tests/benches/
embed_candle.rs): cold load (model folder -> ready SentenceTransformer, median of --loads
runs after one unmeasured warm-up) and throughput on batches of the given sentences.
"""

import argparse
import json
import os
import statistics
import sys
import time

# Never reach a hub: the model is a local folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--sentences", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loads", type=int, default=10)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from sentence_transformers import SentenceTransformer

    def load():
        start = time.perf_counter()
        model = SentenceTransformer(args.model_dir, device="cpu")
        return time.perf_counter() - start, model

    load()
    loads = [load()[0] for _ in range(args.loads)]
    _, model = load()
    with open(args.sentences, encoding="utf-8") as f:
        sentences = json.load(f)
    for _ in range(2):
        model.encode(sentences, batch_size=len(sentences))
    start = time.perf_counter()
    for _ in range(args.batches):
        out = model.encode(sentences, batch_size=len(sentences))
        assert len(out) == len(sentences)
    seconds = time.perf_counter() - start
    json.dump(
        {
            "cold_load_median_s": statistics.median(loads),
            "cold_load_s": loads,
            "sentences_per_s": args.batches * len(sentences) / seconds,
            "batch": len(sentences),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
