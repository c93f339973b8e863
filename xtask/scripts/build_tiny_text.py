"""Builds the tiny random-weight text models (embedders and rerankers) in the Hugging Face /
sentence-transformers layout, without PyTorch.

Run by `cargo xtask setup` (asset `tiny-text`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt (only numpy and the standard library are used):

    python build_tiny_text.py MINILM_DIR OUT_DIR

MINILM_DIR is the all-MiniLM-L6-v2 folder of the `minilm` asset: the BERT models take its real
WordPiece tokenizer (`tokenizer.json`, `vocab.txt`, `special_tokens_map.json` copied byte for
byte; `tokenizer_config.json` with model_max_length set to the model's). OUT_DIR receives one
folder per model of MODELS below:

- `tiny-xlmr-e5`: `XLMRobertaModel` (hidden 32, 2 layers, 4 heads, FFN 64, 130 positions),
  mean pooling, Normalize, prompts "query: " / "passage: " (the multilingual-e5 recipe);
- `tiny-bert-cls`: `BertModel` (hidden 48, 3 layers, 3 heads, FFN 96, 128 positions), CLS
  pooling, Normalize, the bge-style query prompt, max_seq_length 64;
- `tiny-reranker`: `BertForSequenceClassification` with one label (hidden 32, 2 layers), a
  sentence-transformers CrossEncoder whose activation is Sigmoid;
- `tiny-xlmr-reranker`: `XLMRobertaForSequenceClassification` with one label (hidden 32,
  2 layers), CrossEncoder activation Identity (raw logits).

Both XLM-R models share `tokenizer.json`, written here by hand: a SentencePiece-style Unigram
model over a few thousand pieces (whole English, German, French and Spanish words, subword
pieces, every character of Latin-1, Latin Extended-A, Greek, Cyrillic, kana, a CJK and Hangul
subset and a few emoji), `<s>`=0 `<pad>`=1 `</s>`=2 `<unk>`=3 and `<mask>` last, with the
pre-tokenizer, decoder and post-processor transformers 5's `XLMRobertaTokenizer` builds itself
(WhitespaceSplit then Metaspace "▁" always; no normalizer, because that class keeps a
normalizer only when it is a SentencePiece `Precompiled` one), so transformers and the
`tokenizers` library read the file alike.

Weights are float32 from numpy's `default_rng(seed)`: LayerNorm weights ~ N(1, 0.05), biases
~ N(0, 0.02), linear weights ~ N(0, 1/fan_in), word embeddings std 0.1 and position / token-type
embeddings std 0.02 (so different texts get clearly different embeddings), the rerankers' last
classifier layer with gain 4 (so scores spread away from sigmoid's 0.5).
Every file is byte-deterministic, so `xtask/src/setup/text.rs` pins their sha256.

Bigger models of FULL_SIZE below (the shapes of intfloat/multilingual-e5-small and
cross-encoder/ms-marco-MiniLM-L6-v2) are written on request only, for benchmarks:

    python build_tiny_text.py --model xlmr-e5-small-random MINILM_DIR OUT_DIR
"""

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np

# The version block sentence-transformers 6.0.1 writes into config_sentence_transformers.json.
ST_VERSION = {"pytorch": "2.11.0+cu130", "sentence_transformers": "6.0.1", "transformers": "5.17.0"}

E5_PROMPTS = {"query": "query: ", "passage": "passage: "}
BGE_PROMPTS = {"query": "Represent this sentence for searching relevant passages: ", "passage": ""}

SIGMOID = "torch.nn.modules.activation.Sigmoid"
IDENTITY = "torch.nn.modules.linear.Identity"

