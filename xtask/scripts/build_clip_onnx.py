"""Builds the two ONNX graphs of a Hugging Face CLIP model from its safetensors, without PyTorch.

Run by `cargo xtask setup` (asset `tiny-clip-onnx`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt:

    python build_clip_onnx.py SOURCE_DIR OUT_DIR

SOURCE_DIR holds `model.safetensors` and `config.json` of a `CLIPModel` (quick_gelu, the
openai token ids: the text is pooled at `input_ids.argmax(-1)`). OUT_DIR receives:

- `vision_model.onnx`: `pixel_values` fp32 [batch, 3, image_size, image_size] ->
  `image_embeds` fp32 [batch, projection_dim] (visual_projection(post_layernorm(CLS)), not
  normalized) and `logit_scale` fp32 [1] (exp of the stored logit_scale);
- `text_model.onnx`: `input_ids`, `attention_mask` int64 [batch, sequence] -> `text_embeds`
  fp32 [batch, projection_dim] (text_projection(final_layer_norm(h))[argmax(input_ids)], not
  normalized) and `logit_scale` fp32 [1]. Attention is causal and skips padded keys, as in
  transformers' CLIPTextTransformer; a row with no key left attends uniformly, as there.

The output is byte-deterministic (fixed node and tensor names, fixed producer fields, no
timestamps, deterministic protobuf serialization), so setup pins its sha256.
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
PRODUCER = "dp-models xtask/scripts/build_clip_onnx.py"
PRODUCER_VERSION = "1"


def read_safetensors(path: Path) -> dict:
    """Every F32 tensor of a safetensors file (u64 header length, JSON header, data)."""
    data = path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = memoryview(data)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: tensor {name} has dtype {info['dtype']}, expected F32")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"]).astype(np.float32)
    return tensors


class Graph:
    """Collects nodes and initializers with deterministic names."""

    def __init__(self, weights: dict):
        self.weights = weights
        self.nodes = []
        self.initializers = []
        self.names = set()
        self.counter = 0

    def const(self, name: str, array: np.ndarray) -> str:
        if name not in self.names:
            self.names.add(name)
            # np.array, not np.ascontiguousarray: that one turns 0-d scalars into [1].
            self.initializers.append(numpy_helper.from_array(np.array(array, order="C"), name))
        return name

    def weight(self, key: str, transpose: bool = False) -> str:
        array = self.weights[key]
        return self.const(key, array.T if transpose else array)

    def op(self, op_type: str, inputs: list, prefix: str, **attrs) -> str:
        self.counter += 1
        name = f"{prefix}/{op_type}_{self.counter}"
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def linear(self, x: str, key: str, prefix: str, bias: bool = True) -> str:
        """x @ W^T (+ b), with W stored transposed so MatMul reads it row-major."""
        y = self.op("MatMul", [x, self.weight(f"{key}.weight", transpose=True)], prefix)
        return self.op("Add", [y, self.weight(f"{key}.bias")], prefix) if bias else y

    def layer_norm(self, x: str, key: str, eps: float, prefix: str) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.weight(f"{key}.weight"), self.weight(f"{key}.bias")],
            prefix,
            axis=-1,
            epsilon=eps,
        )

    def encoder(self, x: str, tower: str, config: dict, bias: str | None) -> str:
        """CLIP's pre-LayerNorm encoder; `bias` is an additive attention mask [batch, 1, q, k] or None."""
        hidden = config["hidden_size"]
        heads = config["num_attention_heads"]
        head_dim = hidden // heads
        eps = float(config["layer_norm_eps"])
        if config["hidden_act"] != "quick_gelu":
            raise SystemExit(f"{tower}: hidden_act {config['hidden_act']!r}, expected quick_gelu")
        split = self.const(f"{tower}/const/split_heads", np.array([0, 0, heads, head_dim], np.int64))
        merge = self.const(f"{tower}/const/merge_heads", np.array([0, 0, hidden], np.int64))
        scale = self.const(f"{tower}/const/scale", np.array(1.0 / math.sqrt(head_dim), np.float32))
        gelu = self.const("const/quick_gelu", np.array(1.702, np.float32))
        for i in range(config["num_hidden_layers"]):
            key = f"{tower}.encoder.layers.{i}"
            p = f"{tower}/layer{i}/attention"
            h = self.layer_norm(x, f"{key}.layer_norm1", eps, p)
            q = self.op("Reshape", [self.linear(h, f"{key}.self_attn.q_proj", p), split], p)
            k = self.op("Reshape", [self.linear(h, f"{key}.self_attn.k_proj", p), split], p)
            v = self.op("Reshape", [self.linear(h, f"{key}.self_attn.v_proj", p), split], p)
            q = self.op("Transpose", [q], p, perm=[0, 2, 1, 3])  # [batch, heads, seq, head_dim]
            k = self.op("Transpose", [k], p, perm=[0, 2, 3, 1])  # [batch, heads, head_dim, seq]
            v = self.op("Transpose", [v], p, perm=[0, 2, 1, 3])
            scores = self.op("Mul", [self.op("MatMul", [q, k], p), scale], p)
            if bias is not None:
                scores = self.op("Add", [scores, bias], p)
            probs = self.op("Softmax", [scores], p, axis=-1)
            context = self.op("Transpose", [self.op("MatMul", [probs, v], p)], p, perm=[0, 2, 1, 3])
            context = self.op("Reshape", [context, merge], p)
            x = self.op("Add", [x, self.linear(context, f"{key}.self_attn.out_proj", p)], p)

            p = f"{tower}/layer{i}/mlp"
            h = self.layer_norm(x, f"{key}.layer_norm2", eps, p)
            h = self.linear(h, f"{key}.mlp.fc1", p)
            # quick_gelu: h * sigmoid(1.702 h).
            h = self.op("Mul", [h, self.op("Sigmoid", [self.op("Mul", [h, gelu], p)], p)], p)
            x = self.op("Add", [x, self.linear(h, f"{key}.mlp.fc2", p)], p)
        return x

    def logit_scale(self, prefix: str) -> str:
        stored = self.weights["logit_scale"].reshape([1])
        return self.op("Exp", [self.const("logit_scale_log", stored)], prefix)

    def model(self, name: str, inputs: list, outputs: list, results: list) -> onnx.ModelProto:
        for result, info in zip(results, outputs):
            self.nodes.append(helper.make_node("Identity", [result], [info.name], name=f"output/{info.name}"))
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER,
            producer_version=PRODUCER_VERSION,
        )
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model, full_check=True)
        return model


