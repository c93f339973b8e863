"""Makes the Whisper speech-recognition references of this folder (see README.md): what
transformers' Whisper `generate` outputs on the tiny Whisper models of `cargo xtask setup` (asset
`tiny-whisper`) for the test audio of the asset `audio`.

    .dp-assets/bench-venv/bin/python tests/data/reference/speech/make_reference.py \
        [MODELS_DIR] [AUDIO_DIR] [OUT_DIR]

MODELS_DIR defaults to `.dp-assets/models`, AUDIO_DIR to `.dp-assets/audio`, OUT_DIR to this folder.
Needs torch and transformers (CPU is enough) and soundfile: the bench venv has no soundfile, so it
is taken from `.dp-assets/venv-audio` (the same Python 3.11 and the same numpy pin) when missing.
Writes `<model>.json` per model and prints diagnostics (the smallest top-1 / top-2 gap of greedy
decoding, how many outputs end before max_new_tokens, whether batched equals single).
"""

import hashlib
import os
import json
import sys
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]

try:
    import soundfile
except ImportError:
    sys.path.append(str(ROOT / ".dp-assets/venv-audio/lib/python3.11/site-packages"))
    import soundfile

import numpy as np
from safetensors import safe_open
import tokenizers
import torch
import transformers
from transformers import WhisperForConditionalGeneration, WhisperProcessor

MODELS = ["tiny-whisper", "tiny-whisper-128"]
SAMPLE_RATE = 16000
CHUNK_SAMPLES = 480000  # 30 s

# (case name prefix, file in .dp-assets/audio/)
AUDIO = [
    ("speech", "speech_16k_s16.wav"),
    ("two_tone", "two_tone_16k_s16.wav"),
    ("noise", "noise_16k_f32.wav"),
    ("chirp", "chirp_16k_s16.wav"),
    ("long_65s", "long_65s_16k_s16.wav"),
]

# The option sets of every audio file; `language` None means detection.
OPTIONS = {
    "greedy_detect": {"language": None, "task": "transcribe", "num_beams": 1, "max_new_tokens": 40},
    "greedy_en": {"language": "en", "task": "transcribe", "num_beams": 1, "max_new_tokens": 40},
    "greedy_translate_de": {"language": "de", "task": "translate", "num_beams": 1, "max_new_tokens": 40},
    "beam4_en": {"language": "en", "task": "transcribe", "num_beams": 4, "max_new_tokens": 40},
}
# Extra option sets of some files only.
EXTRA = {"speech": {"greedy_en_100": {"language": "en", "task": "transcribe", "num_beams": 1, "max_new_tokens": 100}}}
# The batched runs: every file of at most 30 s in one batch.
BATCHED = ["greedy_en", "greedy_detect"]

