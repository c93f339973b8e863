"""Python anchor of `cargo xtask bench manager`.

Does per cached request what the pipeline's Python model manager does: take its
`asyncio.Lock`, look the model up in a dict, release the lock -- and, for the embedding
cache, the same under the lock with a key hashed from the model signature and the text.
Timed in-process (timeit-style: best of several repeats of a tight loop) and printed as
JSON: nanoseconds per operation.
"""

import asyncio
import hashlib
import json
import sys
import time

MODELS = {"all-minilm-l6-v2": object(), "bge-small-en-v1.5": object()}
SIGNATURE = "dp1:model_name=all-minilm-l6-v2;model_version=1.0.0;" + "x" * 300
TEXTS = [f"sentence number {i} of the benchmark, about a cat on a mat" for i in range(32)]


async def cached_gets(n: int) -> float:
    lock = asyncio.Lock()
    models = MODELS
    start = time.perf_counter()
    for _ in range(n):
        async with lock:
            model = models.get("all-minilm-l6-v2")
    elapsed = time.perf_counter() - start
    assert model is not None
    return elapsed


async def cached_embeddings(n: int) -> float:
    lock = asyncio.Lock()
    cache = {}
    for text in TEXTS:
        key = hashlib.sha256((SIGNATURE + "\0" + text).encode()).digest()[:16]
        cache[key] = [0.5] * 384
    start = time.perf_counter()
    for _ in range(n):
        out = []
        async with lock:
            for text in TEXTS:
                key = hashlib.sha256((SIGNATURE + "\0" + text).encode()).digest()[:16]
                out.append(list(cache[key]))
    elapsed = time.perf_counter() - start
    assert len(out) == len(TEXTS)
    return elapsed / len(TEXTS)


def best_ns(coroutine, n: int, repeats: int) -> float:
    # Best of `repeats` (timeit's rule: the minimum is the least disturbed run).
    return min(asyncio.run(coroutine(n)) for _ in range(repeats)) / n * 1e9


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    result = {
        "python": sys.version.split()[0],
        "get_ns": best_ns(cached_gets, int(200_000 * scale) or 1, 7),
        "embedding_hit_ns_per_text": best_ns(cached_embeddings, int(5_000 * scale) or 1, 7),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
