"""The transformers side of `cargo xtask bench generate` (the anchor), on PyTorch CPU, float32.

    python generate_transformers.py MODEL_DIR --batch N --new-tokens 64 --repeats R [--threads T]
        [--inputs FILE] [--min-seconds S]

Loads MODEL_DIR with `T5ForConditionalGeneration.from_pretrained` and `AutoTokenizer`, takes N
input texts (the first N of the `texts` of --inputs, a JSON object, as the Rust runner
tests/benches/generate_candle.rs reads them; without --inputs, N distinct sentences of about 20
tokens made here), and runs greedy `generate` on them as one padded batch with min_new_tokens =
max_new_tokens = --new-tokens, so EOS never ends a row early and every call produces exactly
N * new_tokens tokens. A call is what `ModelManager::generate` does: tokenize the texts, generate,
decode the new tokens to text. One warm-up call, then timed calls for at least --repeats calls
(alias --min-calls) and --min-seconds; prints one JSON line:

    {"batch": N, "new_tokens": 64, "seconds": [...], "per_s": ..., "tokens_per_s_median": ...,
     "token_ids": [[...], ...], "kv_cache_bytes": ..., "threads": T, "input_tokens": [...],
     "torch": "...", "transformers": "..."}

`per_s` is N * new_tokens per call over the timed calls' total seconds (as the Rust runner
computes it; xtask reads this one), `tokens_per_s_median` the same over the median call.
`token_ids` are the new tokens of the warm-up call, one list per text (the decoder start token
left out), which xtask compares with the Rust runner's; `kv_cache_bytes` the bytes of the
tensors of its `past_key_values` at the end (every layer's self-attention keys and values of the
decoded positions, and the cross-attention ones of the padded encoder positions).
"""

import argparse
import json
import os
import statistics
import time

# Never reach a hub: the model is a local folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

SUBJECTS = ["The city council", "A young teacher", "The old doctor", "My friend", "The company",
            "The president", "A small black cat", "The quick brown fox"]
VERBS = ["visited", "described", "wrote about", "talked about", "walked to", "read about", "liked", "found"]
OBJECTS = ["the new train station in Berlin", "the market near the river", "the hospital in Paris",
           "the university library", "a beautiful house in London", "the mountain village",
           "the airport hotel", "the morning news"]


def texts(n: int) -> list:
    """N distinct sentences of about 20 tokens (with the tiny T5 tokenizer)."""
    out = []
    for i in range(n):
        s = SUBJECTS[i % len(SUBJECTS)]
        v = VERBS[(i // len(SUBJECTS)) % len(VERBS)]
        o = OBJECTS[(i * 3 + i // 64) % len(OBJECTS)]
        out.append(f"translate English to German: {s} {v} {o} on day {i}.")
    return out


def cache_bytes(cache) -> int:
    """Bytes of every key and value tensor of an `EncoderDecoderCache` (or a legacy tuple)."""
    total = 0
    parts = [getattr(cache, "self_attention_cache", None), getattr(cache, "cross_attention_cache", None)]
    if any(part is not None for part in parts):
        for part in parts:
            for layer in getattr(part, "layers", []) if part is not None else []:
                for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                    if tensor is not None:
                        total += tensor.numel() * tensor.element_size()
        return total
    for layer in cache:
        for tensor in layer:
            total += tensor.numel() * tensor.element_size()
    return total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", "--min-calls", dest="repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--inputs")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    if args.inputs:
        with open(args.inputs, encoding="utf-8") as f:
            batch = json.load(f)["texts"][: args.batch]
        if len(batch) != args.batch:
            raise SystemExit(f"--batch {args.batch} but {len(batch)} texts in {args.inputs}")
    else:
        batch = texts(args.batch)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = T5ForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32)
    model.eval()
    options = {
        "do_sample": False,
        "num_beams": 1,
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "no_repeat_ngram_size": 0,
        "repetition_penalty": 1.0,
        "decoder_start_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "use_cache": True,
    }

    def call(**extra):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=512, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                                 **options, **extra)
        sequences = out.sequences if extra else out
        # The decoder start token plus exactly new_tokens generated ones per row.
        assert tuple(sequences.shape) == (args.batch, args.new_tokens + 1), tuple(sequences.shape)
        decoded = tokenizer.batch_decode(sequences[:, 1:], skip_special_tokens=True)
        assert len(decoded) == args.batch
        return enc, out

    enc, first = call(return_dict_in_generate=True)
    seconds = []
    start = time.perf_counter()
    while len(seconds) < max(args.repeats, 1) or time.perf_counter() - start < args.min_seconds:
        t = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t)
    tokens = args.batch * args.new_tokens
    figures = {
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "seconds": seconds,
        "per_s": tokens * len(seconds) / sum(seconds),
        "tokens_per_s_median": tokens / statistics.median(seconds),
        "token_ids": first.sequences[:, 1:].tolist(),
        "kv_cache_bytes": cache_bytes(first.past_key_values),
        "threads": args.threads,
        "input_tokens": enc["attention_mask"].sum(dim=1).tolist(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
