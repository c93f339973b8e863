"""Writes the deterministic test audio of the audio presets (issue 17).

Run by `cargo xtask setup` (asset `audio`) in the hash-pinned venv of
xtask/requirements/python-audio.txt (numpy, soundfile, and the pyannote.audio wheel for its speech
recording; pyannote is never imported):

    python make_test_audio.py OUT_DIR

OUT_DIR receives the files of FILES below, `manifest.json` (format, rate, channels, frames and
signal of each file) and `README.md`. Every byte is deterministic (fixed seeds, closed-form
signals, no timestamps), so `xtask/src/setup/audio.rs` pins the sha256 of each file.

Signals (t in seconds, phases start at 0):

- two-tone: 0.5 sin(2 pi 440 t) + 0.3 sin(2 pi 1000 t), 3 s, the same continuous signal rendered
  at 16 kHz, 8 kHz and 44.1 kHz; the 44.1 kHz renderings are stereo with channel 1 the tone
  0.4 sin(2 pi 660 t) (so a downmix is mean of both channels);
- noise: Gaussian white noise, std 0.1, numpy default_rng(17), 3 s at 16 kHz, float32 WAV;
- chirp: 0.5 sin(2 pi (100 t + (7000 - 100) t^2 / (2 * 3))), linear 100 Hz -> 7 kHz in 3 s at
  16 kHz;
- long: 65 s at 16 kHz, 0.5 sin of a tone whose frequency is 250 (k + 1) Hz in the k-th 5 s segment
  (k = 0..12), phase-continuous across the changes;
- speech: the 30 s recording pyannote.audio 4.0.7 ships (pyannote/audio/sample/sample.wav, 16 kHz
  mono PCM s16), copied unchanged with its transcript (sample.stm) and the wheel's LICENSE.

Integer PCM is round(x * 2^(bits - 1)) clipped to the type's range (u8 adds 128), so dividing by
2^(bits - 1) (32768 for s16) decodes to within one step of the analytic value. WAV files are written
here byte by byte (PCM format tag 1 for u8/s16/s24/s32, IEEE float tag 3 for float32); FLAC, MP3
and Ogg/Vorbis by libsndfile through soundfile. libsndfile gives each Ogg stream a random serial
number, so the Ogg pages are rewritten with a fixed serial (and their CRC recomputed); every other
byte of the encoders' output is deterministic.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import shutil
import struct
import sys
import wave
from pathlib import Path

import numpy as np
import soundfile as sf

TWO_TONE = ((0.5, 440.0), (0.3, 1000.0))
SECOND_CHANNEL = ((0.4, 660.0),)
SHORT_SECONDS = 3.0
LONG_SECONDS = 65
LONG_SEGMENT_SECONDS = 5
NOISE_SEED = 17
NOISE_STD = 0.1
CHIRP_F0, CHIRP_F1 = 100.0, 7000.0

SPEECH_DIST = "pyannote.audio"
SPEECH_MEMBER = "pyannote/audio/sample/sample.wav"
SPEECH_TRANSCRIPT = "pyannote/audio/sample/sample.stm"

# The fixed Ogg stream serial number the Ogg files are rewritten with.
OGG_SERIAL = 0x64704D31


def tones(components, rate: int, seconds: float) -> np.ndarray:
    """The sum of a sin(2 pi f t) at `rate` Hz for `seconds`, float64."""
    t = np.arange(round(rate * seconds), dtype=np.float64) / rate
    out = np.zeros_like(t)
    for amplitude, freq in components:
        out += amplitude * np.sin(2.0 * np.pi * freq * t)
    return out


def two_tone(rate: int) -> np.ndarray:
    return tones(TWO_TONE, rate, SHORT_SECONDS)


def two_tone_stereo(rate: int) -> np.ndarray:
    """[frames, 2]: the two-tone, and the 660 Hz tone."""
    return np.stack([two_tone(rate), tones(SECOND_CHANNEL, rate, SHORT_SECONDS)], axis=1)


def chirp(rate: int) -> np.ndarray:
    t = np.arange(round(rate * SHORT_SECONDS), dtype=np.float64) / rate
    k = (CHIRP_F1 - CHIRP_F0) / SHORT_SECONDS
    return 0.5 * np.sin(2.0 * np.pi * (CHIRP_F0 * t + 0.5 * k * t * t))


def long_tones(rate: int) -> np.ndarray:
    segment = rate * LONG_SEGMENT_SECONDS
    n = rate * LONG_SECONDS
    freq = 250.0 * (np.arange(n) // segment + 1)
    # Phase-continuous: the phase advances by 2 pi f / rate per sample; sample 0 has phase 0.
    phase = np.concatenate([[0.0], np.cumsum(2.0 * np.pi * freq[:-1] / rate)])
    return 0.5 * np.sin(phase)


def noise(rate: int) -> np.ndarray:
    rng = np.random.default_rng(NOISE_SEED)
    return (rng.standard_normal(round(rate * SHORT_SECONDS)) * NOISE_STD).astype(np.float32)


def quantize(x: np.ndarray, bits: int) -> np.ndarray:
    scale = float(1 << (bits - 1))
    q = np.round(np.asarray(x, dtype=np.float64) * scale)
    return np.clip(q, -scale, scale - 1).astype(np.int64)


def wav_bytes(x: np.ndarray, rate: int, sample: str) -> bytes:
    """A canonical 44-byte-header WAV (RIFF, fmt, data) of x ([frames] or [frames, channels])."""
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    channels = x.shape[1]
    if sample == "f32":
        tag, width = 3, 4
        data = np.ascontiguousarray(x, dtype="<f4").tobytes()
    else:
        bits = {"u8": 8, "s16": 16, "s24": 24, "s32": 32}[sample]
        tag, width = 1, bits // 8
        q = quantize(x, bits)
        if sample == "u8":
            data = (q + 128).astype(np.uint8).tobytes()
        elif sample == "s16":
            data = q.astype("<i2").tobytes()
        elif sample == "s32":
            data = q.astype("<i4").tobytes()
        else:
            # Three little-endian bytes per sample: the low three of the int32.
            data = q.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    fmt = struct.pack(
        "<HHIIHH", tag, channels, rate, rate * channels * width, channels * width, width * 8
    )
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(data)) + data
    if len(data) % 2:
        body += b"\0"
    return b"RIFF" + struct.pack("<I", len(body)) + body


def encoded_bytes(x: np.ndarray, rate: int, fmt: str) -> bytes:
    """x encoded by libsndfile: FLAC (PCM_16 of the s16 quantization), MP3 or Ogg/Vorbis."""
    buf = io.BytesIO()
    if fmt == "flac":
        data = quantize(x, 16).astype(np.int16)
        sf.write(buf, data, rate, format="FLAC", subtype="PCM_16")
    elif fmt == "mp3":
        sf.write(buf, np.asarray(x, dtype=np.float32), rate, format="MP3", subtype="MPEG_LAYER_III")
    elif fmt == "ogg":
        sf.write(buf, np.asarray(x, dtype=np.float32), rate, format="OGG", subtype="VORBIS")
        return fix_ogg_serial(buf.getvalue(), OGG_SERIAL)
    else:
        raise ValueError(fmt)
    return buf.getvalue()


def _ogg_crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ 0x04C11DB7) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[((crc >> 24) & 0xFF) ^ b]
    return crc


def fix_ogg_serial(data: bytes, serial: int) -> bytes:
    """Every page of a single-stream Ogg file with its serial set to `serial`, CRCs redone."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"no Ogg page at byte {pos}")
        segments = data[pos + 26]
        table = data[pos + 27 : pos + 27 + segments]
        length = 27 + segments + sum(table)
        page = bytearray(data[pos : pos + length])
        page[14:18] = struct.pack("<I", serial)
        page[22:26] = b"\0\0\0\0"
        page[22:26] = struct.pack("<I", ogg_crc(bytes(page)))
        out += page
        pos += length
    return bytes(out)


