"""Every stable error code reaches Python as its own ModelError subclass, with
.error_code, .message, .model and .details."""

from __future__ import annotations

from pathlib import Path

import pytest

import dp_models
from conftest import CATALOG, MODELS, asset

SPEC = CATALOG / "text_embedding" / "tiny-bert-cls.yaml"


def one_spec_catalog(tmp_path: Path, edit=lambda text: text) -> Path:
    """A catalog in tmp_path holding tiny-bert-cls's spec, edited by `edit`."""
    catalog = tmp_path / "catalog"
    (catalog / "text_embedding").mkdir(parents=True)
    (catalog / "text_embedding" / "tiny-bert-cls.yaml").write_text(edit(SPEC.read_text()))
    return catalog


def without(prefix: str):
    """An edit that drops the lines starting with `prefix`."""
    return lambda text: "\n".join(
        line for line in text.splitlines() if not line.startswith(prefix)
    )


def raises(cls, code, call, model=None):
    """Runs `call`, which must raise `cls` (code `code`), and checks the attributes."""
    with pytest.raises(cls) as info:
        call()
    err = info.value
    assert isinstance(err, dp_models.ModelError)
    assert err.error_code == code == cls.code
    assert isinstance(err.message, str) and err.message
    assert str(err).startswith(code + ": ")
    assert isinstance(err.details, dict)
    if model is not None:
        assert err.model == model
    return err


def test_one_class_per_rust_error_code():
    # ERROR_CODES comes from dp_spec::ErrorCode::ALL: a code added in Rust without its
    # class here fails this test.
    assert dp_models.ERROR_CODES[:3] == ["model_not_found", "weights_missing",
                                         "weights_digest_mismatch"]
    assert sorted(dp_models.ERROR_CLASSES) == sorted(dp_models.ERROR_CODES)
    for code, cls in dp_models.ERROR_CLASSES.items():
        assert issubclass(cls, dp_models.ModelError) and cls.code == code
        assert getattr(dp_models, cls.__name__) is cls


def test_model_not_found(manager):
    raises(dp_models.ModelNotFound, "model_not_found",
           lambda: manager.task(["x"], "embedding", "no-such-model"), model="no-such-model")


def test_weights_missing(tmp_path):
    asset("models/tiny-bert-cls")
    m = dp_models.ModelManager(catalog=CATALOG, models_root=tmp_path / "empty",
                               verify_cache=tmp_path / "cache.json")
    err = raises(dp_models.WeightsMissing, "weights_missing",
                 lambda: m.preload("tiny-bert-cls"), model="tiny-bert-cls")
    assert "tiny-bert-cls/model.safetensors" in err.details["missing"]


def test_weights_digest_mismatch(model_copy, tmp_path):
    weights = model_copy / "tiny-bert-cls" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    m = dp_models.ModelManager(catalog=CATALOG, models_root=model_copy,
                               verify_cache=tmp_path / "cache.json")
    raises(dp_models.WeightsDigestMismatch, "weights_digest_mismatch",
           lambda: m.task(["x"], "embedding", "tiny-bert-cls"), model="tiny-bert-cls")


def test_version_drift(model_copy, tmp_path):
    # Only the weights are pinned by this spec; the lock pins every file.
    catalog = one_spec_catalog(tmp_path, without("artifacts_digest"))
    cache = tmp_path / "cache.json"
    locked = dp_models.verify(["tiny-bert-cls"], lock=True, catalog=catalog,
                              models_root=model_copy, cache=cache)
    assert locked["ok"] and locked["models"][0]["lock_written"]
    config = model_copy / "tiny-bert-cls" / "config.json"
    config.write_text(config.read_text() + "\n")
    drifted = dp_models.verify(["tiny-bert-cls"], catalog=catalog, models_root=model_copy,
                               cache=cache)
    assert not drifted["ok"] and drifted["models"][0]["status"] == "drift"
    assert drifted["models"][0]["error"]["error_code"] == "version_drift"
    m = dp_models.ModelManager(catalog=catalog, models_root=model_copy, verify_cache=cache)
    raises(dp_models.VersionDrift, "version_drift", lambda: m.preload("tiny-bert-cls"),
           model="tiny-bert-cls")


def test_triton_unavailable(tmp_path):
    asset("models/tiny-reranker-onnx")
    # A closed loopback port: refused at once.
    m = dp_models.ModelManager(
        catalog=CATALOG, models_root=MODELS, verify_cache=tmp_path / "cache.json",
        overrides={"tiny-reranker-triton.triton.endpoint": "http://127.0.0.1:9"},
    )
    raises(dp_models.TritonUnavailable, "triton_unavailable",
           lambda: m.task({"query": "q", "documents": ["d"]}, "rerank", "tiny-reranker-triton"),
           model="tiny-reranker-triton")


def test_insufficient_gpu_memory(tmp_path):
    asset("models/tiny-bert-cls")
    # The demand exceeds the whole budget: refused before any load is tried.
    m = dp_models.ModelManager(
        catalog=CATALOG, models_root=MODELS, verify_cache=tmp_path / "cache.json",
        cuda_available=True, vram_budget_bytes=1,
        overrides={"tiny-bert-cls.device_policy": "cuda",
                   "tiny-bert-cls.resource_requirements.vram_bytes": 1000},
    )
    raises(dp_models.InsufficientGpuMemory, "insufficient_gpu_memory",
           lambda: m.preload("tiny-bert-cls"), model="tiny-bert-cls")


