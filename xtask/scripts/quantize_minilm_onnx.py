"""Quantizes the ONNX MiniLM's weights to int8 (ONNX Runtime's dynamic quantization).

Run by `cargo xtask setup` (asset `minilm-onnx-int8`) in the hash-pinned venv of
xtask/requirements/python-onnx.txt, which has onnxruntime 1.31.1:

    python quantize_minilm_onnx.py FP32_MODEL OUT_MODEL

FP32_MODEL is the `model.onnx` of the `minilm-onnx` asset; OUT_MODEL receives the same graph
with the weights of its 36 weight matrix products stored as int8, one scale per output
channel (`QuantType.QInt8`, `per_channel`), and their activations quantized on the fly at
run time (`DynamicQuantizeLinear`, `MatMulInteger`). The attention's products of two
activations stay fp32 (`MatMulConstBOnly`), and so do the embeddings' lookups and every
normalization. Inputs and outputs stay those of the fp32 graph (int64 ids in, fp32
`last_hidden_state` out), so the same preset and provider run it.

Accuracy (measured against the fp32 graph on the 21 reference sentences of
tests/data/reference/minilm_l6_v2_sentence_transformers.json): min cosine 0.977 (mean
0.990) in one batch, 0.980 one sentence at a time (the empty string is the worst); per
tensor instead of per channel gave 0.855, leaving the feed-forward outputs in fp32 0.984
at 1.4x instead of 2x the fp32 speed. Dynamic quantization takes one activation scale per
batch, so a sentence's vector depends a little on its batch-mates.

The output is byte-deterministic for a given input and onnxruntime version (the scales are
the weights' own minimum and maximum), so its sha256 can be pinned in the spec.
"""

import logging
import sys
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: quantize_minilm_onnx.py FP32_MODEL OUT_MODEL")
    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    # quantize_dynamic logs advice about shape-inference pre-processing, which is for
    # static quantization; it changes nothing here.
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(
        model_input=source,
        model_output=target,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        reduce_range=False,
        extra_options={"MatMulConstBOnly": True},
    )


if __name__ == "__main__":
    main()