def vision_model(config: dict, weights: dict) -> onnx.ModelProto:
    vc = config["vision_config"]
    hidden, size, patch = vc["hidden_size"], vc["image_size"], vc["patch_size"]
    dim = config["projection_dim"]
    g = Graph(weights)
    p = "vision/embeddings"
    patches = g.op(
        "Conv",
        ["pixel_values", g.weight("vision_model.embeddings.patch_embedding.weight")],
        p,
        kernel_shape=[patch, patch],
        strides=[patch, patch],
    )  # [batch, hidden, grid, grid]
    patches = g.op("Reshape", [patches, g.const("vision/const/flatten", np.array([0, hidden, -1], np.int64))], p)
    patches = g.op("Transpose", [patches], p, perm=[0, 2, 1])  # [batch, grid*grid, hidden]
    batch = g.op(
        "Slice",
        [
            g.op("Shape", ["pixel_values"], p),
            g.const("const/zero_index", np.array([0], np.int64)),
            g.const("const/one_index", np.array([1], np.int64)),
        ],
        p,
    )
    cls_shape = g.op("Concat", [batch, g.const("vision/const/cls_tail", np.array([1, hidden], np.int64))], p, axis=0)
    cls = g.const("vision_model.embeddings.class_embedding", weights["vision_model.embeddings.class_embedding"].reshape(1, 1, hidden))
    cls = g.op("Expand", [cls, cls_shape], p)
    x = g.op("Concat", [cls, patches], p, axis=1)
    x = g.op("Add", [x, g.weight("vision_model.embeddings.position_embedding.weight")], p)
    x = g.layer_norm(x, "vision_model.pre_layrnorm", float(vc["layer_norm_eps"]), p)
    x = g.encoder(x, "vision_model", vc, None)
    p = "vision/head"
    pooled = g.op("Gather", [x, g.const("const/zero_scalar", np.array(0, np.int64))], p, axis=1)  # CLS: [batch, hidden]
    pooled = g.layer_norm(pooled, "vision_model.post_layernorm", float(vc["layer_norm_eps"]), p)
    embeds = g.linear(pooled, "visual_projection", p, bias=False)
    scale = g.logit_scale(p)
    inputs = [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, size, size])]
    outputs = [
        helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", dim]),
        helper.make_tensor_value_info("logit_scale", TensorProto.FLOAT, [1]),
    ]
    return g.model("clip_vision_model", inputs, outputs, [embeds, scale])