# kind: "embed" (a SentenceTransformer: encoder, pooling, Normalize) or "rerank" (a CrossEncoder).
MODELS = {
    "tiny-xlmr-e5": {
        "seed": 20261210,
        "arch": "xlm-roberta",
        "kind": "embed",
        "hidden": 32,
        "layers": 2,
        "heads": 4,
        "intermediate": 64,
        "max_seq_length": 128,
        "pooling": "mean",
        "prompts": E5_PROMPTS,
    },
    "tiny-bert-cls": {
        "seed": 20261211,
        "arch": "bert",
        "kind": "embed",
        "hidden": 48,
        "layers": 3,
        "heads": 3,
        "intermediate": 96,
        "max_seq_length": 64,
        "pooling": "cls",
        "prompts": BGE_PROMPTS,
    },
    "tiny-reranker": {
        "seed": 20261212,
        "arch": "bert",
        "kind": "rerank",
        "hidden": 32,
        "layers": 2,
        "heads": 4,
        "intermediate": 64,
        "max_seq_length": 128,
        "activation": SIGMOID,
    },
    "tiny-xlmr-reranker": {
        "seed": 20261213,
        "arch": "xlm-roberta",
        "kind": "rerank",
        "hidden": 32,
        "layers": 2,
        "heads": 4,
        "intermediate": 64,
        "max_seq_length": 128,
        "activation": IDENTITY,
    },
}

# On request only (`--model NAME`), never by setup.
FULL_SIZE = {
    # intfloat/multilingual-e5-small's shapes (its 250k vocabulary excepted: the tiny tokenizer).
    "xlmr-e5-small-random": {
        "seed": 20261214,
        "arch": "xlm-roberta",
        "kind": "embed",
        "hidden": 384,
        "layers": 12,
        "heads": 12,
        "intermediate": 1536,
        "max_positions": 514,
        "max_seq_length": 512,
        "pooling": "mean",
        "prompts": E5_PROMPTS,
    },
    # cross-encoder/ms-marco-MiniLM-L6-v2's shapes.
    "bert-reranker-minilm-random": {
        "seed": 20261215,
        "arch": "bert",
        "kind": "rerank",
        "hidden": 384,
        "layers": 6,
        "heads": 12,
        "intermediate": 1536,
        "max_positions": 512,
        "max_seq_length": 512,
        "activation": SIGMOID,
    },
}

BERT_VOCAB_SIZE = 30522
XLMR_PADDING_IDX = 1

# ----------------------------------------------------------------------------------------------
# The Unigram vocabulary of the XLM-R models.

ENGLISH = """
the of and to in is was for on that with as by at from it his an were are which this be or
has had not but first one their its new after who they have her she two been other when there
all during into school time may years more most only over city some world would where later up
such used many can state about national out known university united then made national between
through film also city people under will part three year game season team work we how what why
water life day long number house history good great high small large old young great little man
woman child children family friend home country language music book word words name place way
hand head eye eyes face light night morning evening today week month weather rain sun sky sea
river mountain tree trees flower flowers cat cats dog dogs bird fish horse animal animals food
bread milk coffee tea wine beer apple apples red blue green yellow black white color photo picture
image text sentence question answer search query passage document result results model models
data learning machine computer phone car train bus road street station airport hotel room table
chair door window city town village market shop money price work job office meeting company
business science health doctor hospital medicine energy power sound voice song art paper letter
story news report study research information system service problem question example number
hello world thanks please yes no maybe quick brown fox jumps lazy running runs ran walking walked
playing played reading read writing wrote written learn learned teaching teacher student students
beautiful happy sad fast slow easy hard big best better good bad true false open close closed
capital france germany spain italy europe paris berlin madrid london rome tokyo china japan korea
english german french spanish chinese japanese korean translation translate multilingual
embedding embeddings vector vectors similarity relevant relevance rank ranking rerank retrieval
""".split()

GERMAN = """
der die das und ist nicht ein eine einen einem einer ich du er sie es wir ihr mit von zu den dem
des auf für im in an aus bei nach über unter vor durch ohne gegen um bis seit auch noch schon nur
sehr gut groß klein neu alt jung schön schnell langsam heute morgen gestern Haus Hund Katze Kinder
Kind Mann Frau Stadt Land Straße Wasser Brot Milch Kaffee Bier Wein Buch Bücher Wort Wörter Sprache
Welt Zeit Jahr Jahre Tag Tage Woche Monat Nacht Abend Sonne Regen Himmel Meer Fluss Berg Baum Bäume
Blume Blumen Vogel Fisch Pferd Tier Tiere Schule Universität Arbeit Geld Preis Zug Bahnhof Flughafen
Hauptstadt Deutschland Frankreich Spanien Europa Übersetzung Frage Antwort Suche Ergebnis Ergebnisse
Grüße Straßenbahn Mädchen Junge Fräulein Größe Müller Schmidt schön übermorgen Äpfel Apfel Öl
fünf zwölf heißen heißt gehen geht kommen kommt sprechen spricht lesen liest schreiben schreibt
haben hat sein sind war waren werden wird können kann müssen muss wollen will möchte danke bitte ja
nein vielleicht hallo Tschüss Guten Tag Nachrichten Bericht Wissenschaft Gesundheit Arzt Krankenhaus
""".split()

