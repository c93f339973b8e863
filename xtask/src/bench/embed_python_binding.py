"""The Python side of `cargo xtask bench embed`: the `dp_models` wheel (release build) and its
cold start, against sentence-transformers' cold start.

Prints one JSON object:
- `short_b32`: sentences per second of `ModelManager.task(texts, "embedding", MODEL)` on
  the `short` texts of --texts, 32 per call, embedding cache off, for at least --min-seconds
  after as long a warm-up of the same calls (the same workload as the Rust runners'
  `short_b32`, which those measure after their own warm-up calls and the `short_b1` workload:
  with one warm-up call only, the first half second after it scattered from 0.73x to 1.0x
  of the Rust figure on the same machine);
- `cold_s`: --cold-runs samples of a fresh interpreter doing `import dp_models`, building a
  manager and embedding one text (wall clock of the whole process, after one unmeasured run);
- `st_cold_s`: the same for `import sentence_transformers`, loading the model folder and
  encoding one text, run with --st-python.

Run with the Python of a venv where the wheel is installed.
"""

import argparse
import json
import os
import subprocess
import sys
import time

COLD_DP = """
import dp_models
m = dp_models.ModelManager(catalog={catalog!r}, models_root={models_root!r})
out = m.task(["A man is eating food."], "embedding", {model!r})
assert out.embeddings.shape[0] == 1
"""

COLD_ST = """
import os
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
torch.set_num_threads({threads})
from sentence_transformers import SentenceTransformer
m = SentenceTransformer({model_dir!r}, device="cpu")
assert m.encode(["A man is eating food."]).shape[0] == 1
"""


def cold(python, code, runs, env):
    """Wall-clock seconds of `runs` fresh processes running `code`, after one unmeasured."""
    samples = []
    for i in range(runs + 1):
        start = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, env=env)
        if i > 0:
            samples.append(time.perf_counter() - start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--catalog", required=True)
    parser.add_argument("--models-root", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--min-seconds", type=float, default=0.5)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--st-python", required=True)
    parser.add_argument("--st-model-dir", required=True)
    args = parser.parse_args()

    import dp_models

    with open(args.texts, encoding="utf-8") as f:
        short = json.load(f)["short"]
    manager = dp_models.ModelManager(
        catalog=args.catalog, models_root=args.models_root, embedding_cache=False
    )
    calls = [short[i : i + 32] for i in range(0, len(short), 32)]

    def embed_for(seconds):
        done = 0
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            for call in calls:
                out = manager.task(call, "embedding", args.model)
                done += out.embeddings.shape[0]
        return done / (time.perf_counter() - start)

    embed_for(args.min_seconds)
    rate = embed_for(args.min_seconds)

    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    dp_cold = cold(
        sys.executable,
        COLD_DP.format(catalog=args.catalog, models_root=args.models_root, model=args.model),
        args.cold_runs,
        env,
    )
    st_cold = cold(
        args.st_python,
        COLD_ST.format(threads=args.threads, model_dir=args.st_model_dir),
        args.cold_runs,
        env,
    )
    print(json.dumps({"short_b32": rate, "cold_s": dp_cold, "st_cold_s": st_cold}))


if __name__ == "__main__":
    main()
