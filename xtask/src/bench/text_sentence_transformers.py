"""The sentence-transformers side of `cargo xtask bench text` (also run by `cargo xtask
bench embed`), on PyTorch CPU.

Prints one JSON object with the same fields as the Rust runners (tests/benches/common/
text_runner.rs):

- --task embed: `SentenceTransformer(MODEL_DIR).encode(texts, batch_size=32,
  prompt_name=PROMPT)` on the `texts` of --inputs (one call of 32 short texts);
- --task rerank: `CrossEncoder(MODEL_DIR).predict([(query, document), ...], batch_size=32)`
  on its `query` and `documents` (one call of 32 pairs; the model's own activation);

after one warm-up call, calls run for at least --min-seconds and --min-calls; `per_s` is
texts (or pairs) per second over them, `probe` the output of the warm-up call (the first
embedding, or every score).
"""

import argparse
import json
import os
import sys
import time

# Never reach a hub: the model is a local folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


def rate(call, min_seconds, min_calls):
    done = calls = 0
    start = time.perf_counter()
    while calls < max(min_calls, 1) or time.perf_counter() - start < min_seconds:
        done += call()
        calls += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--task", choices=["embed", "rerank"], required=True)
    parser.add_argument("--prompt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--min-calls", type=int, default=3)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import sentence_transformers
    from sentence_transformers import CrossEncoder, SentenceTransformer

    with open(args.inputs, encoding="utf-8") as f:
        inputs = json.load(f)
    if args.task == "embed":
        model = SentenceTransformer(args.model_dir, device="cpu")
        texts = inputs["texts"]

        def call():
            out = model.encode(texts, batch_size=len(texts), prompt_name=args.prompt)
            assert len(out) == len(texts)
            return len(texts)

        probe = model.encode(texts, batch_size=len(texts), prompt_name=args.prompt)[0]
    else:
        model = CrossEncoder(args.model_dir, device="cpu")
        pairs = [(inputs["query"], document) for document in inputs["documents"]]

        def call():
            out = model.predict(pairs, batch_size=len(pairs))
            assert len(out) == len(pairs)
            return len(pairs)

        probe = model.predict(pairs, batch_size=len(pairs))
    figures = {
        "per_s": rate(call, args.min_seconds, args.min_calls),
        "probe": [float(v) for v in probe],
        "threads": args.threads,
        "torch": torch.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
    json.dump(figures, sys.stdout)
    print()


if __name__ == "__main__":
    main()
