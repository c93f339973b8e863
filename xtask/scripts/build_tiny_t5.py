"""Builds tiny random-weight T5 text-generation models in the Hugging Face layout, without PyTorch.

Run by `cargo xtask setup` (asset `tiny-t5`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt (only numpy and the standard library are used):

    python build_tiny_t5.py OUT_DIR

OUT_DIR receives one folder per model of MODELS below, each loadable by transformers'
`T5ForConditionalGeneration.from_pretrained` / `AutoTokenizer.from_pretrained` and by
candle-transformers' `t5` module:

- `tiny-t5`: the T5 v1.1 / flan-t5 layout: gated-GELU feed-forward (`wi_0`, `wi_1`, `wo`;
  transformers maps "gated-gelu" to the tanh approximation `gelu_new`), untied embeddings (its own
  `lm_head.weight`, and the decoder output is NOT scaled before it), d_model 32, d_kv 8, 4 heads,
  d_ff 64, 2 + 2 layers, 32 relative-attention buckets, max distance 128;
- `tiny-t5-v1`: the original T5 (v1.0) layout: ReLU feed-forward (`wi`, `wo`), tied embeddings (no
  `lm_head.weight`: the head is `shared.weight`, applied to the decoder output scaled by
  d_model**-0.5), d_model 48, d_kv 16, 3 heads, d_ff 96, 3 + 3 layers, 16 buckets, max distance 64.

Encoder and decoder always have the same depth (transformers 5.17's generate fails otherwise).

Weight names are those transformers 5.17's `save_pretrained` writes: `shared.weight` (the
`encoder.embed_tokens` / `decoder.embed_tokens` copies are tied to it and not stored),
`{encoder,decoder}.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight`, the
`relative_attention_bias.weight` [buckets, heads] of block 0's self-attention only,
`layer.{j}.layer_norm.weight` (T5's RMS norm has no bias), `decoder.block.{i}.layer.1.EncDecAttention.*`,
the feed-forward `layer.1` (encoder) / `layer.2` (decoder) `.DenseReluDense.*`,
`{encoder,decoder}.final_layer_norm.weight` and, untied only, `lm_head.weight`. All float32.

All three folders share the tokenizer, written here by hand: a SentencePiece-style Unigram model
with T5's layout (`<pad>`=0, `</s>`=1, `<unk>`=2, then a few thousand pieces: whole English, German
and French words, subword pieces, every character of Latin-1 and Latin Extended-A and some
punctuation; then the 100 sentinels `<extra_id_99>` ... `<extra_id_0>`, so `<extra_id_0>` is the last
id). The components are those transformers 5.17's `T5Tokenizer` builds itself: no normalizer (it
keeps one only when it is a SentencePiece `Precompiled` one), pre-tokenizer WhitespaceSplit then
Metaspace "▁" (prepend always, split), Metaspace decoder, and the post-processor `$A </s>` (pair
`$A </s> $B </s>`), so transformers and the `tokenizers` library read the file alike. Characters the
vocabulary lacks (CJK, emoji, ...) become `<unk>`. The config's vocab_size is the tokenizer size
rounded up to a multiple of 8 plus 8 more rows, so the embedding is bigger than the tokenizer as in
real T5 (32128 rows, 32100 tokens).

Weights are float32 from numpy's `default_rng(seed)`, scaled so greedy and beam generation are
not degenerate (different inputs give different outputs, outputs are not one token repeated, and
logits spread over several units so the top two rarely nearly tie): embeddings std EMBED_STD,
norm weights ~ N(1, NORM_STD), q and k std (QK_LOGIT_STD / (d_model * sqrt(d_kv)))**0.5 (T5 does
not scale attention scores), v and wi std 1/sqrt(fan_in), relative-attention biases std
REL_BIAS_STD, the untied head std LM_HEAD_STD, and o and wo std
residual_gain * EMBED_STD / sqrt(fan_in) (how much each layer writes into the residual stream
next to the embeddings), the last decoder block's wo times last_ff_gain on top. ReLU models centre
each row of wo (ReLU outputs have the same positive mean for every input, which would add one
fixed direction everywhere). The tied models need the small residual gain and the large last gain:
with a tied head the logits are the dot products of the decoder output with the embeddings, so
when the input token's own embedding, or anything the same at every step, dominates that output,
greedy decoding repeats one token; a dominant last feed-forward of a mostly-token input behaves
like the untied head of `tiny-t5`. The EOS row of the head is multiplied by eos_gain so that some
outputs end early (exercising EOS handling and finished beams).
Every file is byte-deterministic, so `xtask/src/setup/t5.rs` pins their sha256.

The benchmark model `t5-small-random` (the shapes of google-t5/t5-small: d_model 512, d_kv 64,
8 heads, d_ff 2048, 6 + 6 layers, ReLU, tied, vocab 32128; the same tiny tokenizer) is written on
request only, never by setup:

    python build_tiny_t5.py --model t5-small-random OUT_DIR
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

from build_tiny_text import safetensors_bytes, write_json

MODELS = {
    "tiny-t5": {
        "seed": 20261216,
        "d_model": 32,
        "d_kv": 8,
        "num_heads": 4,
        "d_ff": 64,
        "num_layers": 2,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "buckets": 32,
        "max_distance": 128,
        "residual_gain": 1.0,
        "eos_gain": 2.0,
        "last_ff_gain": 1.0,
    },
    "tiny-t5-v1": {
        "seed": 202612175,
        "d_model": 48,
        "d_kv": 16,
        "num_heads": 3,
        "d_ff": 96,
        "num_layers": 3,
        "feed_forward_proj": "relu",
        "tie_word_embeddings": True,
        "buckets": 16,
        "max_distance": 64,
        "residual_gain": 0.4,
        "eos_gain": 2.0,
        "last_ff_gain": 60.0,
    },
}

# On request only (`--model NAME`), never by setup.
FULL_SIZE = {
    "t5-small-random": {
        "seed": 20261218,
        "d_model": 512,
        "d_kv": 64,
        "num_heads": 8,
        "d_ff": 2048,
        "num_layers": 6,
        "feed_forward_proj": "relu",
        "tie_word_embeddings": True,
        "buckets": 32,
        "max_distance": 128,
        "residual_gain": 0.4,
        "eos_gain": 1.0,
        "last_ff_gain": 60.0,
        "vocab_size": 32128,
    },
}

# Weight scales (see the module docstring).
EMBED_STD = 4.0
LM_HEAD_STD = 1.0
QK_LOGIT_STD = 4.0
REL_BIAS_STD = 1.0
NORM_STD = 0.1

PAD, EOS, UNK = "<pad>", "</s>", "<unk>"
EXTRA_IDS = 100
MODEL_MAX_LENGTH = 512

# ----------------------------------------------------------------------------------------------
# The Unigram vocabulary.

ENGLISH = """
the of and to in is was for on that with as by at from it his an were are which this be or has had
not but first one their its new after who they have her she two been other when there all during
into school time may years more most only over some world would where later up such used many can
state about out known university united then made between through film also people under will part
three year game season team work we how what why water life day long number house history good
great high small large old young little man woman child children family friend home country
language music book word words name place way hand head eye eyes face light night morning evening
today week month weather rain sun sky sea river mountain tree trees flower flowers cat cats dog dogs
bird fish horse animal animals food bread milk coffee tea wine beer apple apples red blue green
yellow black white color picture text sentence question answer summary summarize translate
translation document result model data learning machine computer phone car train bus road street
station airport hotel room table chair door window town village market shop money price job office
meeting company business science health doctor hospital medicine energy power sound voice song art
paper letter story news report study research information system service problem example hello
thanks please yes no maybe quick brown fox jumps lazy running runs ran walking walked playing played
reading read writing wrote written learn learned teacher student students beautiful happy sad fast
slow easy hard big best better bad true false open close closed capital france germany europe paris
berlin london english german french romanian is are be will would should could must can cannot
government president minister parliament police court law war peace city council million percent
""".split()

GERMAN = """
der die das und ist nicht ein eine einen einem einer ich du er sie es wir ihr mit von zu den dem des
auf für im in an aus bei nach über unter vor durch ohne gegen um bis seit auch noch schon nur sehr gut
groß klein neu alt jung schön schnell langsam heute morgen gestern Haus Hund Katze Kinder Kind Mann
Frau Stadt Land Straße Wasser Brot Milch Kaffee Bier Wein Buch Bücher Wort Wörter Sprache Welt Zeit
Jahr Jahre Tag Tage Woche Monat Nacht Abend Sonne Regen Himmel Meer Fluss Berg Baum Bäume Blume
Blumen Vogel Fisch Pferd Tier Tiere Schule Universität Arbeit Geld Preis Zug Bahnhof Flughafen
Hauptstadt Deutschland Frankreich Europa Übersetzung Frage Antwort Ergebnis Grüße Mädchen Junge Größe
Müller übermorgen Äpfel Apfel Öl fünf zwölf heißen heißt gehen geht kommen kommt sprechen spricht
lesen liest schreiben schreibt haben hat sein sind war waren werden wird können kann müssen muss
wollen will möchte danke bitte ja nein vielleicht hallo Guten Nachrichten Bericht Wissenschaft
Gesundheit Arzt Krankenhaus Regierung Präsident Polizei Gericht Gesetz Krieg Frieden Prozent
""".split()

FRENCH = """
le la les un une des et est être avoir de du au aux en dans sur sous avec pour par sans chez que qui
quoi où il elle ils elles nous vous je tu on ce cette ces mon ma mes ton ta tes son sa ses notre votre
leur très bien bon bonne beau belle grand grande petit petite nouveau nouvelle vieux jeune rapide lent
aujourd'hui demain hier maison chien chat chats enfant enfants homme femme ville pays rue eau pain lait
café vin bière livre livres mot mots langue monde temps année jour jours semaine mois nuit soir soleil
pluie ciel mer rivière montagne arbre arbres fleur fleurs oiseau poisson cheval animaux école travail
argent prix gare aéroport capitale Allemagne Europe traduction réponse recherche résultat été élève
français française première deuxième déjà après fenêtre garçon Noël naïve crème brûlée château forêt
hôpital hôtel merci bonjour bonsoir salut oui non parler parle lire lit écrire écrit aller va venir
vient nouvelles rapport santé médecin gouvernement président ministre police loi guerre paix
""".split()

# Subword pieces, with and without the word-start mark.
AFFIXES = """
s es ed ing er ers est ly tion tions ment ments ness able ible al ial ic ical ous ive ity ize ise
un re pre dis im non over under sub inter trans
en ern ung ungen heit keit lich isch chen lein ig st te ten ge be ver zer ent
eur euse eux ette ement ique iste isme ée és ées ir
a e i o u an ar or on at el il ol ul la le li lo lu ma me mi mo mu na ne ni no nu ra ri ro ru
ta ti to tu sa se si so su da de di do du ca co cu pa pe pi po pu ba bi bo bu ga go gu va vi vo
th ch sch sh ph qu sp str tr pr br gr cr dr fr pl bl cl fl gl sl
""".split()


def single_chars() -> list:
    """Every single character the vocabulary holds: ASCII printable, Latin-1 and Latin
    Extended-A, and some general punctuation. Nothing from CJK, Cyrillic, Greek or emoji."""
    chars = [chr(c) for c in range(0x21, 0x7F)]
    chars += [chr(c) for c in range(0xA1, 0x180) if c != 0xAD]
    chars += ["–", "—", "‘", "’", "“", "”", "„", "…", "€", "•", "™"]
    return chars


def unigram_vocab() -> list:
    """[piece, log probability] pairs in id order: `<pad>` `</s>` `<unk>`, the pieces, then the
    sentinels `<extra_id_99>` ... `<extra_id_0>`.

    Whole words score highest (a word is one piece whenever the vocabulary has it), then subword
    pieces, then single characters, so segmentations look like a real SentencePiece model's.
    Scores depend only on the rank within each group: deterministic."""
    words = []
    for group in (ENGLISH, GERMAN, FRENCH):
        for w in group:
            words += [w, w.lower(), w.capitalize()]
    word_pieces = ["▁" + w for w in words]
    subwords = []
    for w in words:
        # Word starts and ends, so unseen inflections split into real pieces.
        for k in (2, 3, 4):
            if len(w) > k:
                subwords += ["▁" + w[:k], w[-k:]]
    subwords += AFFIXES + ["▁" + a for a in AFFIXES]
    singles = ["▁"] + single_chars()

    vocab = [[PAD, 0.0], [EOS, 0.0], [UNK, 0.0]]
    seen = {PAD, EOS, UNK}

    def add(pieces: list, base: float, step: float) -> None:
        rank = 0
        for piece in pieces:
            if piece in seen:
                continue
            seen.add(piece)
            vocab.append([piece, round(base - step * math.log1p(rank), 4)])
            rank += 1

    add(word_pieces, -6.0, 0.25)
    add(subwords, -8.5, 0.2)
    add(singles, -10.0, 0.1)
    return vocab + [[f"<extra_id_{i}>", 0.0] for i in range(EXTRA_IDS - 1, -1, -1)]


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


def tokenizer_json(vocab: list) -> dict:
    """The tokenizer.json transformers 5.17's `T5Tokenizer(vocab=...)` saves (keys in the order
    the tokenizers library writes them)."""
    first_extra = len(vocab) - EXTRA_IDS
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    eos = {"SpecialToken": {"id": EOS, "type_id": 0}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token(0, PAD), added_token(1, EOS), added_token(2, UNK)]
        + [added_token(i, vocab[i][0]) for i in range(first_extra, len(vocab))],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, eos],
            "pair": [
                {"Sequence": {"id": "A", "type_id": 0}},
                eos,
                {"Sequence": {"id": "B", "type_id": 0}},
                eos,
            ],
            "special_tokens": {EOS: {"id": EOS, "ids": [1], "tokens": [EOS]}},
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 2, "vocab": vocab, "byte_fallback": False},
    }


# What transformers 5.17's `save_pretrained` writes for a T5Tokenizer (it writes no
# special_tokens_map.json; the one below is the classic file of published T5 checkpoints).
TOKENIZER_CONFIG = {
    "backend": "tokenizers",
    "eos_token": EOS,
    "extra_ids": EXTRA_IDS,
    "extra_special_tokens": [f"<extra_id_{i}>" for i in range(EXTRA_IDS)],
    "model_max_length": MODEL_MAX_LENGTH,
    "pad_token": PAD,
    "tokenizer_class": "T5Tokenizer",
    "unk_token": UNK,
}

SPECIAL_TOKENS_MAP = {
    "additional_special_tokens": [f"<extra_id_{i}>" for i in range(EXTRA_IDS)],
    "eos_token": EOS,
    "pad_token": PAD,
    "unk_token": UNK,
}

# generation_config.json as transformers 5.17 writes it for a T5 config.
GENERATION_CONFIG = {
    "_from_model_config": True,
    "decoder_start_token_id": 0,
    "eos_token_id": 1,
    "pad_token_id": 0,
    "transformers_version": "5.17.0",
}


def config_vocab_size(tokenizer_size: int) -> int:
    """The tokenizer size rounded up to a multiple of 8, plus 8 unused rows."""
    return -(-tokenizer_size // 8) * 8 + 8


def model_config(spec: dict, vocab_size: int) -> dict:
    """config.json in the layout of published T5 checkpoints (t5-small, flan-t5-small)."""
    gated = spec["feed_forward_proj"].startswith("gated-")
    return {
        "architectures": ["T5ForConditionalGeneration"],
        "d_ff": spec["d_ff"],
        "d_kv": spec["d_kv"],
        "d_model": spec["d_model"],
        "decoder_start_token_id": 0,
        "dense_act_fn": "gelu_new" if gated else "relu",
        "dropout_rate": 0.1,
        "dtype": "float32",
        "eos_token_id": 1,
        "feed_forward_proj": spec["feed_forward_proj"],
        "initializer_factor": 1.0,
        "is_encoder_decoder": True,
        "is_gated_act": gated,
        "layer_norm_epsilon": 1e-06,
        "model_type": "t5",
        "n_positions": 512,
        "num_decoder_layers": spec["num_layers"],
        "num_heads": spec["num_heads"],
        "num_layers": spec["num_layers"],
        "pad_token_id": 0,
        "relative_attention_max_distance": spec["max_distance"],
        "relative_attention_num_buckets": spec["buckets"],
        "tie_word_embeddings": spec["tie_word_embeddings"],
        "use_cache": True,
        "vocab_size": vocab_size,
    }


# ----------------------------------------------------------------------------------------------
# Weights.


class Init:
    """Deterministic random parameters, drawn in the order they are requested."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}

    def normal(self, name: str, shape: tuple, std: float, mean: float = 0.0) -> None:
        self.tensors[name] = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)

    def norm(self, name: str, dim: int) -> None:
        self.normal(f"{name}.weight", (dim,), NORM_STD, mean=1.0)


