"""Makes the text-model reference outputs of this folder with sentence-transformers (PyTorch).

Reads the four folders `cargo xtask setup` made (.dp-assets/models/tiny-xlmr-e5,
tiny-bert-cls, tiny-reranker, tiny-xlmr-reranker) and writes one JSON file per model here:

- embedders (tiny-xlmr-e5.json, tiny-bert-cls.json): `SentenceTransformer(folder).encode(TEXTS,
  prompt_name=P)` for P in None, "query", "passage", and the token ids behind each embedding;
- rerankers (tiny-reranker.json, tiny-xlmr-reranker.json): `CrossEncoder(folder).predict` of
  one query against DOCUMENTS, with the model's activation and without (raw logits), its
  `rank(top_k=3)`, and the token ids of every pair.

Every file also records the sha256 of each model file, the library versions, and a tokenizer
check: transformers' AutoTokenizer and the `tokenizers` library on tokenizer.json must give the
same ids for TRICKY strings (the script fails otherwise).

Run it from the repository root, in a venv with requirements.txt of this folder (see README.md):

    python tests/data/reference/text/make_reference.py
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from sentence_transformers import CrossEncoder, SentenceTransformer
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
MODELS_DIR = ROOT / ".dp-assets" / "models"

EMBEDDERS = ["tiny-xlmr-e5", "tiny-bert-cls"]
RERANKERS = ["tiny-reranker", "tiny-xlmr-reranker"]

LONG_TEXT = " ".join(
    [
        "The history of the city begins with a small village on the river, where people built houses,",
        "a market and a school; Die Stadt wuchs schnell, und viele Menschen kamen aus dem ganzen Land.",
        "La ville est devenue la capitale du pays, et la gare a été construite après la guerre.",
        "Hoy la ciudad tiene una universidad, un aeropuerto y muchos museos.",
    ]
    * 6
)

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Berlin ist die Hauptstadt von Deutschland.",
    "La capitale de la France est Paris.",
    "¿Dónde está la estación de tren?",
    "東京は日本の首都です。",
    "你好，世界！",
    "Crème brûlée, naïve café, Straße, pingüino",
    "I love pizza 🍕 and coffee ☕ 😀",
    "",
    "  multiple   spaces\tand\nnewlines  ",
    "UPPER case and lower case",
    LONG_TEXT,
]

PROMPT_NAMES = [None, "query", "passage"]

QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Berlin ist die Hauptstadt von Deutschland.",
    "La capitale de la France est Paris.",
    "The quick brown fox jumps over the lazy dog.",
    "東京は日本の首都です。",
    "",
    "Madrid es la capital de España.",
    LONG_TEXT,
]

TRICKY = [
    "",
    " ",
    "   ",
    "Hello world",
    "  leading and   multiple   spaces  ",
    "tab\tand\nnewline",
    "Straße über Äpfel",
    "Crème brûlée à l'hôtel",
    "e\u0301le\u0300ve (decomposed accents)",
    "ﬁne ligature",
    "日本語のテキストです",
    "你好，世界！",
    "안녕하세요 세계",
    "emoji 😀👍 🤖 robot",
    "UPPER lower MiXeD",
    "pingüino niño señor",
    "query: what is the capital of France?",
    "<mask> token and <s> in text",
    "numbers 12345 3.14",
    "Привет мир",
    "Ελληνικά",
    "unknown ☃ snowman \u200b zero width",
]


def f32(values) -> list:
    """float32 values as JSON numbers that read back to the same float32 (9 significant digits)."""
    return [float(f"{float(v):.9g}") for v in np.asarray(values, dtype=np.float32).ravel()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_files(folder: Path) -> dict:
    return {
        p.relative_to(folder).as_posix(): sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".dp-stamp"
    }


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }


def tokenizer_check(folder: Path) -> dict:
    """AutoTokenizer (what sentence-transformers uses) against the tokenizers library reading
    tokenizer.json directly, on single strings and pairs; no truncation, no padding."""
    auto = AutoTokenizer.from_pretrained(folder)
    raw = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    raw.no_padding()
    raw.no_truncation()
    cases, mismatches = [], []
    for text in TRICKY:
        a = auto(text)["input_ids"]
        encoding = raw.encode(text)
        if a != encoding.ids:
            mismatches.append({"text": text, "transformers": a, "tokenizers": encoding.ids})
        pair_a = auto(text, "second text")["input_ids"]
        pair_b = raw.encode(text, "second text").ids
        if pair_a != pair_b:
            mismatches.append({"text": [text, "second text"], "transformers": pair_a, "tokenizers": pair_b})
        cases.append({"text": text, "ids": encoding.ids, "tokens": encoding.tokens})
    if mismatches:
        raise SystemExit(f"{folder}: transformers and tokenizers disagree: {json.dumps(mismatches, ensure_ascii=False)}")
    return {
        "what": "transformers AutoTokenizer and tokenizers.Tokenizer.from_file(tokenizer.json) (padding and "
        "truncation off) give the same ids on every string, alone and paired with 'second text'; "
        "cases holds the ids and tokens of each string alone",
        "tokenizer_class": type(auto).__name__,
        "mismatches": 0,
        "cases": cases,
    }


def unpadded(features: dict, row: int) -> dict:
    mask = features["attention_mask"][row].bool()
    out = {"input_ids": features["input_ids"][row][mask].tolist()}
    if "token_type_ids" in features:
        out["token_type_ids"] = features["token_type_ids"][row][mask].tolist()
    return out


def embedder_reference(name: str) -> dict:
    folder = MODELS_DIR / name
    model = SentenceTransformer(str(folder), device="cpu")
    # The encoder alone loads with no missing or unexpected weight.
    _, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    prompts = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))["prompts"]
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text(encoding="utf-8"))
    outputs = {}
    for prompt_name in PROMPT_NAMES:
        embeddings = model.encode(TEXTS, prompt_name=prompt_name, convert_to_numpy=True)
        norms = np.linalg.norm(embeddings, axis=1)
        assert np.allclose(norms, 1.0, atol=1e-5), norms
        prompt = prompts[prompt_name] if prompt_name else ""
        tokens = []
        for text in TEXTS:
            features = model.preprocess([text], prompt=prompt or None)
            tokens.append(unpadded(features, 0))
        # One by one gives the batch's embeddings (padding changes nothing).
        single = model.encode(TEXTS[:3], prompt_name=prompt_name, convert_to_numpy=True, batch_size=1)
        assert np.abs(single - embeddings[:3]).max() < 1e-5
        outputs["none" if prompt_name is None else prompt_name] = {
            "prompt": prompt,
            "token_ids": tokens,
            "embeddings": [f32(row) for row in embeddings],
        }
    return {
        "what": f"SentenceTransformer('.dp-assets/models/{name}', device='cpu').encode(texts, prompt_name=P, "
        "convert_to_numpy=True) for P in None ('none'), 'query', 'passage' (one batch of all texts; "
        "normalized embeddings, float32 written with 9 significant digits); token_ids: what "
        "model.preprocess([prompt + text]) gave for each text, padding removed (truncated to max_seq_length)",
        "versions": versions(),
        "model": name,
        "kind": "embedding",
        "model_files_sha256": model_files(folder),
        "max_seq_length": model.max_seq_length,
        "dimension": model.get_embedding_dimension(),
        "pooling": "cls" if pooling["pooling_mode_cls_token"] else "mean",
        "normalized": True,
        "prompts": prompts,
        "tokenizer_check": tokenizer_check(folder),
        "texts": TEXTS,
        "outputs": outputs,
    }


def reranker_reference(name: str) -> dict:
    folder = MODELS_DIR / name
    model = CrossEncoder(str(folder), device="cpu")
    pairs = [(QUERY, doc) for doc in DOCUMENTS]
    scores = model.predict(pairs, convert_to_numpy=True)
    logits = model.predict(pairs, convert_to_numpy=True, activation_fn=torch.nn.Identity())
    # The raw logits are the classifier's output, as the plain transformers model gives them.
    hf, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        batch = tokenizer([QUERY] * len(DOCUMENTS), DOCUMENTS, padding=True, truncation=True, max_length=model.max_seq_length, return_tensors="pt")
        direct = hf.eval()(**batch).logits[:, 0].numpy()
    assert np.abs(direct - logits).max() < 1e-5, (direct, logits)
    activation = json.loads((folder / "config.json").read_text(encoding="utf-8"))["sentence_transformers"]["activation_fn"]
    if activation.endswith("Sigmoid"):
        assert np.abs(scores - 1 / (1 + np.exp(-logits))).max() < 1e-6
    else:
        assert np.abs(scores - logits).max() < 1e-6
    ranked = model.rank(QUERY, DOCUMENTS, top_k=3)
    pair_tokens = [unpadded(model.preprocess([pair]), 0) for pair in pairs]
    return {
        "what": f"CrossEncoder('.dp-assets/models/{name}', device='cpu'): scores = predict(pairs) with the "
        "model's activation_fn, logits = predict(pairs, activation_fn=Identity()) (= the classifier's raw "
        "output, checked against AutoModelForSequenceClassification), rank = rank(query, documents, "
        "top_k=3); pairs are (query, document) in order; pair_token_ids: model.preprocess([pair]) "
        "with padding removed (truncated to max_length, longest first)",
        "versions": versions(),
        "model": name,
        "kind": "rerank",
        "model_files_sha256": model_files(folder),
        "activation_fn": activation,
        "max_length": model.max_seq_length,
        "num_labels": hf.config.num_labels,
        "tokenizer_check": tokenizer_check(folder),
        "query": QUERY,
        "documents": DOCUMENTS,
        "pair_token_ids": pair_tokens,
        "scores": f32(scores),
        "logits": f32(logits),
        "rank": [{"corpus_id": int(r["corpus_id"]), "score": f32([r["score"]])[0]} for r in ranked],
    }


def write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main() -> None:
    torch.manual_seed(0)
    for name in EMBEDDERS:
        write_json(HERE / f"{name}.json", embedder_reference(name))
        print(f"wrote {name}.json")
    for name in RERANKERS:
        write_json(HERE / f"{name}.json", reranker_reference(name))
        print(f"wrote {name}.json")


if __name__ == "__main__":
    main()
