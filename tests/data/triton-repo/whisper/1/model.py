"""Whisper speech recognition in numpy: the server side of dp-models' served transcription.

The model folder (`model_dir` parameter) is a Hugging Face Whisper checkpoint: config.json,
generation_config.json, tokenizer.json (byte-level BPE), tokenizer_config.json and a float32
model.safetensors. Each request carries one row per 30-second chunk:

- input_features  FP32   [rows, n_mels, 3000]  the client's log-mel features
- language        BYTES  [rows]  a language code ("en"), or empty to detect it
- task            BYTES  [rows]  "transcribe" or "translate"
- max_new_tokens  INT32  [rows]  0: as many as the decoder's positions allow after the prompt

and gets back `transcript` (UTF-8 text, special tokens skipped) and `transcript_language` (the
code decoded with; empty for an English-only model).

Decoding follows transformers' `WhisperForConditionalGeneration.generate` with
`return_timestamps=False`, greedy: prompt `[sot, language, task, notimestamps]` (English-only:
`[sot, notimestamps]`); a missing language is the argmax, over the language tokens only, of the
raw logits after `[sot]`; every step sets `suppress_tokens` to -inf, the first step also
`begin_suppress_tokens`; the argmax (lowest id on ties) is taken until end of text or
max_new_tokens. Written in numpy because the server's Python backend has no PyTorch; the decoder
recomputes the whole prefix each step (no cache): the test models are tiny.
"""

import json
import math
import os
import struct

import numpy as np
import triton_python_backend_utils as pb_utils

_ERF = np.frompyfunc(math.erf, 1, 1)


def _gelu(x):
    """Exact (erf) GELU, as torch.nn.functional.gelu."""
    wide = x.astype(np.float64)
    erf = _ERF(wide / math.sqrt(2.0)).astype(np.float64)
    return (0.5 * wide * (1.0 + erf)).astype(np.float32)


