"""The Python ONNX Runtime side of `cargo xtask bench clip`: the same vision_model.onnx as
dp's ONNX provider, the same session settings (intra-op threads --threads, every graph
optimization), on the same pixel_values (raw little-endian float32 [B, 3, H, W] of
--pixels, written by clip_transformers.py --write-pixels).

Runs in .dp-assets/venv-onnx (xtask/requirements/python-onnx.txt). Prints one JSON object:
`image_s`, seconds per `session.run(["image_embeds"], {"pixel_values": ...})`, after one
warm-up call, for at least --min-seconds and --min-calls calls; `probe_norm`,
`probe_mix`, `probe_dim`: the norm of the first image's embedding and its dot product with
the vector (sin i), which xtask compares across runners.
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def probe(embedding) -> dict:
    """What xtask compares across runners: the embedding's norm, and its dot product with
    the vector (sin i)."""
    import numpy as np

    v = np.asarray(embedding, dtype=np.float64)
    return {
        "probe_norm": float(np.sqrt((v * v).sum())),
        "probe_mix": float((v * np.sin(np.arange(v.size))).sum()),
        "probe_dim": int(v.size),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--pixels", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--min-calls", type=int, default=3)
    args = parser.parse_args()

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(f"{args.model_dir}/vision_model.onnx", options, providers=["CPUExecutionProvider"])
    side = session.get_inputs()[0].shape[2]
    if not isinstance(side, int):
        with open(f"{args.model_dir}/config.json", encoding="utf-8") as f:
            side = json.load(f)["vision_config"]["image_size"]
    pixels = np.fromfile(args.pixels, dtype="<f4").reshape(-1, 3, side, side)

    def embed():
        return session.run(["image_embeds"], {"pixel_values": pixels})[0]

    first = embed()
    assert first.shape[0] == pixels.shape[0], first.shape
    samples = []
    start = time.perf_counter()
    while len(samples) < args.min_calls or time.perf_counter() - start < args.min_seconds:
        t = time.perf_counter()
        embed()
        samples.append(time.perf_counter() - t)
    json.dump(
        {
            "image_s": samples,
            "batch": int(pixels.shape[0]),
            **probe(first[0].tolist()),
            "threads": args.threads,
            "onnxruntime": ort.__version__,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