FRENCH = """
le la les un une des et est être avoir de du au aux en dans sur sous avec pour par sans chez que qui
quoi où il elle ils elles nous vous je tu on ce cette ces mon ma mes ton ta tes son sa ses notre votre
leur très bien bon bonne beau belle grand grande petit petite nouveau nouvelle vieux jeune rapide lent
aujourd'hui demain hier maison chien chat chats enfant enfants homme femme ville pays rue eau pain lait
café vin bière livre livres mot mots langue monde temps année jour jours semaine mois nuit soir soleil
pluie ciel mer rivière montagne arbre arbres fleur fleurs oiseau poisson cheval animal animaux école
université travail argent prix train gare aéroport capitale France Allemagne Espagne Europe traduction
question réponse recherche résultat résultats été élève français française première deuxième
où déjà très après être fenêtre garçon français Noël naïve crème brûlée château forêt hôpital hôtel
merci bonjour bonsoir salut oui non peut-être parler parle lire lit écrire écrit aller va venir vient
nouvelles rapport science santé médecin
""".split()

SPANISH = """
el la los las un una unos unas y es son ser estar está están de del al en con por para sin sobre entre
que quien qué cómo dónde cuándo yo tú él ella nosotros vosotros ellos ellas mi mis tu tus su sus
muy bien bueno buena malo grande pequeño pequeña nuevo nueva viejo joven rápido lento hoy mañana ayer
casa perro gato niño niña niños hombre mujer ciudad país calle agua pan leche café vino cerveza libro
libros palabra palabras idioma mundo tiempo año años día días semana mes noche tarde sol lluvia cielo
mar río montaña árbol árboles flor flores pájaro pez caballo animal animales escuela universidad
trabajo dinero precio tren estación aeropuerto capital España Francia Alemania Europa traducción
pregunta respuesta búsqueda resultado resultados señor señora año corazón canción información
gracias hola adiós sí no quizás hablar habla leer lee escribir escribe ir va venir viene
noticias informe ciencia salud médico hospital pingüino vergüenza
""".split()

# Subword pieces, with and without the word-start mark.
AFFIXES = """
s es ed ing er ers est ly tion tions ment ments ness able ible al ial ic ical ous ive ity ize ise
un re pre dis in im non over under sub inter trans
en ern ung ungen heit keit lich isch chen lein ig er st te ten ge be ver zer ent
eur euse eux ette ement tion ique iste isme ée és ées ir re
ción ciones mente ado ada ados adas ido ida idos idas ando iendo oso osa dad idad ero era
a e i o u an ar or on at al el il ol ul la le li lo lu ma me mi mo mu na ne ni no nu ra ri ro ru
ta ti to tu sa se si so su da de di do du ca co cu pa pe pi po pu ba bi bo bu ga go gu va vi vo
th ch sch sh ph qu st sp str tr pr br gr cr dr fr pl bl cl fl gl sl
""".split()

# A subset of frequent Chinese and Japanese characters, a few CJK words, and Hangul.
CJK_CHARS = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学"
    "对可她里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面"
    "公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部"
    "正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信北少关"
    "并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难神数件安"
    "表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物台象记边共"
    "風語言葉東京都大阪本日曜火木金土私彼女学校先生電車駅会社仕事時間今日明日昨日猫犬花空海山川雨雪"
    "の は が を に で と も へ や か な た て し い う る れ ま す ん こ そ あ"
)
CJK_WORDS = """
中国 日本 北京 东京 上海 世界 你好 谢谢 我们 他们 中文 汉字 学生 老师 大学 今天 明天 时间 问题 因为 所以
東京 日本語 世界 学校 先生 電車 会社 仕事 時間 今日 明日 こんにちは ありがとう です ます した する
안녕하세요 감사합니다 한국 한국어 서울 사랑 학교 사람
""".split()
HANGUL = "안녕하세요감사합니다한국어서울사랑학교사람이가은는을를의에도로와과고다요"
EMOJI = "😀😂🙂😊😍👍🙏🎉❤🔥🚀🌍✨⭐☕🍕🐱🐶"


