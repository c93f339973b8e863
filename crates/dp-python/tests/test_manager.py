"""The manager's other methods: preload, release, status, resolve, health, the embedding
cache."""

from __future__ import annotations

import pytest

import dp_models
from conftest import CATALOG, MODELS, asset


def test_preload_release_and_status(verify_cache):
    asset("models/all-minilm-l6-v2")
    m = dp_models.ModelManager(catalog=CATALOG, models_root=MODELS, verify_cache=verify_cache)
    assert m.release_model("all-minilm-l6-v2") is False  # not loaded yet
    m.preload("all-minilm-l6-v2", keep_alive=30)
    status = m.get_model_status()
    loaded = [s for s in status["models"] if s["state"] in ("idle", "in_use")]
    assert len(loaded) == 1 and loaded[0]["model_name"] == "all-minilm-l6-v2"
    assert loaded[0]["state"] == "idle" and loaded[0]["keep_alive"] == 30.0
    assert loaded[0]["provider"] == "candle" and loaded[0]["refcount"] == 0
    assert status["totals"]["loads"] == 1
    assert status["totals"]["loaded"] == 1
    assert m.release_model("all-minilm-l6-v2") is True
    assert m.get_model_status()["totals"]["loaded"] == 0
    assert m.release_model("no-such-model") is False


def test_embedding_cache_counts_hits_and_can_be_off(verify_cache):
    asset("models/all-minilm-l6-v2")
    m = dp_models.ModelManager(catalog=CATALOG, models_root=MODELS, verify_cache=verify_cache)
    first = m.task(["a", "b"], "embedding", "all-minilm-l6-v2")
    second = m.task(["a", "b"], "embedding", "all-minilm-l6-v2")
    assert (first.embeddings == second.embeddings).all()
    cache = m.get_model_status()["embedding_cache"]
    assert cache["enabled"] and cache["hits"] == 2 and cache["misses"] == 2
    off = dp_models.ModelManager(
        catalog=CATALOG, models_root=MODELS, verify_cache=verify_cache, embedding_cache=False
    )
    off.task(["a"], "embedding", "all-minilm-l6-v2")
    assert off.get_model_status()["embedding_cache"]["enabled"] is False
    small = dp_models.ModelManager(
        catalog=CATALOG, models_root=MODELS, verify_cache=verify_cache,
        embedding_cache={"max_entries": 7, "ttl_s": 60},
    )
    assert small.get_model_status()["embedding_cache"]["max_entries"] == 7


def test_clear_embedding_cache_makes_texts_miss_again(manager):
    manager.task(["cleared text"], "embedding", "all-minilm-l6-v2")
    before = manager.get_model_status()["embedding_cache"]
    manager.task(["cleared text"], "embedding", "all-minilm-l6-v2")
    assert manager.get_model_status()["embedding_cache"]["hits"] == before["hits"] + 1
    manager.clear_embedding_cache()
    manager.task(["cleared text"], "embedding", "all-minilm-l6-v2")
    after = manager.get_model_status()["embedding_cache"]
    assert after["misses"] == before["misses"] + 1
    assert after["hits"] == before["hits"] + 1


def test_resolve_by_name_and_by_role(manager):
    by_name = manager.resolve("all-minilm-l6-v2")
    assert by_name["request"] == "all-minilm-l6-v2" and "reason" not in by_name
    entry = by_name["models_used"][0]
    assert entry["model_name"] == "all-minilm-l6-v2"
    assert entry["model_signature"].startswith("dp2:")
    by_role = manager.resolve(role="text_embedding", capabilities=["embedding"])
    assert by_role["request"] == "role:text_embedding"
    assert by_role["reason"] == "catalog_order"
    preferred = manager.resolve("all-minilm-l6-v2", role="text_embedding")
    assert preferred["reason"] == "preferred"
    assert preferred["models_used"][0]["model_name"] == "all-minilm-l6-v2"


def test_health_reports_every_model(manager):
    report = manager.health()
    names = {m["model_name"] for m in report["models"]}
    assert {"all-minilm-l6-v2", "tiny-reranker"} <= names
    minilm = next(m for m in report["models"] if m["model_name"] == "all-minilm-l6-v2")
    assert minilm["ready"] is True and minilm["artifacts_present"] is True
    assert "tier0" in report


def test_overrides_and_profiles_are_layered(verify_cache):
    asset("models/all-minilm-l6-v2")
    m = dp_models.ModelManager(
        catalog=CATALOG, models_root=MODELS, verify_cache=verify_cache,
        overrides={"all-minilm-l6-v2.tier": 0},
        profiles=[CATALOG.parent / "profiles" / "cpu-only.yaml"],
    )
    tiers = {x["model_name"]: x["tier"] for x in m.health()["models"]}
    assert tiers["all-minilm-l6-v2"] == 0
    listed = dp_models.ModelManager(
        catalog=CATALOG, models_root=MODELS, verify_cache=verify_cache,
        overrides=["all-minilm-l6-v2.tier=1"],
    )
    tiers = {x["model_name"]: x["tier"] for x in listed.health()["models"]}
    assert tiers["all-minilm-l6-v2"] == 1
