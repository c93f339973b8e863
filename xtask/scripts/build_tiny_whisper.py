"""Builds tiny random-weight Whisper speech-recognition models in the Hugging Face layout, without
PyTorch (issue 17).

Run by `cargo xtask setup` (asset `tiny-whisper`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt (only numpy and the standard library are used):

    python build_tiny_whisper.py OUT_DIR

OUT_DIR receives one folder per model of MODELS below, each loadable by transformers'
`WhisperForConditionalGeneration.from_pretrained` / `WhisperProcessor.from_pretrained` (and
`AutoTokenizer`, `WhisperFeatureExtractor`) and by candle-transformers' `whisper` module:

- `tiny-whisper`: 80 mel bins, d_model 64, 4 + 4 heads, 2 + 2 layers, FFN 256 (80 bins: the features of every
  Whisper up to large-v2);
- `tiny-whisper-128`: 128 mel bins (the large-v3 feature layout), d_model 96, 6 + 6 heads,
  3 encoder and 2 decoder layers, FFN 192: other shapes, so code that reads the config is checked.

Both: max_source_positions 1500 (30 s of audio: 3000 mel frames, halved by conv2's stride 2),
max_target_positions 448, `activation_function` gelu (exact erf GELU), `scale_embedding` false,
pre-LayerNorm blocks, `proj_out` tied to `model.decoder.embed_tokens.weight` (not stored).

Weight names are those transformers 5.17's `save_pretrained` writes for
WhisperForConditionalGeneration: `model.encoder.conv1.{weight,bias}` [d, mels, 3],
`model.encoder.conv2.*` [d, d, 3], `model.encoder.embed_positions.weight` [1500, d] (the fixed
sinusoids of Whisper, see `sinusoids`), `model.{encoder,decoder}.layers.{i}.self_attn.{q,k,v,out}_proj`
(`k_proj` has no bias), `self_attn_layer_norm`, the decoder's `encoder_attn.*` and
`encoder_attn_layer_norm`, `fc1`, `fc2`, `final_layer_norm`, `model.{encoder,decoder}.layer_norm`,
`model.decoder.embed_tokens.weight` [vocab, d], `model.decoder.embed_positions.weight` [448, d].
All float32.

The tokenizer (the same in every folder) is a small GPT-2-style byte-level BPE trained here, by
`train_bpe`, over the English text of CORPUS: the 256 byte symbols in GPT-2's order (so the space
"Ġ" is id 220, as in Whisper), then MERGES merges, then Whisper's special tokens in Whisper's order:
`<|endoftext|>`, `<|startoftranscript|>`, the 99 language tokens of multilingual Whisper
(`<|en|>`, `<|zh|>`, `<|de|>`, ...), `<|translate|>`, `<|transcribe|>`, `<|startoflm|>`,
`<|startofprev|>`, `<|nospeech|>`, `<|notimestamps|>` and the 1501 timestamps `<|0.00|>` ...
`<|30.00|>`, all special added tokens (so decoding with skip_special_tokens drops them).
`tokenizer.json` has no normalizer, the ByteLevel pre-tokenizer (add_prefix_space false, GPT-2
regex), the ByteLevel decoder and a BPE model (transformers 5.17 reads it alone: no `vocab.json` or
`merges.txt` is needed).
The config's vocab_size is exactly the tokenizer size (as in real Whisper).

`generation_config.json` is laid out like a real multilingual Whisper checkpoint's (lang_to_id,
task_to_id, no_timestamps_token_id, suppress_tokens, begin_suppress_tokens [220, eot], max_length
448, no forced_decoder_ids). `suppress_tokens` is, like Whisper's, the ids of some punctuation
symbols plus the control tokens sot, translate, transcribe, startoflm, startofprev and nospeech.

Weights are float32 from numpy's `default_rng(seed)`, scaled so greedy and beam decoding are not
degenerate (the outputs depend on the audio and on the prompt, are not one token repeated, some
end with EOS before max_new_tokens and some do not, and the top two logits never nearly tie on the
test audio): linear weights std gain / sqrt(fan_in) (gain ATTN_GAIN for q_proj and k_proj, so
attention is not uniform, CROSS_GAIN for the decoder's encoder_attn.out_proj, so the audio drives
the decoder, RESIDUAL_GAIN for the other out_proj and fc2, 1 otherwise), biases std BIAS_STD,
LayerNorm weights ~ N(1, NORM_STD), the two convolutions std CONV_GAIN / sqrt(fan_in) (the audio,
not the fixed positions, dominates the encoder states). The head is tied, so logits are dot
products of the decoder output with the token embeddings: the embeddings are small (std
EMBED_STD) next to the learned decoder positions (std DEC_POS_STD) and the attention outputs, so the
current token's own row does not dominate the output (which made greedy decoding repeat one
token), and the decoder's final layer_norm weights ~ N(FINAL_NORM_GAIN, FINAL_NORM_GAIN * NORM_STD)
bring the logits back to a spread of several units. The rows of the special tokens other than EOS
are scaled by SPECIAL_ROW_GAIN (a random model would otherwise pick among the 1608 specials more
often than among the 656 text tokens) and the EOS row by eos_gain, so that some outputs end early.
Every file is byte-deterministic, so `xtask/src/setup/whisper.rs` pins their sha256.

The benchmark model `whisper-base-random` (the shapes of openai/whisper-base: d_model 512, 8 heads,
6 + 6 layers, FFN 2048, 80 mels, vocab_size 51865, the same tiny tokenizer: ids beyond it exist only
in the embedding) is written on request only, never by setup:

    python build_tiny_whisper.py OUT_DIR --model whisper-base-random
"""