def attention(init: Init, name: str, spec: dict, relative_bias: bool) -> None:
    d, inner = spec["d_model"], spec["num_heads"] * spec["d_kv"]
    qk_std = math.sqrt(QK_LOGIT_STD / (d * math.sqrt(spec["d_kv"])))
    init.normal(f"{name}.q.weight", (inner, d), qk_std)
    init.normal(f"{name}.k.weight", (inner, d), qk_std)
    init.normal(f"{name}.v.weight", (inner, d), 1.0 / math.sqrt(d))
    init.normal(f"{name}.o.weight", (d, inner), spec["residual_gain"] * EMBED_STD / math.sqrt(inner))
    if relative_bias:
        init.normal(f"{name}.relative_attention_bias.weight", (spec["buckets"], spec["num_heads"]), REL_BIAS_STD)


def feed_forward(init: Init, name: str, spec: dict, gain: float) -> None:
    d, ff = spec["d_model"], spec["d_ff"]
    if spec["feed_forward_proj"].startswith("gated-"):
        init.normal(f"{name}.wi_0.weight", (ff, d), 1.0 / math.sqrt(d))
        init.normal(f"{name}.wi_1.weight", (ff, d), 1.0 / math.sqrt(d))
    else:
        init.normal(f"{name}.wi.weight", (ff, d), 1.0 / math.sqrt(d))
    init.normal(f"{name}.wo.weight", (d, ff), gain * spec["residual_gain"] * EMBED_STD / math.sqrt(ff))
    if not spec["feed_forward_proj"].startswith("gated-"):
        # ReLU outputs have a positive mean, the same for every input: rows of `wo` summing to
        # zero keep that mean from adding one fixed direction to every position (which made
        # the tied head repeat one token).
        wo = init.tensors[f"{name}.wo.weight"]
        init.tensors[f"{name}.wo.weight"] = (wo - wo.mean(axis=1, keepdims=True)).astype(np.float32)


