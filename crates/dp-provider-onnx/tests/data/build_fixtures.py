"""Writes the small ONNX models the dp-provider-onnx tests run (committed next to this script).

Run with the ONNX venv from `cargo xtask setup`:

    .dp-assets/venv-onnx/bin/python crates/dp-provider-onnx/tests/data/build_fixtures.py

- affine.onnx: y = x @ W + b, x fp32 [batch, 3], W = [[1, 2], [3, 4], [5, 6]], b = [0.5, -1].
- dtypes.onnx: one input and one output per element type the provider moves: fp32, int64 and
  int32 doubled (Add x + x), fp16 and uint8 passed through (Identity), bool negated (Not);
  all one-dimensional and dynamic.
- external_inside/model.onnx: affine.onnx with W and b in `weights.bin` beside it.
- external_outside/model.onnx: the same, but W's data is declared at `../outside.bin`.
"""

import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import convert_model_to_external_data, write_external_data_tensors

HERE = Path(__file__).resolve().parent


def finish(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="dp-models tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def affine():
    w = numpy_helper.from_array(np.array([[1, 2], [3, 4], [5, 6]], np.float32), "W")
    b = numpy_helper.from_array(np.array([0.5, -1.0], np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2])],
        initializer=[w, b],
    )
    return finish(graph)


def dtypes():
    kinds = [
        ("f32", TensorProto.FLOAT, "Add"),
        ("i64", TensorProto.INT64, "Add"),
        ("i32", TensorProto.INT32, "Add"),
        ("f16", TensorProto.FLOAT16, "Identity"),
        ("u8", TensorProto.UINT8, "Identity"),
        ("b", TensorProto.BOOL, "Not"),
    ]
    nodes, inputs, outputs = [], [], []
    for name, ty, op in kinds:
        args = [f"{name}_in", f"{name}_in"] if op == "Add" else [f"{name}_in"]
        nodes.append(helper.make_node(op, args, [f"{name}_out"]))
        inputs.append(helper.make_tensor_value_info(f"{name}_in", ty, ["n"]))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", ty, ["n"]))
    return finish(helper.make_graph(nodes, "dtypes", inputs, outputs))


def write(model, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString(deterministic=True))


def main():
    write(affine(), HERE / "affine.onnx")
    write(dtypes(), HERE / "dtypes.onnx")
    for name in ("external_inside", "external_outside"):
        shutil.rmtree(HERE / name, ignore_errors=True)
        model = affine()
        convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
        (HERE / name).mkdir(parents=True)
        write_external_data_tensors(model, str(HERE / name))
        if name == "external_outside":
            for tensor in model.graph.initializer:
                if tensor.name == "W":
                    for entry in tensor.external_data:
                        if entry.key == "location":
                            entry.value = "../outside.bin"
        write(model, HERE / name / "model.onnx")


if __name__ == "__main__":
    main()
