"""Builds the ONNX graph of a BERT encoder (all-MiniLM-L6-v2) from its safetensors, without PyTorch.

Run by `cargo xtask setup` (asset `minilm-onnx`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt:

    python build_minilm_onnx.py SOURCE_DIR OUT_DIR

SOURCE_DIR holds `model.safetensors` and `config.json` (the sentence-transformers folder);
OUT_DIR receives `model.onnx`. The graph takes `input_ids`, `attention_mask` and
`token_type_ids` (int64, [batch, seq]) and returns `last_hidden_state` (fp32,
[batch, seq, hidden]), the encoder output before pooling, like Hugging Face's BertModel.

The output is byte-deterministic (fixed node and tensor names, fixed producer fields, no
timestamps, deterministic protobuf serialization), so its sha256 can be pinned in the spec.
"""

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # LayerNormalization is a standard op from opset 17 on.
IR_VERSION = 8  # The IR version that goes with opset 17; every ONNX Runtime since 1.11 reads it.
PRODUCER = "dp-models xtask/scripts/build_minilm_onnx.py"
PRODUCER_VERSION = "1"

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(path: Path) -> dict:
    """Reads every tensor of a safetensors file (little-endian u64 header length, JSON header, data)."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = SAFETENSORS_DTYPES.get(info["dtype"])
        if dtype is None:
            raise SystemExit(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        array = np.frombuffer(body[start:end], dtype=np.dtype(dtype).newbyteorder("<"))
        tensors[name] = array.reshape(info["shape"]).astype(np.float32 if dtype != np.int64 else np.int64)
    return tensors


class Graph:
    """Collects nodes and initializers with deterministic names."""

    def __init__(self, weights: dict):
        self.weights = weights
        self.nodes = []
        self.initializers = []
        self.counter = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        array = self.weights[key]
        return self.const(key, array.T if transpose else array)

    def op(self, op_type: str, inputs: list, prefix: str, outputs: int = 1, **attrs) -> list:
        self.counter += 1
        names = [f"{prefix}/{op_type}_{self.counter}" + (f":{i}" if outputs > 1 else "") for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=f"{prefix}/{op_type}_{self.counter}", **attrs))
        return names

    def op1(self, op_type: str, inputs: list, prefix: str, **attrs) -> str:
        return self.op(op_type, inputs, prefix, **attrs)[0]

    def linear(self, x: str, key: str, prefix: str) -> str:
        """x @ W^T + b, with W stored transposed so MatMul reads it row-major."""
        y = self.op1("MatMul", [x, self.weight(f"{key}.weight", transpose=True)], prefix)
        return self.op1("Add", [y, self.weight(f"{key}.bias")], prefix)

    def layer_norm(self, x: str, key: str, eps: float, prefix: str) -> str:
        return self.op1(
            "LayerNormalization",
            [x, self.weight(f"{key}.weight"), self.weight(f"{key}.bias")],
            prefix,
            axis=-1,
            epsilon=eps,
        )


def build(source: Path) -> onnx.ModelProto:
    config = json.loads((source / "config.json").read_text())
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        raise SystemExit(f"{source}/config.json: expected a BERT encoder with erf GELU")
    hidden = config["hidden_size"]
    heads = config["num_attention_heads"]
    head_dim = hidden // heads
    layers = config["num_hidden_layers"]
    eps = float(config["layer_norm_eps"])
    weights = read_safetensors(source / "model.safetensors")
    g = Graph(weights)

    # Embeddings: word + position (rows 0..seq-1) + token type, then LayerNorm.
    p = "embeddings"
    word = g.op1("Gather", [g.weight("embeddings.word_embeddings.weight"), "input_ids"], p, axis=0)
    kind = g.op1("Gather", [g.weight("embeddings.token_type_embeddings.weight"), "token_type_ids"], p, axis=0)
    shape = g.op1("Shape", ["input_ids"], p)
    seq_len = g.op1("Gather", [shape, g.const("const/one_index", np.array([1], np.int64))], p, axis=0)
    zero = g.const("const/zero_index", np.array([0], np.int64))
    positions = g.op1("Slice", [g.weight("embeddings.position_embeddings.weight"), zero, seq_len, zero], p)
    x = g.op1("Add", [g.op1("Add", [word, kind], p), positions], p)
    x = g.layer_norm(x, "embeddings.LayerNorm", eps, p)

    # Additive attention mask, [batch, 1, 1, seq]: 0 where attended, float32 min where padded
    # (as Hugging Face's BertModel does).
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

    for i in range(layers):
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

    g.nodes.append(helper.make_node("Identity", [x], ["last_hidden_state"], name="output/Identity"))

    dims = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [*dims, hidden])]
    graph = helper.make_graph(g.nodes, "bert_encoder", inputs, outputs, initializer=g.initializers)
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
        raise SystemExit("usage: build_minilm_onnx.py SOURCE_DIR OUT_DIR")
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    model = build(source)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(model.SerializeToString(deterministic=True))


if __name__ == "__main__":
    main()
