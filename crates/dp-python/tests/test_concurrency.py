"""One manager shared by Python threads, and atask under asyncio: the GIL is released
while models run, and results are the same as one call at a time."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

import dp_models
from conftest import CATALOG, MODELS, asset

TEXTS = [f"sentence number {i} about threads" for i in range(16)]


def fresh(verify_cache) -> dp_models.ModelManager:
    """A manager without embedding cache: every call runs the model."""
    asset("models/all-minilm-l6-v2")
    return dp_models.ModelManager(catalog=CATALOG, models_root=MODELS,
                                  verify_cache=verify_cache, embedding_cache=False)


def test_eight_threads_share_one_manager(verify_cache):
    m = fresh(verify_cache)
    results, errors = {}, []
    barrier = threading.Barrier(8)

    def work(i):
        try:
            barrier.wait()
            for _ in range(3):
                r = m.task(TEXTS[i:] + TEXTS[:i], "embedding", "all-minilm-l6-v2")
                results.setdefault(i, []).append(r.embeddings)
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # Loaded once, whichever thread asked first, though all eight asked together.
    assert m.get_model_status()["totals"]["loads"] == 1
    expected = m.task(TEXTS, "embedding", "all-minilm-l6-v2").embeddings
    assert sorted(results) == list(range(8))
    for i, runs in results.items():
        assert len(runs) == 3
        for emb in runs:
            assert np.array_equal(emb, np.roll(expected, -i, axis=0))


def test_the_gil_is_released_while_a_model_runs(verify_cache):
    m = fresh(verify_cache)
    m.preload("all-minilm-l6-v2")
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: (m.task(TEXTS * 8, "embedding", "all-minilm-l6-v2"), done.set())
    )
    ticks = 0
    started = time.perf_counter()
    worker.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    worker.join()
    elapsed = time.perf_counter() - started
    if elapsed < 0.05:
        pytest.fail(f"the task took {elapsed:.3f} s, too short to tell; use more texts")
    # Had the worker held the GIL while the model ran, this thread could not have run.
    assert ticks >= 10, (ticks, elapsed)


def test_atask_does_not_block_the_event_loop(verify_cache):
    m = fresh(verify_cache)
    expected = m.task(TEXTS, "embedding", "all-minilm-l6-v2").embeddings

    async def main():
        beats = 0
        stop = asyncio.Event()

        async def heartbeat():
            nonlocal beats
            while not stop.is_set():
                beats += 1
                await asyncio.sleep(0.001)

        hb = asyncio.create_task(heartbeat())
        results = await asyncio.gather(*(
            m.atask(task_data=TEXTS * 4, task_type="embedding",
                    model_name="all-minilm-l6-v2", keep_alive=30)
            for _ in range(4)
        ))
        stop.set()
        await hb
        return results, beats

    results, beats = asyncio.run(main())
    assert len(results) == 4
    for r in results:
        assert isinstance(r, dp_models.TaskResult)
        assert np.array_equal(r.embeddings, np.concatenate([expected] * 4))
    assert beats >= 10  # the loop kept running while the tasks ran


def test_atask_raises_model_errors(verify_cache):
    m = fresh(verify_cache)

    async def main():
        await m.atask(["x"], "embedding", "no-such-model")

    with pytest.raises(dp_models.ModelNotFound) as info:
        asyncio.run(main())
    assert info.value.model == "no-such-model"


def test_a_cancelled_atask_leaves_the_queue_and_runs_nothing(verify_cache):
    m = fresh(verify_cache)
    m.preload("all-minilm-l6-v2")
    big = TEXTS * 64  # one request: one long call of 1024 texts that the next one queues behind

    def queue():
        (status,) = m.get_model_status()["batching"] or [None]
        return status

    async def main():
        first = asyncio.create_task(m.atask(big, "embedding", "all-minilm-l6-v2"))
        while queue() is None or queue()["busy_workers"] == 0:
            await asyncio.sleep(0.001)
        queued = asyncio.create_task(m.atask(["a caller that leaves"], "embedding",
                                             "all-minilm-l6-v2"))
        while queue()["queued_texts"] == 0:
            await asyncio.sleep(0.001)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        # Out of the queue at once, while the first call still runs.
        deadline = time.perf_counter() + 5
        while queue()["queued_texts"] and time.perf_counter() < deadline:
            await asyncio.sleep(0.001)
        during = queue()
        return await first, during

    result, during = asyncio.run(main())
    assert result.embeddings.shape == (1024, 384)
    assert (during["queued_texts"], during["cancelled"]) == (0, 1)
    assert during["busy_workers"] == 1, "the first call was still running"
    after = m.get_model_status()["batching"][0]
    # Only the first request's texts ever ran.
    assert (after["texts"], after["cancelled"]) == (1024, 1)


def test_a_cancel_token_given_up_before_the_task_raises_cancelled(verify_cache):
    m = fresh(verify_cache)
    token = dp_models.CancelToken()
    assert not token.cancelled
    token.cancel()
    assert token.cancelled
    with pytest.raises(dp_models.Cancelled) as info:
        m.task(["x"], "embedding", "all-minilm-l6-v2", cancel=token)
    assert info.value.error_code == "cancelled"
    # Nothing was loaded for it.
    assert m.get_model_status()["totals"]["loads"] == 0


def test_num_workers_is_a_task_option(verify_cache):
    m = fresh(verify_cache)
    expected = m.task(TEXTS, "embedding", "all-minilm-l6-v2").embeddings
    got = m.task(TEXTS, "embedding", "all-minilm-l6-v2", num_workers=2).embeddings
    assert np.array_equal(got, expected)
    (queue,) = m.get_model_status()["batching"]
    assert queue["workers"] == 2
    with pytest.raises(dp_models.InvalidInput):
        m.task(TEXTS, "embedding", "all-minilm-l6-v2", num_workers=0)