def char_ranges() -> list:
    """Every single character the vocabulary holds (ASCII printable, Latin-1 and Latin
    Extended-A letters and signs, Greek, Cyrillic, general punctuation, kana)."""
    chars = [chr(c) for c in range(0x21, 0x7F)]
    chars += [chr(c) for c in range(0xA1, 0x180) if c != 0xAD]
    chars += [chr(c) for c in range(0x391, 0x3CA) if c != 0x3A2]
    chars += [chr(c) for c in range(0x410, 0x450)] + ["Ё", "ё"]
    chars += ["–", "—", "‘", "’", "“", "”", "„", "…", "€", "•", "™", "。", "、", "「", "」", "！", "？", "，", "：", "（", "）"]
    chars += [chr(c) for c in range(0x3041, 0x3097)] + [chr(c) for c in range(0x30A1, 0x30FB)] + ["ー"]
    chars += list(CJK_CHARS.replace(" ", "")) + list(HANGUL) + list(EMOJI)
    return chars


def unigram_vocab() -> list:
    """[piece, log probability] pairs: specials first (ids 0-3), the pieces, `<mask>` last.

    Whole words score highest (a word is one piece whenever the vocabulary has it), then
    subword pieces, then single characters, so segmentations look like a real SentencePiece
    model's. Scores depend only on the rank within each group: deterministic."""
    words = []
    for group in (ENGLISH, GERMAN, FRENCH, SPANISH):
        for w in group:
            words += [w, w.lower(), w.capitalize()]
    word_pieces = ["▁" + w for w in words] + ["▁" + w for w in CJK_WORDS] + CJK_WORDS
    subwords = []
    for w in words:
        # Word starts and ends of the words, so unseen inflections split into real pieces.
        for k in (2, 3, 4):
            if len(w) > k:
                subwords += ["▁" + w[:k], w[-k:]]
    subwords += AFFIXES + ["▁" + a for a in AFFIXES]
    singles = ["▁"] + char_ranges()

    vocab, seen = [], {"<s>", "<pad>", "</s>", "<unk>", "<mask>"}

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
    return [["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]] + vocab + [["<mask>", 0.0]]


def added_token(id_: int, content: str, lstrip: bool = False) -> dict:
    return {
        "id": id_,
        "content": content,
        "single_word": False,
        "lstrip": lstrip,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def xlmr_tokenizer_json(vocab: list) -> dict:
    """The XLM-R tokenizer.json (keys in the order the tokenizers library writes them)."""
    mask_id = len(vocab) - 1
    metaspace = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            added_token(0, "<s>"),
            added_token(1, "<pad>"),
            added_token(2, "</s>"),
            added_token(3, "<unk>"),
            added_token(mask_id, "<mask>", lstrip=True),
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, metaspace]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": {"id": "</s>", "type_id": 0}},
            ],
            "special_tokens": {
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]},
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
            },
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": False},
    }


def xlmr_tokenizer_config(vocab: list, max_length: int) -> dict:
    specials = {
        0: added_token(0, "<s>"),
        1: added_token(1, "<pad>"),
        2: added_token(2, "</s>"),
        3: added_token(3, "<unk>"),
        len(vocab) - 1: added_token(len(vocab) - 1, "<mask>", lstrip=True),
    }
    return {
        "add_prefix_space": True,
        "added_tokens_decoder": {str(k): {n: v for n, v in t.items() if n != "id"} for k, t in specials.items()},
        "backend": "tokenizers",
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": "<mask>",
        "model_max_length": max_length,
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "tokenizer_class": "XLMRobertaTokenizer",
        "unk_token": "<unk>",
    }