import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from build_tiny_text import safetensors_bytes, write_json

COMMON = {
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}

MODELS = {
    "tiny-whisper": dict(
        COMMON,
        seed=20261219,
        d_model=64,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_layers=2,
        decoder_layers=2,
        encoder_ffn_dim=256,
        decoder_ffn_dim=256,
        eos_gain=2.0,
    ),
    "tiny-whisper-128": dict(
        COMMON,
        seed=20261220,
        num_mel_bins=128,
        d_model=96,
        encoder_attention_heads=6,
        decoder_attention_heads=6,
        encoder_layers=3,
        decoder_layers=2,
        encoder_ffn_dim=192,
        decoder_ffn_dim=192,
        eos_gain=2.2,
    ),
}

# On request only (`--model NAME`), never by setup.
FULL_SIZE = {
    "whisper-base-random": dict(
        COMMON,
        seed=20261221,
        d_model=512,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_layers=6,
        decoder_layers=6,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        eos_gain=1.0,
        vocab_size=51865,
    ),
}

# Weight scales (see the module docstring).
EMBED_STD = 0.1
FINAL_NORM_GAIN = 15.0
DEC_POS_STD = 1.0
CONV_GAIN = 4.0
ATTN_GAIN = 2.5
RESIDUAL_GAIN = 1.0
CROSS_GAIN = 2.0
BIAS_STD = 0.02
NORM_STD = 0.1
SPECIAL_ROW_GAIN = 0.5

MERGES = 400

# ----------------------------------------------------------------------------------------------
# The tokenizer.

# The languages of multilingual Whisper, in the order of their tokens (openai-whisper's
# LANGUAGES without large-v3's "yue").
LANGUAGES = """
en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu ta no th ur hr
bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn bs kk sq sw gl mr pa si km sn
yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn mt sa lb my bo tl mg as tt haw ln ha ba jw su
""".split()

# The English text the BPE is trained on (written for this project).
CORPUS = """
The small river runs past the old mill and under the stone bridge before it reaches the town.
In the morning the market opens early, and people come from the villages with bread, cheese,
apples and fresh fish. Children walk to school along the water, and the teacher rings the bell
at eight o'clock. We have been recording the sounds of the town for a study of speech and noise:
voices in the street, the train at the station, birds in the trees, rain on the roof, a dog that
barks at every bicycle. Later we will listen to each recording again and write down what we hear.
Some of it is easy to understand, but much of it is not. When two people speak at the same time,
or when a bus drives by, the words are lost. A good transcription says who spoke, what they said
and when they said it. Numbers are hard too: 1, 2, 3, 10, 25, 100, 2026, 3.14 and 42 may be
spoken in many ways. The weather report said it would be sunny today, with some clouds in the
afternoon and a little wind from the west. Tomorrow there will be more rain. "Thank you," she
said, "that is very kind." He answered: "You're welcome; I'll see you on Monday." They didn't
know that the meeting had moved to Tuesday, so they waited in the hall for an hour.
Speech recognition turns sound into text. The audio is cut into frames of twenty-five
milliseconds, every ten milliseconds, and each frame becomes a column of a log-mel spectrogram.
An encoder reads the spectrogram; a decoder writes the text one token at a time, looking back at
the encoder's states. Greedy search takes the most likely token at every step; beam search keeps
a few hypotheses and returns the best one. Translation works the same way, but the decoder is
asked to write English whatever language was spoken. This is a test, only a test, of a model
whose weights are random: what it writes means nothing, yet it must be the same every time.
""".strip()


