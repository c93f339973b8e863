"""Builds the ONNX graph of a BERT or XLM-RoBERTa encoder, or of its one-label sequence
classifier (a cross-encoder reranker), from its safetensors, without PyTorch.

Run by `cargo xtask setup` (asset `tiny-text-onnx`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt:

    python build_encoder_onnx.py SOURCE_DIR OUT_DIR

SOURCE_DIR holds `config.json` and `model.safetensors` of a Hugging Face `BertModel`,
`XLMRobertaModel`, `BertForSequenceClassification` or `XLMRobertaForSequenceClassification`;
OUT_DIR receives `model.onnx`. Inputs are int64 [batch, sequence]: `input_ids`,
`attention_mask`, and `token_type_ids` for BERT only (XLM-R has one token type: row 0 is
added everywhere, as transformers does when no token_type_ids are given). Output:

- encoders: `last_hidden_state`, float32 [batch, sequence, hidden] (before any pooling);
- sequence classifiers: `logits`, float32 [batch, num_labels], the raw classifier output (no
  sigmoid: the activation is the caller's). BERT: classifier(tanh(pooler.dense(h[:, 0])));
  XLM-R: out_proj(tanh(dense(h[:, 0]))).

XLM-R positions are transformers' `create_position_ids_from_input_ids`:
padding_idx + cumsum(input_ids != padding_idx) * (input_ids != padding_idx), so they follow
the pad tokens of input_ids, not attention_mask.

The graph reuses the node and weight helpers of build_minilm_onnx.py (whose MiniLM graph is
unchanged) and is byte-deterministic, so `xtask/src/setup/text.rs` pins its sha256.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.dont_write_bytecode = True  # no __pycache__ beside the scripts
sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_minilm_onnx import IR_VERSION, OPSET, Graph, read_safetensors  # noqa: E402

PRODUCER = "dp-models xtask/scripts/build_encoder_onnx.py"
PRODUCER_VERSION = "1"

ARCHITECTURES = {
    "BertModel": ("bert", ""),
    "BertForSequenceClassification": ("bert", "bert."),
    "XLMRobertaModel": ("xlm-roberta", ""),
    "XLMRobertaForSequenceClassification": ("xlm-roberta", "roberta."),
}


def scalar(g: Graph, name: str, value: np.ndarray) -> str:
    """A 0-d initializer (Graph.const stores arrays through np.ascontiguousarray, which makes
    a 0-d array 1-d)."""
    g.initializers.append(numpy_helper.from_array(value, name))
    return name


def build(source: Path) -> onnx.ModelProto:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    arch = (config.get("architectures") or [""])[0]
    if arch not in ARCHITECTURES or config.get("hidden_act") != "gelu":
        raise SystemExit(f"{source}/config.json: expected one of {', '.join(ARCHITECTURES)} with erf GELU, got {arch!r}")
    model_type, prefix = ARCHITECTURES[arch]
    if config.get("model_type") != model_type:
        raise SystemExit(f"{source}/config.json: {arch} with model_type {config.get('model_type')!r}")
    classifier = arch.endswith("ForSequenceClassification")
    xlmr = model_type == "xlm-roberta"
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    eps = float(config["layer_norm_eps"])

    # Encoder weights under their BertModel names (the prefix of a classifier dropped).
    weights = {}
    for key, value in read_safetensors(source / "model.safetensors").items():
        weights[key[len(prefix) :] if prefix and key.startswith(prefix) else key] = value
    g = Graph(weights)

    p = "embeddings"
    word = g.op1("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"], p, axis=0)
    if xlmr:
        pad = config["pad_token_id"]
        is_token = g.op1("Not", [g.op1("Equal", ["input_ids", g.const("const/pad_id", np.array(pad, np.int64))], p)], p)
        is_token = g.op1("Cast", [is_token], p, to=TensorProto.INT64)
        counts = g.op1("CumSum", [is_token, scalar(g, "const/seq_axis", np.array(1, np.int64))], p)
        position_ids = g.op1("Add", [g.op1("Mul", [counts, is_token], p), g.const("const/padding_idx", np.array(pad, np.int64))], p)
        positions = g.op1("Gather", [g.weight("embeddings.position_embeddings.weight"), position_ids], p, axis=0)
        # One token type: its row 0, broadcast over batch and sequence.
        kind = g.const("embeddings.token_type_embeddings.weight/row0", weights["embeddings.token_type_embeddings.weight"][0])
    else:
        kind = g.op1("Gather", [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], p, axis=0)
        shape = g.op1("Shape", ["input_ids"], p)
        seq_len = g.op1("Gather", [shape, g.const("const/one_index", np.array([1], np.int64))], p, axis=0)
        zero = g.const("const/zero_index", np.array([0], np.int64))
        positions = g.op1("Slice", [g.weight("embeddings.position_embeddings.weight"), zero, seq_len, zero], p)
    x = g.op1("Add", [g.op1("Add", [word, kind], p), positions], p)
    x = g.layer_norm(x, "embeddings.LayerNorm", eps, p)

    # Additive attention mask, [batch, 1, 1, seq]: 0 where attended, float32 min where padded.
    p = "mask"
    mask = g.op1("Cast", ["attention_mask"], p, to=TensorProto.FLOAT)
    inverted = g.op1("Sub", [g.const("const/one_f32", np.array(1.0, np.float32)), mask], p)
    bias = g.op1("Mul", [inverted, g.const("const/f32_min", np.array(np.finfo(np.float32).min, np.float32))], p)
    bias = g.op1("Unsqueeze", [bias, g.const("const/mask_axes", np.array([1, 2], np.int64))], p)

    split_heads = g.const("const/split_heads_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = g.const("const/merge_heads_shape", np.array([0, 0, hidden], np.int64))
    scale = g.const("const/attention_scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
    half = g.const("const/half", np.array(0.5, np.float32))
    one = g.const("const/one_f32_gelu", np.array(1.0, np.float32))
    inv_sqrt2 = g.const("const/inv_sqrt2", np.array(1.0 / math.sqrt(2.0), np.float32))

    for i in range(config["num_hidden_layers"]):
        key = f"encoder.layer.{i}"
        p = f"layer{i}/attention"
        q = g.op1("Reshape", [g.linear(x, f"{key}.attention.self.query", p), split_heads], p)
        k = g.op1("Reshape", [g.linear(x, f"{key}.attention.self.key", p), split_heads], p)
        v = g.op1("Reshape", [g.linear(x, f"{key}.attention.self.value", p), split_heads], p)
        q = g.op1("Transpose", [q], p, perm=[0, 2, 1, 3])  # [batch, heads, seq, head_dim]
        k = g.op1("Transpose", [k], p, perm=[0, 2, 3, 1])  # [batch, heads, head_dim, seq]
        v = g.op1("Transpose", [v], p, perm=[0, 2, 1, 3])
        scores = g.op1("Mul", [g.op1("MatMul", [q, k], p), scale], p)
        probs = g.op1("Softmax", [g.op1("Add", [scores, bias], p)], p, axis=-1)
        context = g.op1("Transpose", [g.op1("MatMul", [probs, v], p)], p, perm=[0, 2, 1, 3])
        context = g.op1("Reshape", [context, merge_heads], p)
        attended = g.linear(context, f"{key}.attention.output.dense", p)
        x = g.layer_norm(g.op1("Add", [attended, x], p), f"{key}.attention.output.LayerNorm", eps, p)

        p = f"layer{i}/ffn"
        h = g.linear(x, f"{key}.intermediate.dense", p)
        # Exact GELU: 0.5 * h * (1 + erf(h / sqrt(2))).
        erf = g.op1("Erf", [g.op1("Mul", [h, inv_sqrt2], p)], p)
        h = g.op1("Mul", [g.op1("Mul", [h, half], p), g.op1("Add", [erf, one], p)], p)
        out = g.linear(h, f"{key}.output.dense", p)
        x = g.layer_norm(g.op1("Add", [out, x], p), f"{key}.output.LayerNorm", eps, p)

    dims = ["batch", "sequence"]
    if classifier:
        p = "head"
        first = g.op1("Gather", [x, scalar(g, "const/first_token", np.array(0, np.int64))], p, axis=1)  # [batch, hidden]
        if xlmr:
            pooled = g.op1("Tanh", [g.linear(first, "classifier.dense", p)], p)
            logits = g.linear(pooled, "classifier.out_proj", p)
            labels = weights["classifier.out_proj.weight"].shape[0]
        else:
            pooled = g.op1("Tanh", [g.linear(first, "pooler.dense", p)], p)
            logits = g.linear(pooled, "classifier", p)
            labels = weights["classifier.weight"].shape[0]
        g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="output/Identity"))
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])]
    else:
        g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output/Identity"))
        outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*dims, hidden])]

    names = ("input_ids", "attention_mask") if xlmr else ("input_ids", "attention_mask", "token_type_ids")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in names]
    graph_name = f"{model_type.replace('-', '_')}_{'classifier' if classifier else 'encoder'}"
    graph = helper.make_graph(g.nodes, graph_name, inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version=PRODUCER_VERSION,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: build_encoder_onnx.py SOURCE_DIR OUT_DIR")
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    model = build(source)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model.SerializeToString(deterministic=True))


if __name__ == "__main__":
    main()
