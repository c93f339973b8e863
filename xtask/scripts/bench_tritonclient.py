"""The Python anchor of `cargo xtask bench triton`: sequential requests to the `affine`
model with tritonclient[http] (its defaults: binary tensor data), printing requests/s.

Usage: bench_tritonclient.py HOST:PORT small|large SECONDS (small: a [1, 16] FP32 tensor;
large: a 1 MiB [1, 262144] FP32 tensor)
"""

import sys
import time

import numpy as np
import tritonclient.http as httpclient


def main() -> None:
    url, mode, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    sizes = {"small": 16, "large": 262_144}
    if mode not in sizes:
        raise SystemExit(f"unknown mode {mode!r}")
    n = sizes[mode]
    client = httpclient.InferenceServerClient(url=url)
    x = (np.arange(n, dtype=np.float32) % 1000) * np.float32(0.5)
    x = x.reshape(1, n)
    inp = httpclient.InferInput("x", [1, n], "FP32")
    inp.set_data_from_numpy(x)
    out = httpclient.InferRequestedOutput("y")
    y = client.infer("affine", [inp], outputs=[out]).as_numpy("y")
    if not np.array_equal(y, 2 * x + 1):
        raise SystemExit("affine returned a wrong answer")
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        client.infer("affine", [inp], outputs=[out])
        count += 1
    print(f"{count / (time.perf_counter() - start):.3f}")


if __name__ == "__main__":
    main()
