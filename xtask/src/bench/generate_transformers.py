"""The transformers side of the T5 generation benchmark (the anchor), on PyTorch CPU, float32.

    python generate_transformers.py MODEL_DIR --batch N --new-tokens 64 --repeats R [--threads T]

Loads MODEL_DIR with `T5ForConditionalGeneration.from_pretrained` and `AutoTokenizer`, makes N
distinct input texts of about 20 tokens each (padded into one batch), and runs greedy `generate`
with min_new_tokens = max_new_tokens = --new-tokens, so EOS never ends a row early and every
run produces exactly N * new_tokens tokens. One warm-up run, then R timed runs; prints one JSON
line:

    {"batch": N, "new_tokens": 64, "seconds": [...], "tokens_per_s_median": ...,
     "threads": T, "input_tokens": [...], "torch": "...", "transformers": "..."}

`tokens_per_s_median` is N * new_tokens divided by the median of `seconds`; each run includes
the encoder pass (tokenization is done once, outside the timing).
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = T5ForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32)
    model.eval()
    enc = tokenizer(texts(args.batch), padding=True, truncation=True, max_length=512, return_tensors="pt")
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

    def run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **options)
        seconds = time.perf_counter() - start
        # The decoder start token plus exactly new_tokens generated ones per row.
        assert tuple(out.shape) == (args.batch, args.new_tokens + 1), tuple(out.shape)
        return seconds

    run()
    seconds = [run() for _ in range(max(args.repeats, 1))]
    figures = {
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "seconds": seconds,
        "tokens_per_s_median": args.batch * args.new_tokens / statistics.median(seconds),
        "threads": args.threads,
        "input_tokens": enc["attention_mask"].sum(dim=1).tolist(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
