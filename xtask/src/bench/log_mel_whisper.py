"""The transformers side of `cargo xtask bench audio`: `WhisperFeatureExtractor` on 10
minutes of 16 kHz audio, in the bench venv.

Two modes:

- `--make-audio FILE --seconds S`: the bench's audio, made once at set-up: S seconds of
  16 kHz mono 16-bit WAV (a phase-continuous tone that steps through 250, 500, … Hz every 5
  seconds under a little seeded noise, so every chunk differs).
- timing (default, `--audio FILE [--path numpy|torch] [--n-mels N]`): reads the WAV as
  float32 (`s16 / 32768`, as a decoder gives it), cuts it into 30-second chunks (the
  extractor itself only ever looks at the first 30 s of an input), and times
  `extractor(chunks, sampling_rate=16000, return_tensors="np")`, after one warm-up call,
  for at least --min-seconds and --min-calls calls. `--path numpy` forces the extractor's
  NumPy implementation (the issue's anchor: what it runs without PyTorch); `torch` is
  what it runs when PyTorch is installed. Prints one JSON object: `seconds` (per call),
  `chunks`, `audio_seconds`, `probe` (the features of chunk 0, mel 10, frames 0..32 and
  of the last chunk, mel 40, frames 0..32, for xtask to compare with ours), versions.
"""

import argparse
import json
import os
import time
import wave

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

RATE = 16_000
CHUNK = 30 * RATE


def make_audio(path: str, seconds: int) -> None:
    import numpy as np

    rng = np.random.default_rng(20261203)
    t = np.arange(seconds * RATE, dtype=np.float64) / RATE
    freq = 250.0 * (1 + (np.floor(t / 5.0) % 12))
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    signal = 0.5 * np.sin(phase) + 0.02 * rng.standard_normal(t.size)
    pcm = np.clip(np.round(signal * 32768), -32768, 32767).astype("<i2")
    with wave.open(path, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(pcm.tobytes())


def read_wav(path: str):
    import numpy as np

    with wave.open(path, "rb") as audio:
        assert audio.getframerate() == RATE and audio.getnchannels() == 1
        assert audio.getsampwidth() == 2
        frames = audio.readframes(audio.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def timed(call, min_seconds: float, min_calls: int) -> list:
    call()  # warm-up
    samples = []
    start = time.perf_counter()
    while len(samples) < min_calls or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--make-audio")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--audio")
    parser.add_argument("--path", choices=["numpy", "torch"], default="numpy")
    parser.add_argument("--n-mels", type=int, default=80)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--min-calls", type=int, default=3)
    args = parser.parse_args()
    if args.make_audio:
        make_audio(args.make_audio, args.seconds)
        return

    import numpy as np
    import transformers
    from transformers.models.whisper import feature_extraction_whisper as fe_module

    if args.path == "numpy":
        # What the extractor runs where PyTorch is not installed.
        fe_module.is_torch_available = lambda: False
    else:
        import torch

        torch.set_num_threads(args.threads)
    extractor = fe_module.WhisperFeatureExtractor(feature_size=args.n_mels)
    samples = read_wav(args.audio)
    chunks = [samples[i : i + CHUNK] for i in range(0, samples.size, CHUNK)]

    def run():
        return extractor(chunks, sampling_rate=RATE, return_tensors="np")["input_features"]

    features = run()
    assert features.shape == (len(chunks), args.n_mels, 3000), features.shape
    seconds = timed(run, args.min_seconds, args.min_calls)
    probe = [float(v) for v in features[0, 10, :32]] + [float(v) for v in features[-1, 40, :32]]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "chunks": len(chunks),
                "audio_seconds": samples.size / RATE,
                "probe": probe,
                "path": args.path,
                "transformers": transformers.__version__,
                "numpy": np.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