def _layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: tensor {name} is {info['dtype']}, this server runs F32 only")
        start, end = info["data_offsets"]
        array = np.frombuffer(data, dtype="<f4", count=(end - start) // 4, offset=8 + size + start)
        tensors[name] = array.reshape(info["shape"])
    return tensors


def _byte_decoder():
    """GPT-2's byte-level alphabet: the character each byte is written as, inverted."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def _clean_up_tokenization(text):
    for before, after in [
        (" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
        (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"),
    ]:
        text = text.replace(before, after)
    return text


class _Attention:
    def __init__(self, w, prefix, heads):
        self.q_w, self.q_b = w[prefix + ".q_proj.weight"], w[prefix + ".q_proj.bias"]
        self.k_w = w[prefix + ".k_proj.weight"]
        self.v_w, self.v_b = w[prefix + ".v_proj.weight"], w[prefix + ".v_proj.bias"]
        self.o_w, self.o_b = w[prefix + ".out_proj.weight"], w[prefix + ".out_proj.bias"]
        self.heads = heads
        self.head_dim = self.q_w.shape[0] // heads

    def _split(self, x):
        return x.reshape(x.shape[0], self.heads, self.head_dim).transpose(1, 0, 2)

    def keys_values(self, x):
        return self._split(x @ self.k_w.T), self._split(x @ self.v_w.T + self.v_b)

    def __call__(self, x, keys, values, causal):
        q = self._split((x @ self.q_w.T + self.q_b) * np.float32(self.head_dim ** -0.5))
        scores = q @ keys.transpose(0, 2, 1)
        if causal:
            n = scores.shape[-1]
            scores = scores + np.triu(np.full((n, n), -np.inf, dtype=np.float32), 1)
        out = (_softmax(scores) @ values).transpose(1, 0, 2).reshape(x.shape[0], -1)
        return out @ self.o_w.T + self.o_b


class Whisper:
    def __init__(self, folder):
        def read(name):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                return json.load(f)

        self.config = read("config.json")
        generation = read("generation_config.json")
        tokenizer = read("tokenizer.json")
        tokenizer_config = {}
        if os.path.exists(os.path.join(folder, "tokenizer_config.json")):
            tokenizer_config = read("tokenizer_config.json")
        w = _load_safetensors(os.path.join(folder, "model.safetensors"))
        c = self.config
        self.w = w
        self.encoder_layers = [
            _Attention(w, f"model.encoder.layers.{i}.self_attn", c["encoder_attention_heads"])
            for i in range(c["encoder_layers"])
        ]
        self.self_attention = [
            _Attention(w, f"model.decoder.layers.{i}.self_attn", c["decoder_attention_heads"])
            for i in range(c["decoder_layers"])
        ]
        self.cross_attention = [
            _Attention(w, f"model.decoder.layers.{i}.encoder_attn", c["decoder_attention_heads"])
            for i in range(c["decoder_layers"])
        ]
        self.embed_tokens = w["model.decoder.embed_tokens.weight"]
        self.head = w.get("proj_out.weight", self.embed_tokens)
        self.embed_scale = math.sqrt(c["d_model"]) if c.get("scale_embedding") else 1.0
        if c.get("activation_function", "gelu") != "gelu":
            raise ValueError("this server runs Whisper checkpoints with the exact GELU only")

        self.sot = generation["decoder_start_token_id"]
        self.eot = generation["eos_token_id"]
        self.no_timestamps = generation["no_timestamps_token_id"]
        self.lang_to_id = generation.get("lang_to_id") or {}
        self.multilingual = generation.get("is_multilingual", bool(self.lang_to_id))
        self.task_to_id = generation.get("task_to_id") or {}
        self.suppress = list(generation.get("suppress_tokens") or [])
        self.begin_suppress = list(generation.get("begin_suppress_tokens") or [])
        self.language_ids = np.array(sorted(self.lang_to_id.values()), dtype=np.int64)

        self.pieces = {}
        for piece, index in tokenizer["model"]["vocab"].items():
            self.pieces[index] = piece
        self.special = set()
        for added in tokenizer.get("added_tokens", []):
            self.pieces[added["id"]] = added["content"]
            if added.get("special"):
                self.special.add(added["id"])
        self.byte_of = _byte_decoder()
        self.clean_up = bool(tokenizer_config.get("clean_up_tokenization_spaces", False))

    def encode(self, features):
        """[n_mels, frames] -> [max_source_positions, d_model]."""
        w = self.w
        x = _gelu(self._conv(features, "model.encoder.conv1", 1))
        x = _gelu(self._conv(x, "model.encoder.conv2", 2)).T
        x = x + w["model.encoder.embed_positions.weight"][: x.shape[0]]
        for i, attention in enumerate(self.encoder_layers):
            p = f"model.encoder.layers.{i}"
            h = _layer_norm(x, w[p + ".self_attn_layer_norm.weight"], w[p + ".self_attn_layer_norm.bias"])
            keys, values = attention.keys_values(h)
            x = x + attention(h, keys, values, causal=False)
            x = x + self._feed_forward(x, p)
        return _layer_norm(x, w["model.encoder.layer_norm.weight"], w["model.encoder.layer_norm.bias"])

    def _conv(self, x, prefix, stride):
        weight, bias = self.w[prefix + ".weight"], self.w[prefix + ".bias"]
        width = weight.shape[2]
        padded = np.pad(x, ((0, 0), (width // 2, width // 2)))
        frames = (padded.shape[1] - width) // stride + 1
        out = np.zeros((weight.shape[0], frames), dtype=np.float32)
        for k in range(width):
            out += weight[:, :, k] @ padded[:, k : k + stride * (frames - 1) + 1 : stride]
        return out + bias[:, None]

    def _feed_forward(self, x, p):
        w = self.w
        h = _layer_norm(x, w[p + ".final_layer_norm.weight"], w[p + ".final_layer_norm.bias"])
        h = _gelu(h @ w[p + ".fc1.weight"].T + w[p + ".fc1.bias"])
        return h @ w[p + ".fc2.weight"].T + w[p + ".fc2.bias"]

    def logits(self, tokens, cross):
        """The logits after the last of `tokens`, over the encoder output's keys/values."""
        w = self.w
        x = self.embed_tokens[tokens] * np.float32(self.embed_scale)
        x = x + w["model.decoder.embed_positions.weight"][: len(tokens)]
        for i, (attention, crossing) in enumerate(zip(self.self_attention, self.cross_attention)):
            p = f"model.decoder.layers.{i}"
            h = _layer_norm(x, w[p + ".self_attn_layer_norm.weight"], w[p + ".self_attn_layer_norm.bias"])
            keys, values = attention.keys_values(h)
            x = x + attention(h, keys, values, causal=True)
            h = _layer_norm(x, w[p + ".encoder_attn_layer_norm.weight"], w[p + ".encoder_attn_layer_norm.bias"])
            x = x + crossing(h, *cross[i], causal=False)
            x = x + self._feed_forward(x, p)
        x = _layer_norm(x[-1:], w["model.decoder.layer_norm.weight"], w["model.decoder.layer_norm.bias"])
        return (x @ self.head.T)[0]

    def transcribe(self, features, language, task, max_new_tokens):
        encoded = self.encode(features)
        cross = [attention.keys_values(encoded) for attention in self.cross_attention]
        if self.multilingual:
            if language:
                token = f"<|{language}|>"
                if token not in self.lang_to_id:
                    raise ValueError(f"unknown language {language!r}")
                language_id = self.lang_to_id[token]
            else:
                scores = self.logits([self.sot], cross)
                language_id = int(self.language_ids[np.argmax(scores[self.language_ids])])
                language = next(t[2:-2] for t, i in self.lang_to_id.items() if i == language_id)
            if task not in self.task_to_id:
                raise ValueError(f"unknown task {task!r}")
            prompt = [self.sot, language_id, self.task_to_id[task], self.no_timestamps]
        else:
            if language not in ("", "en") or task != "transcribe":
                raise ValueError("this model is English-only: it transcribes English")
            language = ""
            prompt = [self.sot, self.no_timestamps]
        limit = self.config["max_target_positions"] - len(prompt)
        if max_new_tokens == 0:
            max_new_tokens = limit
        if not 0 < max_new_tokens <= limit:
            raise ValueError(f"max_new_tokens is {max_new_tokens}; this model takes 1 to {limit}")
        tokens = list(prompt)
        for step in range(max_new_tokens):
            scores = self.logits(tokens, cross)
            if step == 0:
                scores[self.begin_suppress] = -np.inf
            scores[self.suppress] = -np.inf
            token = int(np.argmax(scores))
            tokens.append(token)
            if token == self.eot:
                break
        return self.decode(tokens[len(prompt) :]), language

    def decode(self, ids):
        out = bytearray()
        for i in ids:
            if i in self.special:
                continue
            piece = self.pieces[i]
            if all(ch in self.byte_of for ch in piece):
                out.extend(self.byte_of[ch] for ch in piece)
            else:
                out.extend(piece.encode("utf-8"))
        text = out.decode("utf-8", errors="replace")
        return _clean_up_tokenization(text) if self.clean_up else text


def _strings(request, name):
    return [v.decode("utf-8") for v in pb_utils.get_input_tensor_by_name(request, name).as_numpy()]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.model = Whisper(config["parameters"]["model_dir"]["string_value"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                features = pb_utils.get_input_tensor_by_name(request, "input_features").as_numpy()
                languages = _strings(request, "language")
                tasks = _strings(request, "task")
                limits = pb_utils.get_input_tensor_by_name(request, "max_new_tokens").as_numpy()
                if not (len(features) == len(languages) == len(tasks) == len(limits)):
                    raise ValueError("input_features, language, task and max_new_tokens differ in rows")
                texts, used = [], []
                for row in range(len(features)):
                    text, language = self.model.transcribe(
                        features[row].astype(np.float32), languages[row], tasks[row], int(limits[row])
                    )
                    texts.append(text.encode("utf-8"))
                    used.append(language.encode("utf-8"))
                responses.append(
                    pb_utils.InferenceResponse(
                        [
                            pb_utils.Tensor("transcript", np.array(texts, dtype=np.object_)),
                            pb_utils.Tensor("transcript_language", np.array(used, dtype=np.object_)),
                        ]
                    )
                )
            except Exception as err:  # one bad request must not take the others down
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(err))))
        return responses