def t5_weights(spec: dict, vocab_size: int) -> dict:
    """Every stored parameter of transformers' T5ForConditionalGeneration."""
    init = Init(spec["seed"])
    d = spec["d_model"]
    init.normal("shared.weight", (vocab_size, d), EMBED_STD)
    for stack in ("encoder", "decoder"):
        ff_layer = 1 if stack == "encoder" else 2
        for i in range(spec["num_layers"]):
            p = f"{stack}.block.{i}.layer"
            init.norm(f"{p}.0.layer_norm", d)
            attention(init, f"{p}.0.SelfAttention", spec, relative_bias=i == 0)
            if stack == "decoder":
                init.norm(f"{p}.1.layer_norm", d)
                attention(init, f"{p}.1.EncDecAttention", spec, relative_bias=False)
            init.norm(f"{p}.{ff_layer}.layer_norm", d)
            last = stack == "decoder" and i == spec["num_layers"] - 1
            feed_forward(init, f"{p}.{ff_layer}.DenseReluDense", spec, spec["last_ff_gain"] if last else 1.0)
        init.norm(f"{stack}.final_layer_norm", d)
    if not spec["tie_word_embeddings"]:
        init.normal("lm_head.weight", (vocab_size, d), LM_HEAD_STD)
    # A longer EOS row of the head makes EOS win now and then, so some outputs end early.
    head = "shared.weight" if spec["tie_word_embeddings"] else "lm_head.weight"
    init.tensors[head][1] *= np.float32(spec["eos_gain"])
    return init.tensors


