"""Makes the T5 generation references of this folder (see README.md): what transformers'
`generate` outputs on the tiny T5 models of `cargo xtask setup` (asset `tiny-t5`).

    .dp-assets/bench-venv/bin/python tests/data/reference/generation/make_reference.py \
        [MODELS_DIR] [OUT_DIR]

MODELS_DIR defaults to `.dp-assets/models` (where setup puts `tiny-t5` and `tiny-t5-v1`), OUT_DIR
to this folder. Needs torch and transformers (CPU is enough); writes `<model>.json` per model and
prints diagnostics (the smallest top-1 / top-2 gap of greedy decoding, whether batched equals
single, how varied the outputs are).
"""

import hashlib
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, T5ForConditionalGeneration

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
MODELS = ["tiny-t5", "tiny-t5-v1"]
MAX_INPUT_LENGTH = 512

# Every option that could change the result is given, so no generation_config.json default applies.
BASE = {
    "do_sample": False,
    "num_beams": 1,
    "num_return_sequences": 1,
    "max_new_tokens": 20,
    "min_new_tokens": 0,
    "length_penalty": 1.0,
    "early_stopping": False,
    "no_repeat_ngram_size": 0,
    "repetition_penalty": 1.0,
    "decoder_start_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "use_cache": True,
}
OPTIONS = {
    "greedy": {},
    "greedy_min": {"max_new_tokens": 24, "min_new_tokens": 24},
    "beam4": {"num_beams": 4},
    "beam4_lp": {"num_beams": 4, "length_penalty": 0.5},
    "beam4_norepeat": {"num_beams": 4, "no_repeat_ngram_size": 2},
    "greedy_norepeat": {"no_repeat_ngram_size": 3},
}
BATCHED = ["greedy", "beam4"]


def long_text() -> str:
    """A text of well over 512 tokens, truncated to 512 by the tokenizer."""
    cities = ["Paris", "Berlin", "London", "Europe", "Deutschland", "France"]
    things = ["the quick brown fox", "a small black cat", "the old teacher", "ein junger Hund", "le petit garçon"]
    parts = []
    for i in range(60):
        parts.append(f"In {cities[i % len(cities)]}, {things[i % len(things)]} walked to station {i} and read the news.")
    return " ".join(parts)


TEXTS = [
    "Hello world.",
    "translate English to German: The house is wonderful.",
    "summarize: The city council met on Tuesday to discuss the new train station. Many people said "
    "that the old station was too small, and the president of the council promised a report before "
    "the end of the month.",
    "Die Straße in München ist heute sehr schön, aber übermorgen gibt es Regen.",
    "translate English to French: Le château près de la forêt est très beau; nous irons à l'hôpital demain.",
    "東京 and Москва are capitals 😀 — ok?",
    "The <extra_id_0> walks in <extra_id_1> park.",
    long_text(),
]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cut(row: list) -> list:
    """The convention of every `sequences` entry: the whole `generate` output row (starting with
    the decoder start token 0), cut just after the first EOS (1) that follows the start token;
    a row without EOS is kept whole. This drops only the padding after EOS."""
    for i in range(1, len(row)):
        if row[i] == 1:
            return row[: i + 1]
    return row


def run(model, tok, texts: list, option: str, stats: dict) -> dict:
    kwargs = dict(BASE, **OPTIONS[option])
    enc = tok(texts, padding=True, truncation=True, max_length=MAX_INPUT_LENGTH, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            output_scores=True,
            return_dict_in_generate=True,
            **kwargs,
        )
    rows = [cut(r) for r in out.sequences.tolist()]
    result = {
        "sequences": rows,
        "texts": [tok.decode(r, skip_special_tokens=True) for r in rows],
    }
    if kwargs["num_beams"] > 1:
        result["sequences_scores"] = [float(s) for s in out.sequences_scores.tolist()]
    else:
        # The decisive gap of greedy decoding: top-1 minus top-2 of the processed scores, over the
        # steps a row is still running.
        for step, scores in enumerate(out.scores):
            top = torch.topk(scores.float(), 2, dim=-1).values
            for b in range(scores.shape[0]):
                if len(rows[b]) > step + 1:
                    gap = float(top[b, 0] - top[b, 1])
                    if gap < stats["min_gap"][0]:
                        stats["min_gap"] = (gap, option, texts[b][:40], step)
    return result