XLMR_SPECIAL_TOKENS_MAP = {
    "bos_token": "<s>",
    "cls_token": "<s>",
    "eos_token": "</s>",
    "mask_token": {"content": "<mask>", "lstrip": True, "normalized": False, "rstrip": False, "single_word": False},
    "pad_token": "<pad>",
    "sep_token": "</s>",
    "unk_token": "<unk>",
}

# ----------------------------------------------------------------------------------------------
# Configs.


def model_config(spec: dict, vocab_size: int) -> dict:
    xlmr = spec["arch"] == "xlm-roberta"
    rerank = spec["kind"] == "rerank"
    if xlmr:
        positions = spec.get("max_positions", spec["max_seq_length"] + XLMR_PADDING_IDX + 1)
        arch = "XLMRobertaForSequenceClassification" if rerank else "XLMRobertaModel"
    else:
        positions = spec.get("max_positions", 128)
        arch = "BertForSequenceClassification" if rerank else "BertModel"
    config = {
        "architectures": [arch],
        "attention_probs_dropout_prob": 0.1,
    }
    if xlmr:
        config["bos_token_id"] = 0
    config["classifier_dropout"] = None
    config["dtype"] = "float32"
    if xlmr:
        config["eos_token_id"] = 2
    config.update(
        {
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "hidden_size": spec["hidden"],
        }
    )
    if rerank:
        config["id2label"] = {"0": "LABEL_0"}
    config.update({"initializer_range": 0.02, "intermediate_size": spec["intermediate"]})
    if rerank:
        config["label2id"] = {"LABEL_0": 0}
    config.update(
        {
            "layer_norm_eps": 1e-05 if xlmr else 1e-12,
            "max_position_embeddings": positions,
            "model_type": "xlm-roberta" if xlmr else "bert",
            "num_attention_heads": spec["heads"],
            "num_hidden_layers": spec["layers"],
            "pad_token_id": XLMR_PADDING_IDX if xlmr else 0,
            "position_embedding_type": "absolute",
        }
    )
    if rerank:
        config["sentence_transformers"] = {"activation_fn": spec["activation"], "version": ST_VERSION["sentence_transformers"]}
    config.update(
        {
            "type_vocab_size": 1 if xlmr else 2,
            "use_cache": True,
            "vocab_size": vocab_size,
        }
    )
    return config


# ----------------------------------------------------------------------------------------------
# Weights.


class Init:
    """Deterministic random parameters, drawn in the order they are requested."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.tensors = {}

    def normal(self, name: str, shape: tuple, std: float, mean: float = 0.0) -> None:
        self.tensors[name] = (mean + std * self.rng.standard_normal(shape)).astype(np.float32)

    def linear(self, name: str, out_dim: int, in_dim: int, gain: float = 1.0) -> None:
        self.normal(f"{name}.weight", (out_dim, in_dim), gain / math.sqrt(in_dim))
        self.normal(f"{name}.bias", (out_dim,), 0.02)

    def layer_norm(self, name: str, dim: int) -> None:
        self.normal(f"{name}.weight", (dim,), 0.05, mean=1.0)
        self.normal(f"{name}.bias", (dim,), 0.02)


def encoder_weights(spec: dict, vocab_size: int, positions: int, type_vocab: int) -> dict:
    """Every parameter of Hugging Face's BertModel / XLMRobertaModel / their ...ForSequenceClassification."""
    init = Init(spec["seed"])
    h, ffn = spec["hidden"], spec["intermediate"]
    xlmr = spec["arch"] == "xlm-roberta"
    rerank = spec["kind"] == "rerank"
    base = ("roberta." if xlmr else "bert.") if rerank else ""
    # Words dominate positions and token types, so different texts get different embeddings.
    init.normal(f"{base}embeddings.word_embeddings.weight", (vocab_size, h), 0.1)
    init.normal(f"{base}embeddings.position_embeddings.weight", (positions, h), 0.02)
    init.normal(f"{base}embeddings.token_type_embeddings.weight", (type_vocab, h), 0.02)
    init.layer_norm(f"{base}embeddings.LayerNorm", h)
    for i in range(spec["layers"]):
        p = f"{base}encoder.layer.{i}"
        for proj in ("query", "key", "value"):
            init.linear(f"{p}.attention.self.{proj}", h, h)
        init.linear(f"{p}.attention.output.dense", h, h)
        init.layer_norm(f"{p}.attention.output.LayerNorm", h)
        init.linear(f"{p}.intermediate.dense", ffn, h)
        init.linear(f"{p}.output.dense", h, ffn)
        init.layer_norm(f"{p}.output.LayerNorm", h)
    # XLMRobertaForSequenceClassification has no pooler (add_pooling_layer=False).
    if not (xlmr and rerank):
        init.linear(f"{base}pooler.dense", h, h)
    if rerank and xlmr:
        init.linear("classifier.dense", h, h)
        init.linear("classifier.out_proj", 1, h, gain=4.0)
    elif rerank:
        # A larger gain spreads the logits over a few units (sigmoid scores away from 0.5).
        init.linear("classifier", 1, h, gain=4.0)
    return init.tensors


