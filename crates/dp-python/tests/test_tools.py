"""validate, digest and verify: what `dp validate`, `dp digest` and `dp verify` report."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

import dp_models
from conftest import CATALOG, MODELS, ROOT, asset, require


def test_validate_the_catalog_and_files(tmp_path):
    report = dp_models.validate(catalog=CATALOG)
    assert report["errors"] == []
    assert report["models"] == len(list(CATALOG.rglob("*.yaml")))
    files = dp_models.validate([CATALOG / "text_embedding" / "all-minilm-l6-v2.yaml",
                                CATALOG.parent / "profiles" / "cpu-only.yaml"])
    assert files == {"errors": [], "models": 1, "profiles": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_name: x\n")
    report = dp_models.validate([bad])
    assert report["models"] == 0 and report["errors"]
    assert all(e["file"] == str(bad) for e in report["errors"])
    assert {e["error_code"] for e in report["errors"]} == {"invalid_spec"}


def test_digest_of_a_file_and_a_directory():
    spec = CATALOG / "text_embedding" / "all-minilm-l6-v2.yaml"
    expected = "sha256:" + hashlib.sha256(spec.read_bytes()).hexdigest()
    assert dp_models.digest(spec) == {"digest": expected}
    blake = dp_models.digest(spec, "blake3")["digest"]
    assert blake.startswith("blake3:") and len(blake) == len("blake3:") + 64
    model = asset("models/tiny-bert-cls")
    tree = dp_models.digest(model)
    assert tree["aggregate"].startswith("sha256:")
    assert len(tree["files"]) == sum(1 for p in model.rglob("*") if p.is_file())
    for f in tree["files"]:
        digest = hashlib.sha256((model / f["path"]).read_bytes()).hexdigest()
        assert f["digest"] == "sha256:" + digest
    # The same figures as `dp digest --json`.
    dp = require(Path(os.environ.get("DP_BIN", ROOT / "target/debug/dp")))
    out = subprocess.run([str(dp), "--json", "digest", str(model)], check=True,
                         capture_output=True, text=True)
    assert json.loads(out.stdout) == tree
    with pytest.raises(dp_models.InvalidInput):
        dp_models.digest(model / "no-such-file")
    with pytest.raises(dp_models.InvalidInput):
        dp_models.digest(model, "md5")


def test_verify_models(tmp_path):
    asset("models/all-minilm-l6-v2")
    asset("models/tiny-reranker-onnx")
    report = dp_models.verify(["all-minilm-l6-v2", "tiny-reranker-triton"], catalog=CATALOG,
                              models_root=MODELS, cache=tmp_path / "cache.json")
    assert report["ok"] is True
    assert report["lock_file"] == str(CATALOG.parent / "catalog.lock")
    minilm, triton = report["models"]
    assert minilm["model_name"] == "all-minilm-l6-v2"
    assert minilm["status"] == "ok" and minilm["aggregate"].startswith("sha256:")
    assert minilm["files"] > 0 and "error" not in minilm
    assert triton["model_name"] == "tiny-reranker-triton"
    with pytest.raises(dp_models.ModelNotFound):
        dp_models.verify(["no-such-model"], catalog=CATALOG, models_root=MODELS)


def test_verify_lock_writes_the_lock_file(model_copy, tmp_path):
    lock = tmp_path / "x.lock"
    report = dp_models.verify(["tiny-bert-cls"], lock=True, catalog=CATALOG,
                              models_root=model_copy, lock_file=lock,
                              cache=tmp_path / "c.json")
    assert report["ok"] and report["models"][0]["lock_written"]
    assert "tiny-bert-cls" in lock.read_text()
    again = dp_models.verify(["tiny-bert-cls"], catalog=CATALOG, models_root=model_copy,
                             lock_file=lock, cache=tmp_path / "c.json")
    assert again["models"][0]["locked"] is True
    assert again["models"][0]["status"] == "ok"