def text_model(config: dict, weights: dict) -> onnx.ModelProto:
    tc = config["text_config"]
    if tc.get("eos_token_id") != 2:
        raise SystemExit("text_config.eos_token_id must be 2 (pooling at input_ids.argmax(-1), as openai's CLIP)")
    dim = config["projection_dim"]
    g = Graph(weights)
    p = "text/embeddings"
    tokens = g.op("Gather", [g.weight("text_model.embeddings.token_embedding.weight"), "input_ids"], p, axis=0)
    shape = g.op("Shape", ["input_ids"], p)
    seq_len = g.op("Gather", [shape, g.const("const/one_index", np.array([1], np.int64))], p, axis=0)
    zero = g.const("const/zero_index", np.array([0], np.int64))
    positions = g.op("Slice", [g.weight("text_model.embeddings.position_embedding.weight"), zero, seq_len, zero], p)
    x = g.op("Add", [tokens, positions], p)

    # Additive mask [batch, 1, seq, seq]: 0 where key j <= query i and j is not padding,
    # float32 min elsewhere (one min, never a sum of two, like transformers' masks).
    p = "text/mask"
    seq_scalar = g.op("Squeeze", [seq_len, zero], p)
    index = g.op(
        "Range",
        [g.const("const/zero_scalar", np.array(0, np.int64)), seq_scalar, g.const("const/one_scalar", np.array(1, np.int64))],
        p,
    )
    keys = g.op("Unsqueeze", [index, zero], p)  # [1, seq]
    queries = g.op("Unsqueeze", [index, g.const("const/one_index", np.array([1], np.int64))], p)  # [seq, 1]
    causal = g.op("LessOrEqual", [keys, queries], p)  # [seq, seq]
    present = g.op("Cast", ["attention_mask"], p, to=TensorProto.BOOL)
    present = g.op("Unsqueeze", [present, g.const("text/const/mask_axes", np.array([1, 2], np.int64))], p)
    allowed = g.op("And", [causal, present], p)
    bias = g.op(
        "Where",
        [
            allowed,
            g.const("text/const/zero_f32", np.array(0.0, np.float32)),
            g.const("text/const/f32_min", np.array(np.finfo(np.float32).min, np.float32)),
        ],
        p,
    )
    x = g.encoder(x, "text_model", tc, bias)
    p = "text/head"
    x = g.layer_norm(x, "text_model.final_layer_norm", float(tc["layer_norm_eps"]), p)
    # The end-of-text token has the largest id: pool at the first argmax, as transformers does.
    eos = g.op("ArgMax", ["input_ids"], p, axis=1, keepdims=1)  # [batch, 1]
    pooled = g.op("GatherND", [x, eos], p, batch_dims=1)  # [batch, hidden]
    embeds = g.linear(pooled, "text_projection", p, bias=False)
    scale = g.logit_scale(p)
    dims = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in ("input_ids", "attention_mask")]
    outputs = [
        helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", dim]),
        helper.make_tensor_value_info("logit_scale", TensorProto.FLOAT, [1]),
    ]
    return g.model("clip_text_model", inputs, outputs, [embeds, scale])


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: build_clip_onnx.py SOURCE_DIR OUT_DIR")
    source, out = Path(sys.argv[1]), Path(sys.argv[2])
    config = json.loads((source / "config.json").read_text())
    if config.get("model_type") != "clip":
        raise SystemExit(f"{source}/config.json: model_type is not clip")
    weights = read_safetensors(source / "model.safetensors")
    out.mkdir(parents=True, exist_ok=True)
    for name, build in (("vision_model.onnx", vision_model), ("text_model.onnx", text_model)):
        (out / name).write_bytes(build(config, weights).SerializeToString(deterministic=True))


if __name__ == "__main__":
    main()
