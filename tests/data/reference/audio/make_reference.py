"""Makes the Whisper log-mel reference features of the `audio_log_mel` preset (issue 17).

Run from the workspace root, after `cargo xtask setup` (asset `audio`), with the bench venv
(torch, transformers 5.17, numpy; no soundfile is needed: only WAV inputs are read, with the
standard library's `wave` and numpy):

    .dp-assets/bench-venv/bin/python tests/data/reference/audio/make_reference.py

It reads `.dp-assets/audio/`, checks every input against the sha256 in its `manifest.json`, and
rewrites this folder's `*.f32`, `*.f64`, `features.json` and
`whisper-{80,128}/preprocessor_config.json` (see README.md). The output is byte-identical from run to run.
"""

from __future__ import annotations

import hashlib
import json
import sys
import wave
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import WhisperFeatureExtractor

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[3]
AUDIO = ROOT / ".dp-assets" / "audio"
RATE = 16000
N_SAMPLES = 480000
N_FRAMES = 3000
MEL_SIZES = (80, 128)

# The formulas of xtask/scripts/make_test_audio.py, rendered at 16 kHz without quantization:
# the comparison targets of the inputs at other rates (checked below against its s16 WAV).
TWO_TONE = ((0.5, 440.0), (0.3, 1000.0))
SECOND_CHANNEL = ((0.4, 660.0),)
SHORT_SECONDS = 3.0