# Passed to every generate call besides language, task, num_beams and max_new_tokens, so that no
# generation_config.json default applies (the token ids repeat the generation_config.json values).
FIXED = {
    "return_timestamps": False,
    "do_sample": False,
    "temperature": 0.0,
    "num_return_sequences": 1,
    "length_penalty": 1.0,
    "early_stopping": False,
    "no_repeat_ngram_size": 0,
    "repetition_penalty": 1.0,
    "condition_on_prev_tokens": False,
    "compression_ratio_threshold": None,
    "logprob_threshold": None,
    "no_speech_threshold": None,
    "use_cache": True,
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_audio(path: Path) -> np.ndarray:
    data, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    assert rate == SAMPLE_RATE and data.ndim == 1, (path, rate, data.shape)
    return data


def chunks_of(audio: np.ndarray) -> list:
    return [audio[i : i + CHUNK_SAMPLES] for i in range(0, len(audio), CHUNK_SAMPLES)]


def features(processor, pieces: list) -> torch.Tensor:
    out = processor.feature_extractor(
        pieces,
        sampling_rate=SAMPLE_RATE,
        padding="max_length",
        truncation=True,
        return_attention_mask=False,
        return_tensors="pt",
    )
    return out.input_features


def generate(model, gen_ids: dict, feats: torch.Tensor, opts: dict, stats: dict, label: str) -> list:
    """Runs generate; returns per batch item (prompt_ids, generated_ids, min top-2 gap, scores)."""
    with torch.no_grad():
        out = model.generate(
            feats,
            language=opts["language"],
            task=opts["task"],
            num_beams=opts["num_beams"],
            max_new_tokens=opts["max_new_tokens"],
            output_scores=True,
            return_dict_in_generate=True,
            **FIXED,
            **gen_ids,
        )
    prompt_len = 4
    results = []
    for b, row in enumerate(out.sequences.tolist()):
        prompt, rest = row[:prompt_len], row[prompt_len:]
        assert prompt[0] == gen_ids["decoder_start_token_id"], prompt
        if gen_ids["eos_token_id"] in rest:
            rest = rest[: rest.index(gen_ids["eos_token_id"]) + 1]
        gap = None
        if opts["num_beams"] == 1:
            assert len(out.scores) >= len(rest)
            for step in range(len(rest)):
                top = torch.topk(out.scores[step][b].float(), 2).values
                g = float(top[0] - top[1])
                gap = g if gap is None else min(gap, g)
                if g < stats["min_gap"][0]:
                    stats["min_gap"] = (g, label, b, step)
        score = float(out.sequences_scores[b]) if opts["num_beams"] > 1 else None
        results.append((prompt, rest, gap, score))
    return results


def plain_generate(model, gen_ids: dict, feats: torch.Tensor, opts: dict) -> list:
    """The same call without return_dict_in_generate (what a user gets by default)."""
    with torch.no_grad():
        out = model.generate(
            feats,
            language=opts["language"],
            task=opts["task"],
            num_beams=opts["num_beams"],
            max_new_tokens=opts["max_new_tokens"],
            **FIXED,
            **gen_ids,
        )
    return out.tolist()


def make(models_dir: Path, audio_dir: Path, name: str, out_dir: Path) -> None:
    folder = models_dir / name
    processor = WhisperProcessor.from_pretrained(folder)
    tok = processor.tokenizer
    rust_like = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    model, info = WhisperForConditionalGeneration.from_pretrained(
        folder, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr(), "proj_out not tied"
    # The encoder positions in use are the stored float64-computed sinusoids (transformers' own
    # `sinusoids()`, computed in float32, differs by up to 1e-4 and must not replace them).
    stored = safe_open(str(folder / "model.safetensors"), "pt").get_tensor("model.encoder.embed_positions.weight")
    assert torch.equal(model.model.encoder.embed_positions.weight.detach(), stored)
    gc = model.generation_config
    eot, sot = gc.eos_token_id, gc.decoder_start_token_id
    gen_ids = {
        "decoder_start_token_id": sot,
        "eos_token_id": eot,
        "pad_token_id": gc.pad_token_id,
        "suppress_tokens": list(gc.suppress_tokens),
        "begin_suppress_tokens": list(gc.begin_suppress_tokens),
    }
    id_to_lang = {v: k[2:-2] for k, v in gc.lang_to_id.items()}

    def decode(ids: list) -> str:
        text = tok.decode(ids, skip_special_tokens=True)
        other = rust_like.decode(ids, skip_special_tokens=True)
        assert text == other, (text, other)
        return text

    stats = {"min_gap": (float("inf"), None, None, None)}
    audio = {prefix: read_audio(audio_dir / file) for prefix, file in AUDIO}
    cases = []
    plain_checked = 0
    for prefix, file in AUDIO:
        pieces = chunks_of(audio[prefix])
        option_sets = dict(OPTIONS, **EXTRA.get(prefix, {}))
        for opt_name, opts in option_sets.items():
            case = {"name": f"{prefix}/{opt_name}", "audio": file, "options": opts, "chunks": []}
            language = opts["language"]
            all_ids = []
            for k, piece in enumerate(pieces):
                feats = features(processor, [piece])
                run_opts = dict(opts, language=language)
                label = f"{name} {case['name']} chunk {k}"
                ((prompt, ids, gap, score),) = generate(model, gen_ids, feats, run_opts, stats, label)
                chunk = {
                    "index": k,
                    "start_sample": k * CHUNK_SAMPLES,
                    "samples": len(piece),
                    "language_passed": language,
                    "prompt_ids": prompt,
                    "generated_ids": ids,
                    "ended_with_eot": bool(ids) and ids[-1] == eot,
                    "text": decode(ids),
                }
                if language is None:
                    detected = id_to_lang[prompt[1]]
                    chunk["detected_language"] = detected
                    assert model.detect_language(feats).tolist() == [prompt[1]]
                    # The later chunks of long audio get the language detected on chunk 0.
                    language = detected
                if gap is not None:
                    chunk["min_top2_gap"] = gap
                if score is not None:
                    chunk["sequences_score"] = score
                if plain_checked < 6:
                    # The default output: the generated ids without the prompt and without EOS.
                    plain = plain_generate(model, gen_ids, feats, run_opts)[0]
                    expect = ids[:-1] if ids and ids[-1] == eot else ids
                    assert plain[: len(expect)] == expect and all(t == eot for t in plain[len(expect) :]), (plain, ids)
                    plain_checked += 1
                case["chunks"].append(chunk)
                all_ids += ids
            case["language"] = id_to_lang[case["chunks"][0]["prompt_ids"][1]]
            case["text"] = decode(all_ids)
            gaps = [c["min_top2_gap"] for c in case["chunks"] if "min_top2_gap" in c]
            if gaps:
                case["min_top2_gap"] = min(gaps)
            cases.append(case)

    short = [(p, f) for p, f in AUDIO if len(audio[p]) <= CHUNK_SAMPLES]
    batched = {"audio": [f for _, f in short], "runs": {}}
    for opt_name in BATCHED:
        feats = features(processor, [audio[p] for p, _ in short])
        results = generate(model, gen_ids, feats, OPTIONS[opt_name], stats, f"{name} batched {opt_name}")
        single = {c["name"]: c["chunks"][0] for c in cases}
        same = all(
            (prompt, ids) == (single[f"{p}/{opt_name}"]["prompt_ids"], single[f"{p}/{opt_name}"]["generated_ids"])
            for (p, _), (prompt, ids, _, _) in zip(short, results)
        )
        batched["runs"][opt_name] = {
            "options": OPTIONS[opt_name],
            "prompt_ids": [r[0] for r in results],
            "generated_ids": [r[1] for r in results],
            "equals_single": same,
        }

    files = sorted(p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    lang_to_id = {k[2:-2]: v for k, v in gc.lang_to_id.items()}
    reference = {
        "model": name,
        "model_files_sha256": {f: sha256(folder / f) for f in files},
        "audio_files_sha256": {f: sha256(audio_dir / f) for _, f in AUDIO},
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
            "numpy": np.__version__,
            "soundfile": soundfile.__version__,
        },
        "device": "cpu",
        "dtype": "float32",
        "special": {
            "sot": sot,
            "eot": eot,
            "transcribe": gc.task_to_id["transcribe"],
            "translate": gc.task_to_id["translate"],
            "notimestamps": gc.no_timestamps_token_id,
            "lang_to_id": lang_to_id,
            "suppress_tokens": gen_ids["suppress_tokens"],
            "begin_suppress_tokens": gen_ids["begin_suppress_tokens"],
        },
        "generate_fixed_options": dict(FIXED, **gen_ids),
        "conventions": (
            "Audio read with soundfile as float32 at 16 kHz; audio longer than 30 s is split into consecutive "
            "pieces of 480000 samples (the last one shorter), each run separately through WhisperFeatureExtractor "
            "(padded to 30 s) and generate. prompt_ids: the first 4 ids of generate(...).sequences (the decoder "
            "prompt). generated_ids: the ids after the prompt, cut just after the first EOS (the padding after "
            "it dropped); a chunk that ran to max_new_tokens has max_new_tokens ids and no EOS. With language "
            "null, chunk 0 detects the language and the later chunks are given it explicitly. text: "
            "tokenizer.decode(concatenation of every chunk's generated_ids, skip_special_tokens=True). "
            "min_top2_gap: the smallest top-1 minus top-2 processed score over the greedy steps."
        ),
        "cases": cases,
        "batched": batched,
        "min_greedy_top2_gap": stats["min_gap"][0],
    }
    out = out_dir / f"{name}.json"
    out.write_text(json.dumps(reference, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")

    # Diagnostics.
    print(f"== {name}: wrote {out}")
    print(f"   min greedy top-1/top-2 gap {stats['min_gap']}")
    for opt_name, run in batched["runs"].items():
        print(f"   batched {opt_name} == single: {run['equals_single']}")
    chunks = [c for case in cases for c in case["chunks"]]
    ended = sum(1 for c in chunks if c["ended_with_eot"])
    print(f"   chunks ending with EOT: {ended}/{len(chunks)}")
    specials = sum(1 for c in chunks for t in c["generated_ids"] if t > eot)
    print(f"   special tokens other than EOT generated: {specials}")
    distinct = len({tuple(c["generated_ids"]) for c in chunks})
    print(f"   distinct outputs: {distinct}/{len(chunks)}")
    for case in cases:
        ids = [t for c in case["chunks"] for t in c["generated_ids"]]
        langs = [c.get("detected_language") for c in case["chunks"]]
        print(
            f"   {case['name']:28s} lang {case['language']} {langs if langs[0] else ''} "
            f"n={[len(c['generated_ids']) for c in case['chunks']]} distinct_tokens={len(set(ids))} "
            f"gap={case.get('min_top2_gap')} {case['text'][:50]!r}"
        )
    if stats["min_gap"][0] < 1e-3:
        print("   WARNING: a greedy step nearly ties (< 1e-3): retune the weights")


def main() -> None:
    args = sys.argv[1:]
    models_dir = Path(args[0]) if args else ROOT / ".dp-assets/models"
    audio_dir = Path(args[1]) if len(args) > 1 else ROOT / ".dp-assets/audio"
    out_dir = Path(args[2]) if len(args) > 2 else HERE
    torch.set_num_threads(2)
    for name in MODELS:
        make(models_dir, audio_dir, name, out_dir)


if __name__ == "__main__":
    main()
