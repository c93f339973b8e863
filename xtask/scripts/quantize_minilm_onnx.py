"""Quantizes an ONNX text encoder's weight products to int8, with activation scales per row.

Run by `cargo xtask setup` (asset `minilm-onnx-int8`) and by `cargo xtask bench text` (the
XLM-R and reranker int8 graphs) in the hash-pinned venv of
xtask/requirements/python-onnx.txt, which has onnx and onnxruntime 1.31.1:

    python quantize_minilm_onnx.py FP32_MODEL OUT_MODEL

Every `MatMul` whose second input is a weight matrix `[K, N]` becomes an integer product:

- weights: int8, symmetric, one scale per output column, in [-64, 64];
- activations: uint8, asymmetric, one scale and zero point per row (per token), computed at
  run time from the row's minimum and maximum (`QuantizeLinear` along the rows);
- the product: `com.microsoft.MatMulIntegerToFloat` (both scales applied), minus the zero
  point's share (`zero_point x scale x column sums`, one outer product).

Why not `onnxruntime.quantization.quantize_dynamic`: it takes one activation scale per call,
so one outlying token sets the resolution of every other; per row, every token gets its own
(and a text's vector no longer depends on what shares its call). On the 21 reference
sentences that took the minimum cosine to the fp32 graph from 0.977 to 0.991 (mean 0.990 to
0.997). Why [-64, 64]: x86 CPUs without VNNI multiply uint8 by int8 in pairs summed in
saturating 16 bits; 2 x 255 x 64 = 32640 always fits, so every CPU computes the same exact
integers (with 8-bit weights, 0.9935 on VNNI but saturated sums elsewhere).

Before quantizing, two constant shifts move out of the products' inputs into biases, which
is exact in real arithmetic and changes what is quantized, not what is computed:

- a layer norm whose outputs feed only weight products and residual sums loses its bias
  `beta`: each product's bias gains `beta @ W`, each residual partner's bias gains `beta`;
- the value projection's bias passes through the attention unchanged (softmax rows sum to
  one), so it moves onto the attention output product's bias (`b_v @ W_o`).

Per-row ranges are then taken around the data, not around a constant per-channel offset:
on the 21 reference sentences the minimum cosine to the fp32 graph rose from 0.9915 to 0.9931.
A folding the script cannot prove (a node read elsewhere, an unexpected pattern) is left
out, and it runs both fp32 graphs on a padded batch and stops if their outputs differ.

The bias `Add` after each product stays a node of its own: given a bias, ONNX Runtime 1.31's
MatMulIntegerToFloat with per-row activation scales returned wrong values (cosine 0.46).
The attention's products of two activations, the embeddings and the normalizations stay fp32.
Inputs and outputs are those of the fp32 graph, so the same preset and provider run it. The
output is byte-deterministic (NumPy rounding of the weights, fixed node names), so its
sha256 can be pinned in the spec.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Activation levels (uint8, zero point per row).
ACTIVATION_LEVELS = 255.0
#: The largest weight magnitude (int8): 2 x 255 x 64 fits a signed 16-bit sum.
WEIGHT_LEVELS = 64.0
#: ONNX Runtime's contrib operators.
CONTRIB = "com.microsoft"


class ShiftFolder:
    """Moves constant per-channel shifts out of the weight products' inputs into biases."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.initializers = {i.name: i for i in graph.initializer}
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict = {}
        for n in graph.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in graph.output}
        self.folded_norms = 0

    def private_initializer(self, name: str) -> bool:
        """An initializer one node reads once: changing it changes only that node."""
        return name in self.initializers and len(self.consumers.get(name, [])) == 1

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[name]).astype(np.float64)

    def weight_of(self, node) -> "np.ndarray | None":
        """A weight product's matrix, if `node` is one."""
        if node.op_type != "MatMul" or node.input[1] not in self.initializers:
            return None
        weight = self.initializers[node.input[1]]
        return self.array(weight.name) if len(weight.dims) == 2 else None

    def bias_after(self, node) -> "str | None":
        """The bias initializer of the `Add` that alone reads `node`'s output, read nowhere
        else (so changing it changes only this sum)."""
        readers = self.consumers.get(node.output[0], [])
        if len(readers) != 1 or node.output[0] in self.outputs:
            return None
        (add,) = readers
        if add.op_type != "Add" or add.input[0] != node.output[0]:
            return None
        bias = add.input[1]
        return bias if self.private_initializer(bias) else None

    def only_reader(self, name: str):
        readers = self.consumers.get(name, [])
        return readers[0] if len(readers) == 1 and name not in self.outputs else None

    def layer_norm_shifts(self) -> dict:
        """`beta` of each layer norm read only by weight products and residual sums."""
        moves: dict = {}
        for norm in self.graph.node:
            if norm.op_type != "LayerNormalization" or len(norm.input) < 3 or not norm.input[2]:
                continue
            out = norm.output[0]
            if out in self.outputs or not self.private_initializer(norm.input[2]):
                continue
            beta = self.array(norm.input[2])
            plan = []
            for reader in self.consumers.get(out, []):
                weight = self.weight_of(reader)
                if weight is not None and reader.input[0] == out and (bias := self.bias_after(reader)):
                    plan.append((bias, beta @ weight))
                    continue
                if reader.op_type == "Add":
                    partner = reader.input[1] if reader.input[0] == out else reader.input[0]
                    sum_node = self.producer.get(partner)
                    if sum_node is not None and sum_node.op_type == "Add" and self.only_reader(partner) is reader:
                        if self.private_initializer(sum_node.input[1]):
                            plan.append((sum_node.input[1], beta))
                            continue
                plan = None
                break
            if plan:
                for bias, shift in plan:
                    moves[bias] = moves.get(bias, 0.0) + shift
                del norm.input[2]
                self.folded_norms += 1
        return moves

    def value_shifts(self, moves: dict) -> int:
        """The value bias of each attention, moved onto its output product's bias."""
        count = 0
        # A copy: the loop removes the value sums it folds from the graph.
        for product in list(self.graph.node):
            probabilities = self.producer.get(product.input[0]) if product.op_type == "MatMul" else None
            if probabilities is None or probabilities.op_type != "Softmax":
                continue
            values = product.input[1]
            while values in self.producer and self.producer[values].op_type in ("Reshape", "Transpose"):
                if self.only_reader(values) is None:
                    break
                values = self.producer[values].input[0]
            value_add = self.producer.get(values)
            if value_add is None or value_add.op_type != "Add" or self.only_reader(values) is None:
                continue
            value_bias = value_add.input[1]
            if not self.private_initializer(value_bias):
                continue
            value_product = self.producer.get(value_add.input[0])
            if value_product is None or self.only_reader(value_add.input[0]) is not value_add:
                continue
            reader = self.only_reader(product.output[0])
            while reader is not None and reader.op_type in ("Reshape", "Transpose"):
                reader = self.only_reader(reader.output[0])
            weight = self.weight_of(reader) if reader is not None else None
            output_bias = self.bias_after(reader) if weight is not None else None
            if output_bias is None:
                continue
            shift = self.array(value_bias) + moves.pop(value_bias, 0.0)
            moves[output_bias] = moves.get(output_bias, 0.0) + shift @ weight
            # The value sum goes: its product writes what the sum wrote.
            value_product.output[0] = value_add.output[0]
            self.graph.node.remove(value_add)
            count += 1
        return count

    def fold(self) -> tuple:
        """Folds every shift it can prove constant; returns (layer norms, attentions) folded."""
        moves = self.layer_norm_shifts()
        attentions = self.value_shifts(moves)
        for name, shift in moves.items():
            old = self.initializers[name]
            new = (self.array(name) + shift).astype(numpy_helper.to_array(old).dtype)
            old.CopyFrom(numpy_helper.from_array(new, name))
        return self.folded_norms, attentions