def test_insufficient_memory(tmp_path):
    asset("models/tiny-bert-cls")
    m = dp_models.ModelManager(catalog=CATALOG, models_root=MODELS,
                               verify_cache=tmp_path / "cache.json", ram_budget_bytes=1)
    raises(dp_models.InsufficientMemory, "insufficient_memory",
           lambda: m.preload("tiny-bert-cls"), model="tiny-bert-cls")


def test_unsupported_runtime(tmp_path):
    catalog = one_spec_catalog(
        tmp_path, lambda t: t.replace("runtime: inprocess", "runtime: tensorflow"))
    err = raises(dp_models.UnsupportedRuntime, "unsupported_runtime",
                 lambda: dp_models.ModelManager(catalog=catalog, models_root=MODELS))
    assert err.details["diagnostics"][0]["error_code"] == "unsupported_runtime"
    report = dp_models.validate([catalog / "text_embedding" / "tiny-bert-cls.yaml"])
    assert report["errors"][0]["error_code"] == "unsupported_runtime"


def test_unsupported_engine(tmp_path):
    catalog = one_spec_catalog(
        tmp_path, lambda t: t.replace("engine: candle", "engine: tensorrt"))
    raises(dp_models.UnsupportedEngine, "unsupported_engine",
           lambda: dp_models.ModelManager(catalog=catalog, models_root=MODELS))


def test_network_forbidden():
    raises(dp_models.NetworkForbidden, "network_forbidden",
           lambda: dp_models.ModelManager(
               catalog=CATALOG, models_root=MODELS,
               overrides={"tiny-reranker-triton.triton.endpoint": "http://example.com:8000"}),
           model="tiny-reranker-triton")


def test_invalid_spec(tmp_path):
    catalog = one_spec_catalog(tmp_path, without("model_version"))
    err = raises(dp_models.InvalidSpec, "invalid_spec",
                 lambda: dp_models.ModelManager(catalog=catalog, models_root=MODELS))
    assert err.details["diagnostics"]
    raises(dp_models.InvalidSpec, "invalid_spec",
           lambda: dp_models.ModelManager(catalog=CATALOG, models_root=MODELS,
                                          overrides=["all-minilm-l6-v2.tier=7"]))
    # An override of an unknown model is that model's error.
    raises(dp_models.ModelNotFound, "model_not_found",
           lambda: dp_models.ModelManager(catalog=CATALOG, models_root=MODELS,
                                          overrides=["no-such-model.tier=1"]))


def test_role_unresolved(manager):
    raises(dp_models.RoleUnresolved, "role_unresolved",
           lambda: manager.resolve(role="no_such_role"))


def test_device_unavailable(tmp_path):
    asset("models/tiny-bert-cls")
    m = dp_models.ModelManager(catalog=CATALOG, models_root=MODELS,
                               verify_cache=tmp_path / "cache.json",
                               overrides={"tiny-bert-cls.device_policy": "cuda"})
    raises(dp_models.DeviceUnavailable, "device_unavailable",
           lambda: m.preload("tiny-bert-cls"), model="tiny-bert-cls")


def test_invalid_input(manager):
    m = "all-minilm-l6-v2"
    raises(dp_models.InvalidInput, "invalid_input",
           lambda: manager.task(["x"], "text_generation", m), model=m)
    raises(dp_models.InvalidInput, "invalid_input",
           lambda: manager.task("one str", "embedding", m), model=m)
    raises(dp_models.InvalidInput, "invalid_input",
           lambda: manager.task(["x"], "embedding", m, foo=1), model=m)
    raises(dp_models.InvalidInput, "invalid_input",
           lambda: manager.task(["x"], "no_such_task", m))
    raises(dp_models.InvalidInput, "invalid_input",
           lambda: manager.task({"query": "q"}, "rerank", "tiny-reranker"))
    raises(dp_models.InvalidInput, "invalid_input",
           lambda: manager.task(["x"], "embedding", m, keep_alive=-1))
    asset("models/tiny-clip")
    raises(dp_models.InvalidInput, "invalid_input",
           lambda: manager.task([b"not an image"], "image_embedding", "tiny-clip"))


def test_overloaded(tmp_path):
    asset("models/all-minilm-l6-v2")
    # A queue of one text cannot take a request of two: refused, nothing run.
    m = dp_models.ModelManager(catalog=CATALOG, models_root=MODELS,
                               verify_cache=tmp_path / "cache.json", embedding_cache=False,
                               batching={"max_queued_texts": 1})
    err = raises(dp_models.Overloaded, "overloaded",
                 lambda: m.task(["a", "b"], "embedding", "all-minilm-l6-v2"),
                 model="all-minilm-l6-v2")
    assert err.details["max_queued_texts"] == 1
    assert m.task(["a"], "embedding", "all-minilm-l6-v2").embeddings.shape == (1, 384)


def test_io(tmp_path):
    asset("models/tiny-bert-cls")
    # A lock file under a regular file: the OS refuses with ENOTDIR.
    blocker = tmp_path / "file"
    blocker.write_text("")
    raises(dp_models.Io, "io",
           lambda: dp_models.verify(["tiny-bert-cls"], catalog=CATALOG, models_root=MODELS,
                                    lock_file=blocker / "x.lock", cache=tmp_path / "c.json"))