def make(models_dir: Path, name: str, out_dir: Path) -> None:
    folder = models_dir / name
    tok = AutoTokenizer.from_pretrained(folder)
    model, info = T5ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    model.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tied = model.lm_head.weight.data_ptr() == model.shared.weight.data_ptr()
    assert tied == model.config.scale_decoder_outputs, "lm_head tying and decoder-output scaling disagree"

    stats = {"min_gap": (float("inf"), None, None, None)}
    inputs = []
    for text in TEXTS:
        full = tok(text)["input_ids"]
        ids = tok(text, truncation=True, max_length=MAX_INPUT_LENGTH)["input_ids"]
        inputs.append(
            {"text": text, "input_ids": ids, "untruncated_length": len(full), "truncated": len(full) > len(ids)}
        )
    single = {opt: {"sequences": [], "texts": []} for opt in OPTIONS}
    for text in TEXTS:
        for opt in OPTIONS:
            r = run(model, tok, [text], opt, stats)
            for k, v in r.items():
                single[opt].setdefault(k, []).append(v[0])
    batched = {opt: run(model, tok, TEXTS, opt, stats) for opt in BATCHED}
    same = {opt: batched[opt]["sequences"] == single[opt]["sequences"] for opt in BATCHED}

    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    reference = {
        "model": name,
        "model_files_sha256": {f: sha256(folder / f) for f in files},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "device": "cpu",
        "dtype": "float32",
        "tokenizer": {
            "call": "tokenizer(texts, padding=True, truncation=True, max_length=512) (padding right, pad id 0)",
            "max_length": MAX_INPUT_LENGTH,
        },
        "generate_common": BASE,
        "options": OPTIONS,
        "sequence_convention": (
            "sequences: each row of generate(...).sequences, starting with decoder_start_token_id 0, cut "
            "just after the first eos_token_id 1 after position 0 (only the padding after EOS is dropped; "
            "a row without EOS is kept whole). texts: tokenizer.decode(row, skip_special_tokens=True)."
        ),
        "inputs": inputs,
        "single": single,
        "batched": batched,
        "batched_equals_single": same,
        "min_greedy_top2_gap": stats["min_gap"][0],
    }
    out = out_dir / f"{name}.json"
    out.write_text(json.dumps(reference, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")

    # Diagnostics.
    print(f"== {name}: wrote {out}")
    print(f"   min greedy top-1/top-2 gap {stats['min_gap']}")
    print(f"   batched == single: {same}")
    for opt in OPTIONS:
        seqs = single[opt]["sequences"]
        distinct = len({tuple(s) for s in seqs})
        repeated = sum(1 for s in seqs if len(set(s[1:])) <= 2)
        lengths = [len(s) - 1 for s in seqs]
        print(f"   {opt:16s} distinct {distinct}/{len(seqs)}, near-constant {repeated}, new tokens {lengths}")
    for t, s in zip(single["greedy"]["texts"], single["greedy"]["sequences"]):
        print(f"     {s[:12]} {t[:70]!r}")
    if stats["min_gap"][0] < 1e-3:
        print("   WARNING: a greedy step nearly ties (< 1e-3): retune the weights")


def main() -> None:
    args = sys.argv[1:]
    models_dir = Path(args[0]) if args else ROOT / ".dp-assets/models"
    out_dir = Path(args[1]) if len(args) > 1 else HERE
    torch.set_num_threads(2)
    for name in MODELS:
        make(models_dir, name, out_dir)


if __name__ == "__main__":
    main()