def check_folding_is_exact(original: bytes, folded: onnx.ModelProto) -> None:
    """Runs both fp32 graphs on one padded batch: the folding must not change what the
    graph computes beyond float rounding (a graph builder whose pattern it misreads stops
    here, not in a model that quietly computes something else)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 100, (2, 11))
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    feeds = {}
    for value in folded.graph.input:
        name = value.name
        feeds[name] = mask if "mask" in name else np.zeros_like(ids) if "type" in name else ids
    options = ort.SessionOptions()
    options.log_severity_level = 3

    def run(model: bytes) -> list:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]).run(None, feeds)

    for want, got in zip(run(original), run(folded.SerializeToString())):
        diff = float(np.abs(want - got).max())
        if not diff <= 1e-4 * max(1.0, float(np.abs(want).max())):
            sys.exit(f"folding the shifts changed the fp32 graph's output by {diff}: not exact")


class Rewriter:
    """Builds the quantized graph: new nodes in order, new initializers, shared constants."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.graph = graph
        self.weights = {i.name: i for i in graph.initializer}
        self.nodes: list = []
        self.initializers: list = []
        self.row_quantized: dict = {}
        self.constant("q.zero", np.float32(0.0))
        self.constant("q.tiny", np.array([1e-12], np.float32))
        self.constant("q.inverse_levels", np.float32(1.0 / ACTIVATION_LEVELS))
        self.constant("q.flat", np.array([-1], np.int64))

    def constant(self, name: str, value) -> str:
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list, output: str, **attrs) -> str:
        domain = CONTRIB if op == "MatMulIntegerToFloat" else ""
        self.nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attrs))
        return output

    def quantized_rows(self, x: str, width: int) -> tuple:
        """`x` ([..., width] fp32) as uint8 with a scale and zero point per row; each input
        is quantized once however many products read it (Q, K and V share theirs)."""
        if x in self.row_quantized:
            return self.row_quantized[x]
        p = f"q.{x}"
        n = self.node
        # The range always holds 0, so that zero is exact (padding, ReLU-like outputs).
        low = n("Min", [n("ReduceMin", [x], f"{p}.min", axes=[-1], keepdims=1), "q.zero"], f"{p}.low")
        high = n("Max", [n("ReduceMax", [x], f"{p}.max", axes=[-1], keepdims=1), "q.zero"], f"{p}.high")
        span = n("Max", [n("Sub", [high, low], f"{p}.span0"), "q.tiny"], f"{p}.span")
        scale = n("Mul", [span, "q.inverse_levels"], f"{p}.scale")
        zero = n("Neg", [n("Round", [n("Div", [low, scale], f"{p}.low_steps")], f"{p}.low_round")], f"{p}.zero")
        zero_u8 = n("Cast", [zero], f"{p}.zero_u8", to=TensorProto.UINT8)
        rows = self.constant(f"{p}.rows_shape", np.array([-1, width], np.int64))
        flat = n(
            "QuantizeLinear",
            [
                n("Reshape", [x, rows], f"{p}.rows"),
                n("Reshape", [scale, "q.flat"], f"{p}.scale_flat"),
                n("Reshape", [zero_u8, "q.flat"], f"{p}.zero_flat"),
            ],
            f"{p}.u8_rows",
            axis=0,
        )
        quantized = n("Reshape", [flat, n("Shape", [x], f"{p}.shape")], f"{p}.u8")
        # zero point x scale, per row: what the zero point adds to each product, per unit of
        # the weights' column sum.
        offset = n("Mul", [zero, scale], f"{p}.offset")
        self.row_quantized[x] = (quantized, scale, offset)
        return self.row_quantized[x]

    def integer_product(self, node: onnx.NodeProto) -> None:
        weight = numpy_helper.to_array(self.weights[node.input[1]]).astype(np.float32)
        width = weight.shape[0]
        p = f"q.{node.name or node.output[0]}"
        column_scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / WEIGHT_LEVELS).astype(np.float32)
        levels = np.clip(np.round(weight / column_scale), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
        column_sums = (levels.astype(np.int64).sum(axis=0) * column_scale).astype(np.float32)
        quantized, scale, offset = self.quantized_rows(node.input[0], width)
        inputs = [
            quantized,
            self.constant(f"{p}.weight_i8", levels),
            scale,
            self.constant(f"{p}.weight_scale", column_scale),
        ]
        product = self.node("MatMulIntegerToFloat", inputs, f"{p}.product")
        share = self.node("Mul", [offset, self.constant(f"{p}.column_sums", column_sums)], f"{p}.zero_share")
        self.node("Sub", [product, share], node.output[0])

    def rewrite(self) -> int:
        count = 0
        for node in self.graph.node:
            weight = self.weights.get(node.input[1]) if node.op_type == "MatMul" else None
            if weight is not None and len(weight.dims) == 2:
                self.integer_product(node)
                count += 1
            else:
                self.nodes.append(node)
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        self.graph.initializer.extend(self.initializers)
        read = {name for node in self.graph.node for name in node.input}
        kept = [i for i in self.graph.initializer if i.name in read]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        return count


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: quantize_minilm_onnx.py FP32_MODEL OUT_MODEL")
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    model = onnx.load(source)
    if not any(o.domain == CONTRIB for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    original = model.SerializeToString()
    norms, attentions = ShiftFolder(model.graph).fold()
    check_folding_is_exact(original, model)
    count = Rewriter(model.graph).rewrite()
    if count == 0:
        sys.exit(f"{source}: no MatMul with a weight matrix to quantize")
    onnx.checker.check_model(model)
    onnx.save(model, target)
    print(f"{count} weight products quantized; shifts folded: {norms} layer norm biases, {attentions} value biases")


if __name__ == "__main__":
    main()