def safetensors_bytes(tensors: dict) -> bytes:
    """The safetensors encoding: u64 header length, JSON header (names sorted, padded with spaces
    to 8 bytes), then the little-endian data in header order."""
    header = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


# ----------------------------------------------------------------------------------------------
# Writing.


def write_json(path: Path, value, newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + newline, encoding="utf-8")


def write_model(folder: Path, spec: dict, minilm: Path, xlmr_vocab: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    xlmr = spec["arch"] == "xlm-roberta"
    vocab_size = len(xlmr_vocab) if xlmr else BERT_VOCAB_SIZE
    config = model_config(spec, vocab_size)
    write_json(folder / "config.json", config)
    weights = encoder_weights(spec, vocab_size, config["max_position_embeddings"], config["type_vocab_size"])
    (folder / "model.safetensors").write_bytes(safetensors_bytes(weights))

    max_length = spec["max_seq_length"]
    if xlmr:
        # No final newline, as the tokenizers library writes it.
        write_json(folder / "tokenizer.json", xlmr_tokenizer_json(xlmr_vocab), newline="")
        write_json(folder / "tokenizer_config.json", xlmr_tokenizer_config(xlmr_vocab, max_length))
        write_json(folder / "special_tokens_map.json", XLMR_SPECIAL_TOKENS_MAP)
    else:
        for name in ("tokenizer.json", "vocab.txt", "special_tokens_map.json"):
            (folder / name).write_bytes((minilm / name).read_bytes())
        tokenizer_config = json.loads((minilm / "tokenizer_config.json").read_text(encoding="utf-8"))
        tokenizer_config["model_max_length"] = max_length
        write_json(folder / "tokenizer_config.json", tokenizer_config)

    if spec["kind"] == "embed":
        write_json(
            folder / "modules.json",
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ],
        )
        write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
        cls = spec["pooling"] == "cls"
        write_json(
            folder / "1_Pooling" / "config.json",
            {
                "word_embedding_dimension": spec["hidden"],
                "pooling_mode_cls_token": cls,
                "pooling_mode_mean_tokens": not cls,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": False,
                "pooling_mode_lasttoken": False,
                "include_prompt": True,
            },
        )
        write_json(
            folder / "config_sentence_transformers.json",
            {
                "__version__": ST_VERSION,
                "default_prompt_name": None,
                "model_type": "SentenceTransformer",
                "prompts": spec["prompts"],
                "similarity_fn_name": "cosine",
            },
        )


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--model"]:
        if len(args) != 4 or args[1] not in FULL_SIZE:
            raise SystemExit(f"usage: build_tiny_text.py --model NAME MINILM_DIR OUT_DIR (NAME: {', '.join(FULL_SIZE)})")
        models = {args[1]: FULL_SIZE[args[1]]}
        args = args[2:]
    elif len(args) == 2:
        models = MODELS
    else:
        raise SystemExit("usage: build_tiny_text.py [--model NAME] MINILM_DIR OUT_DIR")
    minilm, out = Path(args[0]), Path(args[1])
    vocab = unigram_vocab()
    for name, spec in models.items():
        write_model(out / name, spec, minilm, vocab)


if __name__ == "__main__":
    main()