def speech_file(member: str) -> Path:
    """A file of the installed pyannote.audio wheel, found without importing pyannote."""
    dist = importlib.metadata.distribution(SPEECH_DIST)
    path = Path(dist.locate_file(member))
    if not path.is_file():
        raise SystemExit(f"{SPEECH_DIST} {dist.version} lacks {member}")
    return path


def speech_license() -> tuple[str, str]:
    dist = importlib.metadata.distribution(SPEECH_DIST)
    for f in dist.files or []:
        if f.name == "LICENSE":
            return dist.version, f.read_text()
    raise SystemExit(f"{SPEECH_DIST} {dist.version} has no LICENSE file")


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: make_test_audio.py OUT_DIR")
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict] = {}

    def put(name: str, data: bytes, *, fmt, sample, rate, channels, frames, signal) -> None:
        (out / name).write_bytes(data)
        manifest[name] = {
            "format": fmt,
            "sample": sample,
            "rate": rate,
            "channels": channels,
            "frames": frames,
            "seconds": frames / rate,
            "signal": signal,
            "sha256": hashlib.sha256(data).hexdigest(),
        }

    short = round(16000 * SHORT_SECONDS)
    mono = "two-tone 0.5 sin(2 pi 440 t) + 0.3 sin(2 pi 1000 t)"
    stereo = mono + "; channel 1: 0.4 sin(2 pi 660 t)"
    for sample in ("s16", "u8", "s24", "s32"):
        put(f"two_tone_16k_{sample}.wav", wav_bytes(two_tone(16000), 16000, sample),
            fmt="wav", sample=sample, rate=16000, channels=1, frames=short, signal=mono)
    put("two_tone_8k_s16.wav", wav_bytes(two_tone(8000), 8000, "s16"), fmt="wav", sample="s16",
        rate=8000, channels=1, frames=round(8000 * SHORT_SECONDS), signal=mono)
    frames_44k = round(44100 * SHORT_SECONDS)
    put("two_tone_44k_stereo_s16.wav", wav_bytes(two_tone_stereo(44100), 44100, "s16"),
        fmt="wav", sample="s16", rate=44100, channels=2, frames=frames_44k, signal=stereo)
    put("noise_16k_f32.wav", wav_bytes(noise(16000), 16000, "f32"), fmt="wav", sample="f32",
        rate=16000, channels=1, frames=short,
        signal=f"white Gaussian noise, std {NOISE_STD}, numpy default_rng({NOISE_SEED})")
    put("chirp_16k_s16.wav", wav_bytes(chirp(16000), 16000, "s16"), fmt="wav", sample="s16",
        rate=16000, channels=1, frames=short,
        signal="0.5 sin(2 pi (100 t + 6900 t^2 / 6)): linear chirp 100 Hz -> 7 kHz over 3 s")
    put("long_65s_16k_s16.wav", wav_bytes(long_tones(16000), 16000, "s16"), fmt="wav",
        sample="s16", rate=16000, channels=1, frames=16000 * LONG_SECONDS,
        signal="0.5 sin, 250 (k + 1) Hz in the k-th 5 s segment (k = 0..12), phase-continuous")
    for ext, sample in (("flac", "s16"), ("mp3", "mpeg-layer-3"), ("ogg", "vorbis")):
        put(f"two_tone_44k_stereo.{ext}", encoded_bytes(two_tone_stereo(44100), 44100, ext),
            fmt=ext, sample=sample, rate=44100, channels=2, frames=frames_44k, signal=stereo)
        put(f"two_tone_16k.{ext}", encoded_bytes(two_tone(16000), 16000, ext), fmt=ext,
            sample=sample, rate=16000, channels=1, frames=short, signal=mono)

    wav_path = speech_file(SPEECH_MEMBER)
    wav = wav_path.read_bytes()
    with wave.open(str(wav_path)) as w:
        params = w.getparams()
    if (params.nchannels, params.sampwidth, params.framerate) != (1, 2, 16000):
        raise SystemExit(f"{wav_path} is not 16 kHz mono s16: {params}")
    version, license_text = speech_license()
    source = f"{SPEECH_DIST}=={version} wheel, {SPEECH_MEMBER}"
    put("speech_16k_s16.wav", wav, fmt="wav", sample="s16", rate=16000, channels=1,
        frames=params.nframes, signal=f"speech (two speakers, English): {source}")
    transcript = speech_file(SPEECH_TRANSCRIPT).read_bytes()
    (out / "speech_16k_s16.stm").write_bytes(transcript)
    (out / "speech_LICENSE.txt").write_text(license_text)

    # The encoders' frame counts are what soundfile reads back (MP3 and Vorbis may pad).
    for name, entry in manifest.items():
        if entry["format"] != "wav":
            info = sf.info(str(out / name))
            entry["decoded_frames"] = info.frames
            data, _ = sf.read(str(out / name), dtype="float32", always_2d=True)
            entry["decoded_f32_sha256"] = hashlib.sha256(data.tobytes()).hexdigest()
    manifest_meta = {
        "generator": "xtask/scripts/make_test_audio.py",
        "numpy": np.__version__,
        "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "speech_source": source,
        "files": manifest,
    }
    (out / "manifest.json").write_text(json.dumps(manifest_meta, indent=2, sort_keys=True) + "\n")
    (out / "README.md").write_text(readme(source, version))


def readme(source: str, version: str) -> str:
    return f"""# Test audio of the audio presets

Written by `xtask/scripts/make_test_audio.py` (asset `audio` of `cargo xtask setup`); every file is
deterministic and its sha256 is pinned in `xtask/src/setup/audio.rs`. `manifest.json` lists each
file's format, sample type, rate, channels, frames and signal (see the script's docstring for the
formulas).

`speech_16k_s16.wav` is the 30 s recording shipped in the `{SPEECH_DIST}` {version} wheel on PyPI
at `{SPEECH_MEMBER}` (16 kHz mono PCM s16, two English speakers on a telephone line), copied
unchanged; `speech_16k_s16.stm` is the transcript next to it in the wheel
(`{SPEECH_TRANSCRIPT}`) and `speech_LICENSE.txt` the wheel's license (MIT, CNRS). The wheel does
not say where the recording itself comes from.

The Ogg/Vorbis files are rewritten with the fixed stream serial 0x{OGG_SERIAL:08X} (libsndfile picks
a random one); MP3 (LAME) and FLAC bytes are what libsndfile writes.
"""


if __name__ == "__main__":
    main()
