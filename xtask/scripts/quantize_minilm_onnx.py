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
    count = Rewriter(model.graph).rewrite()
    if count == 0:
        sys.exit(f"{source}: no MatMul with a weight matrix to quantize")
    onnx.checker.check_model(model)
    onnx.save(model, target)


if __name__ == "__main__":
    main()
