"""Python anchor of `cargo xtask bench manager`.

Does per cached request what the pipeline's Python model manager does: take its
`asyncio.Lock`, look the model up in a dict, release the lock -- and, for the embedding
cache, the same under the lock with a key hashed from the model signature and the text.
Timed in-process (the median of several repeats of a tight loop, as the Rust runner) and
printed as JSON: nanoseconds per operation.
"""

import asyncio
import hashlib
import json
import statistics
import sys
import threading
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


def median_ns(coroutine, n: int, repeats: int) -> float:
    # The median of `repeats` timed loops, as the Rust runner reports.
    return statistics.median(asyncio.run(coroutine(n)) for _ in range(repeats)) / n * 1e9


def two_threads_ns(n: int, repeats: int) -> float:
    # Two threads, each with its own event loop and lock (a Python manager per thread):
    # aggregate nanoseconds per get, as the Rust runner's two threads on different models.
    def once() -> float:
        barrier = threading.Barrier(3)

        def worker() -> None:
            barrier.wait()
            asyncio.run(cached_gets(n))

        threads = [threading.Thread(target=worker) for _ in range(2)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        return (time.perf_counter() - start) / (2 * n)

    return statistics.median(once() for _ in range(repeats)) * 1e9


def main() -> None:
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    n_get = int(200_000 * scale) or 1
    result = {
        "python": sys.version.split()[0],
        "get_ns": median_ns(cached_gets, n_get, 5),
        "get_2threads_ns": two_threads_ns(n_get, 5),
        "embedding_hit_ns_per_text": median_ns(cached_embeddings, int(5_000 * scale) or 1, 5),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