def tones(components, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(round(rate * seconds), dtype=np.float64) / rate
    out = np.zeros_like(t)
    for amplitude, freq in components:
        out += amplitude * np.sin(2.0 * np.pi * freq * t)
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_wav(path: Path) -> np.ndarray:
    """Mono float32: s16 / 32768; the IEEE float32 WAV (format tag 3) as stored."""
    data = path.read_bytes()
    tag = int.from_bytes(data[20:22], "little")
    if tag == 3:
        # The script's float WAV has the canonical 44-byte header.
        assert data[36:40] == b"data", path
        channels = int.from_bytes(data[22:24], "little")
        assert channels == 1, path
        return np.frombuffer(data[44:], dtype="<f4").astype(np.float32)
    with wave.open(str(path)) as w:
        assert w.getnchannels() == 1 and w.getsampwidth() == 2 and w.getframerate() == RATE, path
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return (pcm.astype(np.float32) / np.float32(32768.0)).astype(np.float32)


def extract(fe: WhisperFeatureExtractor, x: np.ndarray, **kwargs) -> np.ndarray:
    out = fe(x, sampling_rate=RATE, return_tensors="np", **kwargs)["input_features"]
    assert out.shape[0] == 1 and out.dtype == np.float32, (out.shape, out.dtype)
    return out[0]


def numpy_path(fe: WhisperFeatureExtractor, x: np.ndarray) -> np.ndarray:
    """The extractor's torch-free path on the same padded input (float64 rfft in audio_utils)."""
    padded = np.zeros(N_SAMPLES, dtype=np.float32)
    n = min(len(x), N_SAMPLES)
    padded[:n] = x[:n]
    return fe._np_extract_fbank_features(padded[None, :], "cpu")[0]


def main() -> None:
    torch.set_num_threads(1)
    manifest = json.loads((AUDIO / "manifest.json").read_text())["files"]

    def load(name: str) -> tuple[np.ndarray, str]:
        data = (AUDIO / name).read_bytes()
        digest = sha256(data)
        if digest != manifest[name]["sha256"]:
            raise SystemExit(f"{name}: sha256 {digest} is not the manifest's; run xtask setup")
        return read_wav(AUDIO / name), digest

    two_tone, _ = load("two_tone_16k_s16.wav")
    analytic = tones(TWO_TONE, RATE, SHORT_SECONDS)
    # The formulas here are the generator's: its s16 quantization is this file's samples.
    expected = np.clip(np.round(analytic * 32768.0), -32768, 32767) / 32768.0
    assert np.array_equal(two_tone.astype(np.float64), expected), "formula mismatch"
    long, _ = load("long_65s_16k_s16.wav")

    # name -> (samples, source audio file or None, description)
    inputs: dict[str, tuple[np.ndarray, str | None, str]] = {}
    sources: dict[str, str] = {}
    for key, name in (
        ("two_tone_16k_s16", "two_tone_16k_s16.wav"),
        ("noise_16k_f32", "noise_16k_f32.wav"),
        ("speech_16k_s16", "speech_16k_s16.wav"),
    ):
        x, digest = load(name)
        sources[name] = digest
        inputs[key] = (x, name, f"all of {name}")
    sources["long_65s_16k_s16.wav"] = manifest["long_65s_16k_s16.wav"]["sha256"]
    for k, (start, end) in enumerate(((0, 480000), (480000, 960000), (960000, 1040000))):
        inputs[f"long_65s_16k_s16.chunk{k}"] = (
            long[start:end],
            "long_65s_16k_s16.wav",
            f"samples [{start}, {end}) of long_65s_16k_s16.wav "
            f"({start // RATE} s to {end // RATE} s)",
        )
    inputs["two_tone_analytic_16k"] = (
        analytic.astype(np.float32),
        None,
        "the two-tone 0.5 sin(2 pi 440 t) + 0.3 sin(2 pi 1000 t), 3 s, rendered at 16 kHz in "
        "float64 and cast to float32 (no quantization): the target of two_tone_8k_s16.wav, of "
        "channel 0 of the 44.1 kHz files, and of the lossless 16 kHz files up to s16 quantization",
    )
    mix = 0.5 * (analytic + tones(SECOND_CHANNEL, RATE, SHORT_SECONDS))
    inputs["two_tone_stereo_mix_analytic_16k"] = (
        mix.astype(np.float32),
        None,
        "the mean of both channels of the 44.1 kHz stereo files (two-tone and 0.4 sin(2 pi 660 "
        "t)), rendered at 16 kHz in float64 and cast to float32: the target of a downmixed, "
        "resampled two_tone_44k_stereo*",
    )

    versions = {
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "torch": torch.__version__.split("+")[0],
        "python": ".".join(map(str, sys.version_info[:3])),
    }
    index: dict = {
        "generator": "tests/data/reference/audio/make_reference.py",
        "versions": versions,
        "extractor": {
            "class": "WhisperFeatureExtractor",
            "call": "fe(x, sampling_rate=16000, return_tensors='np') (padding='max_length', "
            "truncation=True: padded with zeros or cut to n_samples 480000)",
            "path": "_torch_extract_fbank_features (torch is installed): float32 torch.stft, "
            "center=True, reflect padding, periodic Hann window",
            "settings": {},
        },
        "layout": "raw little-endian float32, C order [n_mels, frames]; only the first "
        "`stored_frames` of the 3000 frames are stored: every later frame equals `pad_value` "
        "(float32, exactly; it is (max - 8 + 4) / 4, the clamp floor)",
        "source_audio_sha256": sources,
        "features": {},
        "unpadded": {},
        "mel_filters": {},
        "truncation": {},
    }
    for f in sorted(HERE.glob("*.f32")) + sorted(HERE.glob("*.f64")):
        f.unlink()

    for n_mels in MEL_SIZES:
        fe = WhisperFeatureExtractor(feature_size=n_mels)
        index["extractor"]["settings"][str(n_mels)] = {
            k: getattr(fe, k)
            for k in (
                "feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft",
                "n_samples", "nb_max_frames", "padding_value", "dither", "padding_side",
                "return_attention_mask",
            )
        }
        filters = np.ascontiguousarray(fe.mel_filters, dtype="<f8")
        name = f"mel_filters.{n_mels}.f64"
        (HERE / name).write_bytes(filters.tobytes())
        index["mel_filters"][name] = {
            "shape": list(filters.shape),
            "dtype": "float64",
            "layout": "[n_fft / 2 + 1 frequency bins, n_mels], as "
            "WhisperFeatureExtractor().mel_filters (mel_filter_bank 0 to 8000 Hz, norm and "
            "mel_scale 'slaney')",
            "sha256": sha256(filters.tobytes()),
        }

        for key, (x, source, description) in inputs.items():
            feats = extract(fe, x)
            assert feats.shape == (n_mels, N_FRAMES), feats.shape
            pad_value = np.float32(feats.min())
            # The first frame from which every value is the clamp floor.
            floor = np.all(feats == pad_value, axis=0)
            stored = N_FRAMES
            while stored > 0 and floor[stored - 1]:
                stored -= 1
            assert np.all(feats[:, stored:] == pad_value)
            data = np.ascontiguousarray(feats[:, :stored], dtype="<f4").tobytes()
            name = f"{key}.{n_mels}.f32"
            (HERE / name).write_bytes(data)
            np_feats = numpy_path(fe, x)
            index["features"][name] = {
                "input": key,
                "source_audio": source,
                "source_audio_sha256": sources.get(source) if source else None,
                "description": description,
                "input_samples": int(min(len(x), N_SAMPLES)),
                "n_mels": n_mels,
                "full_shape": [n_mels, N_FRAMES],
                "stored_shape": [n_mels, stored],
                "pad_value": float(pad_value),
                "max": float(feats.max()),
                "sha256": sha256(data),
                "max_abs_diff_numpy_path": float(np.abs(np_feats - feats).max()),
            }

        # No padding: padding='longest' on one sequence pads nothing; the last STFT frame is
        # dropped, so L samples give L // 160 frames; the clamp uses this input's own max.
        for key, length in (("two_tone_16k_s16", 48000), ("two_tone_16k_s16.first16037", 16037)):
            x = inputs["two_tone_16k_s16"][0][:length]
            feats = extract(fe, x, padding="longest")
            assert feats.shape == (n_mels, length // 160), feats.shape
            data = np.ascontiguousarray(feats, dtype="<f4").tobytes()
            name = f"{key}.nopad.{n_mels}.f32"
            (HERE / name).write_bytes(data)
            padded = extract(fe, x)
            index["unpadded"][name] = {
                "input": f"the first {length} samples of two_tone_16k_s16.wav",
                "source_audio": "two_tone_16k_s16.wav",
                "source_audio_sha256": sources["two_tone_16k_s16.wav"],
                "call": "fe(x, sampling_rate=16000, return_tensors='np', padding='longest')",
                "input_samples": length,
                "shape": [n_mels, length // 160],
                "sha256": sha256(data),
                # Frames that differ from the padded features: the last ones, whose window
                # reaches past the end (reflect padding here, zeros there).
                "frames_differing_from_padded": [
                    int(i)
                    for i in np.nonzero(np.any(feats != padded[:, : feats.shape[1]], axis=0))[0]
                ],
            }

        # More than 30 s: truncation=True keeps the first 480000 samples (no chunking).
        whole = extract(fe, long)
        chunk0 = extract(fe, inputs["long_65s_16k_s16.chunk0"][0])
        index["truncation"][str(n_mels)] = {
            "input": "all 1040000 samples of long_65s_16k_s16.wav",
            "shape": list(whole.shape),
            "equals_chunk0": bool(np.array_equal(whole, chunk0)),
        }

    # The field set of openai/whisper-tiny's (80) and whisper-large-v3's (128) files.
    for n_mels in MEL_SIZES:
        config = {
            "chunk_length": 30,
            "feature_extractor_type": "WhisperFeatureExtractor",
            "feature_size": n_mels,
            "hop_length": 160,
            "n_fft": 400,
            "n_samples": 480000,
            "nb_max_frames": 3000,
            "padding_side": "right",
            "padding_value": 0.0,
            "processor_class": "WhisperProcessor",
            "return_attention_mask": False,
            "sampling_rate": 16000,
        }
        folder = HERE / f"whisper-{n_mels}"
        folder.mkdir(exist_ok=True)
        (folder / "preprocessor_config.json").write_text(json.dumps(config, indent=2) + "\n")
        # The configs load into the same extractor as the settings above.
        fe = WhisperFeatureExtractor.from_pretrained(folder)
        assert fe.feature_size == n_mels and np.array_equal(
            fe.mel_filters, WhisperFeatureExtractor(feature_size=n_mels).mel_filters
        )

    (HERE / "features.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