# ----------------------------------------------------------------------------------------------
# Writing: the safetensors encoder and JSON writer of build_tiny_text.py (the same bytes).


def write_model(folder: Path, spec: dict, vocab: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = spec.get("vocab_size", config_vocab_size(len(vocab)))
    write_json(folder / "config.json", model_config(spec, vocab_size))
    write_json(folder / "generation_config.json", GENERATION_CONFIG)
    (folder / "model.safetensors").write_bytes(safetensors_bytes(t5_weights(spec, vocab_size)))
    # No final newline, as the tokenizers library writes it.
    write_json(folder / "tokenizer.json", tokenizer_json(vocab), newline="")
    write_json(folder / "tokenizer_config.json", TOKENIZER_CONFIG)
    write_json(folder / "special_tokens_map.json", SPECIAL_TOKENS_MAP)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--model"]:
        if len(args) != 3 or args[1] not in FULL_SIZE:
            raise SystemExit(f"usage: build_tiny_t5.py --model NAME OUT_DIR (NAME: {', '.join(FULL_SIZE)})")
        models = {args[1]: FULL_SIZE[args[1]]}
        args = args[2:]
    elif len(args) == 1:
        models = MODELS
    else:
        raise SystemExit("usage: build_tiny_t5.py [--model NAME] OUT_DIR")
    out = Path(args[0])
    vocab = unigram_vocab()
    for name, spec in models.items():
        write_model(out / name, spec, vocab)


if __name__ == "__main__":
    main()