def bytes_to_unicode() -> list:
    """GPT-2's byte-to-character table as (byte, character) pairs in vocabulary order: the
    printable bytes map to themselves, the others (space, controls, ...) to 256 + k in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    pairs = [(b, chr(b)) for b in printable]
    k = 0
    for b in range(256):
        if b not in printable:
            pairs.append((b, chr(256 + k)))
            k += 1
    return pairs


# Roughly GPT-2's pre-tokenization regex, restricted to what the ASCII corpus holds.
PRETOKENIZE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def train_bpe(text: str, merges: int) -> tuple:
    """A plain BPE trainer: the most frequent adjacent pair is merged first (ties: the pair whose
    two strings sort first), `merges` times. Returns (vocab list in id order, merge pairs)."""
    table = dict(bytes_to_unicode())
    words = Counter("".join(table[b] for b in w.encode("utf-8")) for w in PRETOKENIZE.findall(text))
    splits = {w: list(w) for w in words}
    vocab = [c for _, c in bytes_to_unicode()]
    known = set(vocab)
    pairs_out = []
    for _ in range(merges):
        counts = Counter()
        for w, n in words.items():
            s = splits[w]
            for a, b in zip(s, s[1:]):
                counts[(a, b)] += n
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merged = best[0] + best[1]
        pairs_out.append(list(best))
        if merged not in known:
            known.add(merged)
            vocab.append(merged)
        for w in words:
            s = splits[w]
            i, out = 0, []
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            splits[w] = out
    return vocab, pairs_out


def special_tokens() -> list:
    """Whisper's special tokens in id order."""
    return (
        ["<|endoftext|>", "<|startoftranscript|>"]
        + [f"<|{code}|>" for code in LANGUAGES]
        + ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
        + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    )


class Tokens:
    """The ids of the tokenizer's tokens."""

    def __init__(self):
        self.bpe_vocab, self.merges = train_bpe(CORPUS, MERGES)
        self.specials = special_tokens()
        self.ids = {t: i for i, t in enumerate(self.bpe_vocab + self.specials)}
        self.size = len(self.ids)
        self.eot = self.ids["<|endoftext|>"]
        self.sot = self.ids["<|startoftranscript|>"]
        self.translate = self.ids["<|translate|>"]
        self.transcribe = self.ids["<|transcribe|>"]
        self.startoflm = self.ids["<|startoflm|>"]
        self.startofprev = self.ids["<|startofprev|>"]
        self.nospeech = self.ids["<|nospeech|>"]
        self.notimestamps = self.ids["<|notimestamps|>"]
        self.space = self.ids["Ġ"]
        self.lang_to_id = {f"<|{c}|>": self.ids[f"<|{c}|>"] for c in LANGUAGES}

    def suppress_tokens(self) -> list:
        """Whisper-style suppress list: the ids of some punctuation symbols (with and without a
        leading space, where the vocabulary has them) and the control tokens."""
        out = []
        for sym in '"#()*+/:;<=>@[\\]^_`{|}~':
            for piece in (sym, "Ġ" + sym):
                if piece in self.ids:
                    out.append(self.ids[piece])
        out += [self.sot, self.translate, self.transcribe, self.startoflm, self.startofprev, self.nospeech]
        return sorted(set(out))


def added_token(id_: int, content: str) -> dict:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def tokenizer_json(tok: Tokens) -> dict:
    """tokenizer.json (keys in the order the tokenizers library writes them)."""
    base = len(tok.bpe_vocab)
    pre_tokenizer = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    # transformers 5.17 saves the decoder with add_prefix_space true (decoding ignores it).
    decoder = dict(pre_tokenizer, add_prefix_space=True)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(base + i, t) for i, t in enumerate(tok.specials)],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<|startoftranscript|>", "type_id": 0}},
                {"SpecialToken": {"id": "<|notimestamps|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<|startoftranscript|>", "type_id": 0}},
                {"SpecialToken": {"id": "<|notimestamps|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
                {"SpecialToken": {"id": "<|endoftext|>", "type_id": 1}},
            ],
            "special_tokens": {
                t: {"id": t, "ids": [tok.ids[t]], "tokens": [t]}
                for t in sorted(["<|endoftext|>", "<|notimestamps|>", "<|startoftranscript|>"])
            },
        },
        "decoder": decoder,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tok.bpe_vocab)},
            "merges": tok.merges,
        },
    }


