"""The transformers side of `cargo xtask bench whisper` (the anchor), on PyTorch CPU, float32.

    python whisper_transformers.py MODEL_DIR --audio FILE [--language en] [--new-tokens 64]
        [--repeats R] [--min-seconds S] [--threads T] [--features numpy|torch]

Loads MODEL_DIR with `WhisperForConditionalGeneration.from_pretrained`, `WhisperFeatureExtractor`
and `AutoTokenizer`, and transcribes --audio (a 16 kHz mono 16-bit WAV of at most 30 s, as the
Rust runner tests/benches/whisper_candle.rs reads it) by greedy `generate` with the language
given, the task `transcribe`, no timestamps and min_new_tokens = max_new_tokens = --new-tokens,
so the end of text is never chosen early and every call produces exactly that many tokens. A call
is what `ModelManager::transcribe` does: read the WAV into float32 samples, make the log-mel
features (the extractor's NumPy implementation by default, what it runs without PyTorch;
`--features torch` is its PyTorch one), generate, decode the new tokens to text. One warm-up call,
then timed calls for at least --repeats calls (alias --min-calls) and --min-seconds; prints one
JSON line:

    {"seconds": [...], "seconds_per_call": ..., "audio_seconds": 30.0, "new_tokens": 64,
     "token_ids": [[...]], "kv_cache_bytes": ..., "text": "...", "threads": T,
     "features": "numpy", "torch": "...", "transformers": "..."}

`seconds_per_call` is the timed calls' mean (as the Rust runner computes it; xtask reads this
one). `token_ids` are the new tokens of the warm-up call (the 4 prompt tokens left out), one list
for the one 30-second chunk, which xtask compares with the Rust runner's; `kv_cache_bytes` the
bytes of the tensors of its `past_key_values` at the end (every layer's self-attention keys and
values of the decoded positions, and the cross-attention ones of the 1500 encoder positions).
"""

import argparse
import json
import os
import statistics
import time
import wave

# Never reach a hub: the model is a local folder.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

RATE = 16_000
CHUNK = 30 * RATE
# The decoder prompt: <|startoftranscript|> <|en|> <|transcribe|> <|notimestamps|>.
PROMPT_LEN = 4


def read_wav(path: str):
    """The samples of a 16 kHz mono s16 WAV as float32 in [-1, 1) (`s16 / 32768`)."""
    import numpy as np

    with wave.open(path, "rb") as audio:
        assert audio.getframerate() == RATE and audio.getnchannels() == 1, path
        assert audio.getsampwidth() == 2, path
        frames = audio.readframes(audio.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


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
    parser.add_argument("--audio", required=True)
    parser.add_argument("--language", default="en")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", "--min-calls", dest="repeats", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--features", choices=["numpy", "torch"], default="numpy")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoTokenizer, WhisperForConditionalGeneration
    from transformers.models.whisper import feature_extraction_whisper as fe_module

    # Not the notes on generation_config defaults: every option is passed explicitly.
    transformers.logging.set_verbosity_error()

    if args.features == "numpy":
        # What the extractor runs where PyTorch is not installed.
        fe_module.is_torch_available = lambda: False
    extractor = fe_module.WhisperFeatureExtractor.from_pretrained(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(args.model_dir, dtype=torch.float32)
    model.eval()
    gc = model.generation_config
    options = {
        "language": args.language,
        "task": "transcribe",
        "return_timestamps": False,
        "num_beams": 1,
        "do_sample": False,
        "max_new_tokens": args.new_tokens,
        "min_new_tokens": args.new_tokens,
        "num_return_sequences": 1,
        "no_repeat_ngram_size": 0,
        "repetition_penalty": 1.0,
        "condition_on_prev_tokens": False,
        "compression_ratio_threshold": None,
        "logprob_threshold": None,
        "no_speech_threshold": None,
        "decoder_start_token_id": gc.decoder_start_token_id,
        "eos_token_id": gc.eos_token_id,
        "pad_token_id": gc.pad_token_id,
        "suppress_tokens": list(gc.suppress_tokens),
        "begin_suppress_tokens": list(gc.begin_suppress_tokens),
        "use_cache": True,
    }

    def call(**extra):
        samples = read_wav(args.audio)
        assert samples.size <= CHUNK, f"{args.audio}: more than 30 s (one chunk only here)"
        features = extractor(
            samples, sampling_rate=RATE, padding="max_length", truncation=True,
            return_attention_mask=False, return_tensors="np",
        )["input_features"]
        with torch.inference_mode():
            out = model.generate(torch.from_numpy(features), **options, **extra)
        # With return_dict_in_generate, the prompt and then the new tokens; without it (a user's
        # default), the new tokens alone. Either way exactly new_tokens of them.
        new = out.sequences[:, PROMPT_LEN:] if extra else out
        assert tuple(new.shape) == (1, args.new_tokens), tuple(new.shape)
        text = tokenizer.decode(new[0], skip_special_tokens=True)
        return samples, out, text

    samples, first, text = call(return_dict_in_generate=True)
    seconds = []
    start = time.perf_counter()
    while len(seconds) < max(args.repeats, 1) or time.perf_counter() - start < args.min_seconds:
        t = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - t)
    cache = getattr(first, "past_key_values", None)
    figures = {
        "seconds": seconds,
        "seconds_per_call": sum(seconds) / len(seconds),
        "seconds_median": statistics.median(seconds),
        "audio_seconds": samples.size / RATE,
        "new_tokens": args.new_tokens,
        "token_ids": [first.sequences[0, PROMPT_LEN:].tolist()],
        "prompt_ids": first.sequences[0, :PROMPT_LEN].tolist(),
        "kv_cache_bytes": cache_bytes(cache) if cache is not None else None,
        "text": text,
        "threads": args.threads,
        "features": args.features,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
