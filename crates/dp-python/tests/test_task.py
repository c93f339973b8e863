"""ModelManager.task on the real models: every task type, results against the `dp` binary
(bit for bit) and the Python reference outputs."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import dp_models
from conftest import CATALOG, MODELS, REFERENCE, ROOT, asset, require

TEXTS = [
    "The cat sits on the mat.",
    "A kitten sat on the rug.",
    "It will rain tomorrow.",
    "Crème brûlée, naïve café 🍕",
]

SCHEMA = json.loads((ROOT / "specs/schema/models-used-entry.schema.json").read_text())


def dp_embed(model: str, texts: list, tmp_path: Path) -> np.ndarray:
    """The embeddings `dp embed --json` prints for `texts`, as float32."""
    dp = require(Path(os.environ.get("DP_BIN", ROOT / "target/debug/dp")))
    source = tmp_path / "texts.json"
    source.write_text(json.dumps(texts))
    out = subprocess.run(
        [str(dp), "--catalog", str(CATALOG), "--models-root", str(MODELS), "--json",
         "embed", "--model", model, "--input", str(source)],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    # serde_json prints each f32 in its shortest form, which parses back to the same f32.
    return np.array(json.loads(out.stdout)["embeddings"], dtype=np.float64).astype(np.float32)


def check_models_used(result: dp_models.TaskResult, model: str) -> None:
    assert isinstance(result.models_used, list) and len(result.models_used) == 1
    entry = result.models_used[0]
    for key in SCHEMA["required"]:
        assert key in entry, key
    assert set(entry) <= set(SCHEMA["properties"])
    assert entry["model_name"] == model
    assert entry["model_signature"] == result.model_signature
    assert result.model_signature.startswith("dp2:model_name=" + model + ";")


@pytest.mark.parametrize("model", ["all-minilm-l6-v2", "all-minilm-l6-v2-onnx"])
def test_embeddings_equal_the_dp_binary_bit_for_bit(manager, model, tmp_path):
    asset(f"models/{model}")
    if model.endswith("onnx"):
        asset("onnxruntime/libonnxruntime.so")
    result = manager.task(task_data=TEXTS, task_type="embedding", model_name=model)
    emb = result.embeddings
    assert isinstance(emb, np.ndarray)
    assert emb.dtype == np.float32 and emb.shape == (4, 384)
    assert emb.flags["C_CONTIGUOUS"] and emb.flags["WRITEABLE"]
    assert result.task_type == "embedding"
    assert result.probabilities is None and result.scores is None and result.ranking is None
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    reference = dp_embed(model, TEXTS, tmp_path)
    assert reference.shape == emb.shape
    assert np.array_equal(emb.view(np.uint32), reference.view(np.uint32))
    check_models_used(result, model)
    assert result.models_used[0]["engine"] == ("onnx" if model.endswith("onnx") else "candle")


def test_acceptance_line_with_the_default_catalog_and_models_root():
    asset("models/all-minilm-l6-v2")
    # As in README: run from the workspace root, defaults like `dp`.
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        m = dp_models.ModelManager()
        assert m.task(["hi"], "embedding", "all-minilm-l6-v2").embeddings.shape == (1, 384)
    finally:
        os.chdir(cwd)


def test_prompt_name_on_e5_matches_the_reference(manager):
    asset("models/tiny-xlmr-e5")
    ref = json.loads((REFERENCE / "tiny-xlmr-e5.json").read_text())
    texts = ref["texts"]
    query = manager.task(texts, "embedding", "tiny-xlmr-e5", prompt_name="query")
    plain = manager.task(texts, "embedding", "tiny-xlmr-e5")
    np.testing.assert_allclose(query.embeddings, ref["outputs"]["query"]["embeddings"], atol=1e-4)
    np.testing.assert_allclose(plain.embeddings, ref["outputs"]["none"]["embeddings"], atol=1e-4)
    assert not np.array_equal(query.embeddings, plain.embeddings)
    # The prompt is recorded in models_used; the model (and its signature) is the same.
    assert query.models_used[0]["prompt_name"] == "query"
    assert "prompt_name" not in plain.models_used[0]
    assert query.model_signature == plain.model_signature


def test_rerank_scores_and_ranking_match_the_reference(manager):
    asset("models/tiny-reranker")
    ref = json.loads((REFERENCE / "tiny-reranker.json").read_text())
    data = {"query": ref["query"], "documents": ref["documents"]}
    result = manager.task(data, "rerank", "tiny-reranker")
    assert result.scores.dtype == np.float32 and result.scores.shape == (len(ref["documents"]),)
    np.testing.assert_allclose(result.scores, ref["scores"], atol=1e-4)
    check_models_used(result, "tiny-reranker")
    ranked = manager.task(data, "rerank", "tiny-reranker", top_k=3)
    assert ranked.scores is None
    assert [i for i, _ in ranked.ranking] == [r["corpus_id"] for r in ref["rank"]]
    for (_, score), r in zip(ranked.ranking, ref["rank"]):
        assert abs(score - r["score"]) < 1e-4


def test_text_generation_matches_transformers(manager):
    asset("models/tiny-t5")
    ref = json.loads(
        (ROOT / "tests" / "data" / "reference" / "generation" / "tiny-t5.json").read_text()
    )
    texts = [i["text"] for i in ref["inputs"][:3]]
    greedy = manager.task(texts, "text_generation", "tiny-t5", max_new_tokens=20)
    assert greedy.texts == ref["single"]["greedy"]["texts"][:3]
    assert greedy.embeddings is None
    check_models_used(greedy, "tiny-t5")
    assert greedy.models_used[0]["generation"]["decoding"] == "greedy"
    beams = manager.task(texts, "text_generation", "tiny-t5", max_new_tokens=20, num_beams=4)
    assert beams.texts == ref["single"]["beam4"]["texts"][:3]
    assert beams.models_used[0]["generation"]["num_beams"] == 4
    with pytest.raises(dp_models.InvalidInput):
        manager.task(texts, "text_generation", "tiny-t5", temperature=0.7)


def test_transcribe_matches_transformers(manager):
    asset("models/tiny-whisper")
    ref = json.loads(
        (ROOT / "tests" / "data" / "reference" / "speech" / "tiny-whisper.json").read_text()
    )
    cases = {c["name"]: c for c in ref["cases"]}
    detect = cases["long_65s/greedy_detect"]
    translate = cases["speech/greedy_translate_de"]
    audio = [
        asset("audio/" + detect["audio"]).read_bytes(),
        asset("audio/" + translate["audio"]).read_bytes(),
    ]
    result = manager.task(audio[:1], "transcribe", "tiny-whisper", max_new_tokens=40)
    assert result.texts == [detect["text"]]
    transcript = result.transcripts[0]
    assert transcript["language"] == detect["language"]
    assert transcript["duration_seconds"] == 65.0
    assert transcript["chunk_token_ids"] == [c["generated_ids"] for c in detect["chunks"]]
    check_models_used(result, "tiny-whisper")
    assert result.models_used[0]["generation"]["task"] == "transcribe"
    translated = manager.task(
        audio[1:], "transcribe", "tiny-whisper", max_new_tokens=40, language="de", task="translate"
    )
    assert translated.texts == [translate["text"]]
    with pytest.raises(dp_models.InvalidInput):
        manager.task(audio[:1], "transcribe", "tiny-whisper", language="xx")
    with pytest.raises(dp_models.InvalidInput):
        manager.task(audio[0], "transcribe", "tiny-whisper")


def test_image_embedding_and_zero_shot_on_tiny_clip(manager):
    asset("models/tiny-clip")
    images = [
        asset("images/skimage/chelsea.png").read_bytes(),
        asset("images/skimage/rocket.jpg").read_bytes(),
    ]
    result = manager.task(images, "image_embedding", "tiny-clip")
    assert result.embeddings.dtype == np.float32 and result.embeddings.shape[0] == 2
    # The same images again: the same vectors (from the embedding cache or not).
    again = manager.task(images, "image_embedding", "tiny-clip")
    assert np.array_equal(result.embeddings, again.embeddings)
    labels = ["a cat", "a rocket", "a cup of coffee"]
    probs = manager.task({"images": images, "labels": labels}, "zero_shot_classification", "tiny-clip")
    assert probs.probabilities.shape == (2, 3) and probs.probabilities.dtype == np.float32
    np.testing.assert_allclose(probs.probabilities.sum(axis=1), 1.0, atol=1e-5)
    check_models_used(probs, "tiny-clip")


def test_infer_runs_named_tensors(manager):
    asset("models/tiny-bert-cls")
    ids = np.array([[101, 7592, 2088, 102]], dtype=np.int64)
    result = manager.task(
        {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        },
        "infer",
        "tiny-bert-cls",
    )
    out = result.tensors["last_hidden_state"]
    assert out.dtype == np.float32 and out.shape == (1, 4, 48)
    assert np.isfinite(out).all() and np.abs(out).sum() > 0
    # The same tensors give the same outputs.
    again = manager.task(
        {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)},
        "infer",
        "tiny-bert-cls",
    )
    assert np.array_equal(out, again.tensors["last_hidden_state"])


def test_no_data_preloads(manager):
    result = manager.task(None, "embedding", "all-minilm-l6-v2", keep_alive=60)
    assert result.preloaded and result.embeddings is None
    check_models_used(result, "all-minilm-l6-v2")


def test_task_types_are_the_rust_ones():
    assert dp_models.TASK_TYPES == [
        "embedding", "image_embedding", "zero_shot_classification", "rerank", "infer",
        "text_generation", "transcribe",
    ]