def tokenizer_config(tok: Tokens) -> dict:
    return {
        "add_prefix_space": False,
        "backend": "tokenizers",
        "bos_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "errors": "replace",
        "model_max_length": 1024,
        "pad_token": "<|endoftext|>",
        "predict_timestamps": False,
        "processor_class": "WhisperProcessor",
        "return_attention_mask": False,
        "tokenizer_class": "WhisperTokenizer",
        "unk_token": "<|endoftext|>",
    }


def special_tokens_map(tok: Tokens) -> dict:
    extra = tok.specials[1 : tok.specials.index("<|notimestamps|>") + 1]
    return {
        "additional_special_tokens": extra,
        "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }


# ----------------------------------------------------------------------------------------------
# Configs.


def model_config(spec: dict, tok: Tokens, vocab_size: int) -> dict:
    """config.json in the layout of published Whisper checkpoints (without forced_decoder_ids)."""
    return {
        "activation_dropout": 0.0,
        "activation_function": "gelu",
        "apply_spec_augment": False,
        "architectures": ["WhisperForConditionalGeneration"],
        "attention_dropout": 0.0,
        "begin_suppress_tokens": [tok.space, tok.eot],
        "bos_token_id": tok.eot,
        "classifier_proj_size": 256,
        "d_model": spec["d_model"],
        "decoder_attention_heads": spec["decoder_attention_heads"],
        "decoder_ffn_dim": spec["decoder_ffn_dim"],
        "decoder_layerdrop": 0.0,
        "decoder_layers": spec["decoder_layers"],
        "decoder_start_token_id": tok.sot,
        "dropout": 0.0,
        "dtype": "float32",
        "encoder_attention_heads": spec["encoder_attention_heads"],
        "encoder_ffn_dim": spec["encoder_ffn_dim"],
        "encoder_layerdrop": 0.0,
        "encoder_layers": spec["encoder_layers"],
        "eos_token_id": tok.eot,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "mask_feature_length": 10,
        "mask_feature_min_masks": 0,
        "mask_feature_prob": 0.0,
        "mask_time_length": 10,
        "mask_time_min_masks": 2,
        "mask_time_prob": 0.05,
        "max_source_positions": spec["max_source_positions"],
        "max_target_positions": spec["max_target_positions"],
        "median_filter_width": 7,
        "model_type": "whisper",
        "num_mel_bins": spec["num_mel_bins"],
        "pad_token_id": tok.eot,
        "scale_embedding": False,
        "suppress_tokens": tok.suppress_tokens(),
        "tie_word_embeddings": True,
        "transformers_version": "5.17.0",
        "use_cache": True,
        "use_weighted_layer_sum": False,
        "vocab_size": vocab_size,
    }


def generation_config(spec: dict, tok: Tokens) -> dict:
    return {
        "begin_suppress_tokens": [tok.space, tok.eot],
        "bos_token_id": tok.eot,
        "decoder_start_token_id": tok.sot,
        "eos_token_id": tok.eot,
        "is_multilingual": True,
        "lang_to_id": tok.lang_to_id,
        "max_initial_timestamp_index": 50,
        "max_length": spec["max_target_positions"],
        "no_timestamps_token_id": tok.notimestamps,
        "pad_token_id": tok.eot,
        "prev_sot_token_id": tok.startofprev,
        "return_timestamps": False,
        "suppress_tokens": tok.suppress_tokens(),
        "task_to_id": {"transcribe": tok.transcribe, "translate": tok.translate},
        "transformers_version": "5.17.0",
    }


def preprocessor_config(spec: dict) -> dict:
    return {
        "chunk_length": 30,
        "dither": 0.0,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": spec["num_mel_bins"],
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


# ----------------------------------------------------------------------------------------------
# Weights.


def sinusoids(length: int, channels: int) -> np.ndarray:
    """Whisper's fixed encoder positions: [sin | cos] of position * inv_timescale, with
    log_timescale_increment = ln(10000) / (channels / 2 - 1), computed in float64."""
    half = channels // 2
    increment = math.log(10000.0) / (half - 1)
    inv = np.exp(-increment * np.arange(half, dtype=np.float64))
    scaled = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class Init:
    """Deterministic random parameters, drawn in the order they are requested."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}

    def normal(self, name: str, shape: tuple, std: float, mean: float = 0.0) -> None:
        self.tensors[name] = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)

    def linear(self, name: str, out_dim: int, in_dim: int, gain: float = 1.0, bias: bool = True) -> None:
        self.normal(f"{name}.weight", (out_dim, in_dim), gain / math.sqrt(in_dim))
        if bias:
            self.normal(f"{name}.bias", (out_dim,), BIAS_STD)

    def layer_norm(self, name: str, dim: int, gain: float = 1.0) -> None:
        self.normal(f"{name}.weight", (dim,), gain * NORM_STD, mean=gain)
        self.normal(f"{name}.bias", (dim,), BIAS_STD)


def attention(init: Init, name: str, d: int, out_gain: float) -> None:
    init.linear(f"{name}.q_proj", d, d, ATTN_GAIN)
    init.linear(f"{name}.k_proj", d, d, ATTN_GAIN, bias=False)
    init.linear(f"{name}.v_proj", d, d)
    init.linear(f"{name}.out_proj", d, d, out_gain)


def whisper_weights(spec: dict, tok: Tokens, vocab_size: int) -> dict:
    """Every stored parameter of transformers' WhisperForConditionalGeneration."""
    init = Init(spec["seed"])
    d, mels = spec["d_model"], spec["num_mel_bins"]
    init.normal("model.encoder.conv1.weight", (d, mels, 3), CONV_GAIN / math.sqrt(mels * 3))
    init.normal("model.encoder.conv1.bias", (d,), BIAS_STD)
    init.normal("model.encoder.conv2.weight", (d, d, 3), CONV_GAIN / math.sqrt(d * 3))
    init.normal("model.encoder.conv2.bias", (d,), BIAS_STD)
    init.tensors["model.encoder.embed_positions.weight"] = sinusoids(spec["max_source_positions"], d)
    for stack in ("encoder", "decoder"):
        ffn = spec[f"{stack}_ffn_dim"]
        for i in range(spec[f"{stack}_layers"]):
            p = f"model.{stack}.layers.{i}"
            attention(init, f"{p}.self_attn", d, RESIDUAL_GAIN)
            init.layer_norm(f"{p}.self_attn_layer_norm", d)
            if stack == "decoder":
                attention(init, f"{p}.encoder_attn", d, CROSS_GAIN)
                init.layer_norm(f"{p}.encoder_attn_layer_norm", d)
            init.linear(f"{p}.fc1", ffn, d)
            init.linear(f"{p}.fc2", d, ffn, RESIDUAL_GAIN)
            init.layer_norm(f"{p}.final_layer_norm", d)
        init.layer_norm(f"model.{stack}.layer_norm", d, FINAL_NORM_GAIN if stack == "decoder" else 1.0)
    init.normal("model.decoder.embed_tokens.weight", (vocab_size, d), EMBED_STD)
    init.normal("model.decoder.embed_positions.weight", (spec["max_target_positions"], d), DEC_POS_STD)
    # The tied head: smaller rows for the special tokens (EOS apart), EOS scaled by eos_gain.
    emb = init.tensors["model.decoder.embed_tokens.weight"]
    first_special = len(tok.bpe_vocab)
    emb[first_special + 1 : tok.size] *= np.float32(SPECIAL_ROW_GAIN)
    emb[tok.eot] *= np.float32(spec["eos_gain"])
    return init.tensors


# ----------------------------------------------------------------------------------------------
# Writing: the safetensors encoder and JSON writer of build_tiny_text.py (the same bytes).


def write_model(folder: Path, spec: dict, tok: Tokens) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = spec.get("vocab_size", tok.size)
    write_json(folder / "config.json", model_config(spec, tok, vocab_size))
    write_json(folder / "generation_config.json", generation_config(spec, tok))
    write_json(folder / "preprocessor_config.json", preprocessor_config(spec))
    (folder / "model.safetensors").write_bytes(safetensors_bytes(whisper_weights(spec, tok, vocab_size)))
    # No final newline, as the tokenizers library writes it.
    write_json(folder / "tokenizer.json", tokenizer_json(tok), newline="")
    write_json(folder / "tokenizer_config.json", tokenizer_config(tok))
    write_json(folder / "special_tokens_map.json", special_tokens_map(tok))


def main() -> None:
    args = sys.argv[1:]
    models = MODELS
    if "--model" in args:
        i = args.index("--model")
        if i + 1 >= len(args) or args[i + 1] not in FULL_SIZE:
            raise SystemExit(f"usage: build_tiny_whisper.py OUT_DIR [--model NAME] (NAME: {', '.join(FULL_SIZE)})")
        models = {args[i + 1]: FULL_SIZE[args[i + 1]]}
        del args[i : i + 2]
    if len(args) != 1:
        raise SystemExit("usage: build_tiny_whisper.py OUT_DIR [--model NAME]")
    out = Path(args[0])
    tok = Tokens()
    assert len(LANGUAGES) == 99 and tok.space == 220, (len(LANGUAGES), tok.space)
    for name, spec in models.items():
        write_model(out / name, spec, tok)


if __name__ == "__main__":
    main()
