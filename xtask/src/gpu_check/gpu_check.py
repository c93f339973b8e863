#!/usr/bin/env python3
"""The GPU check of dp-models, run on a machine with an NVIDIA GPU and no Rust toolchain.

`cargo xtask gpu-check` packs this script with a CUDA build of `dp` (xz-compressed), the
specs and files of the small models, and the tokenizer of all-MiniLM-L6-v2 into
`.gpu-check/`; on the GPU machine:

    python3 .gpu-check/gpu_check.py --out DIR

It needs the NVIDIA driver and the CUDA 13 libraries (cuBLAS, cuRAND, the runtime) that
PyTorch's cu130 wheels install (found on `python3`'s path), and for the throughput part
`torch`, `transformers` and `sentence-transformers`. Checks, each recorded in
DIR/gpu-check.json and DIR/gpu-check.md:

1. devices: `auto` and `cuda` resolve to `cuda:0`, `cuda:N` past the last device is
   `device_unavailable`;
2. parity, CUDA vs CPU, of every small model (embeddings: cosine >= 0.9999 per vector;
   generation and transcription: the same texts);
3. the VRAM budget read from the device: a model declaring more than the free memory is
   `insufficient_gpu_memory`; two models declaring 60 % each load one after the other (the
   idle one is evicted) and agree;
4. throughput of a MiniLM-shaped model (random weights made here, the real tokenizer) at
   batches of 32 and 256, dp (candle CUDA) vs sentence-transformers on the same GPU.

`--cpu-dry-run` runs the same flow with the "GPU" specs on the CPU (any dp build): how the
script itself is tested without a GPU. Exit status 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIN_COSINE = 0.9999

# (spec file under specs/, kind): the models the parity check runs on both devices.
EMBEDDERS = ["tiny-bert-cls", "tiny-xlmr-e5", "tiny-clip"]
GENERATORS = ["tiny-t5"]
TRANSCRIBERS = ["tiny-whisper"]

TEXTS = [
    "A cat sits on the warm windowsill.",
    "Quarterly revenue grew by twelve percent.",
    "The train to Lyon leaves at noon.",
    "Photosynthesis turns light into chemical energy.",
    "¿Dónde está la biblioteca?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "short",
    " ".join(["a much longer input that goes on"] * 12),
]


class Check:
    """The results, and whether every check passed."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def record(self, name: str, passed: bool, **figures) -> None:
        self.results.append({"check": name, "passed": passed, **figures})
        mark = "ok" if passed else "FAILED"
        print(f"[{mark}] {name}: {json.dumps(figures, ensure_ascii=False)}", flush=True)

    def not_run(self, name: str, reason: str) -> None:
        self.results.append({"check": name, "passed": None, "reason": reason})
        print(f"[not run] {name}: {reason}", flush=True)

    @property
    def passed(self) -> bool:
        return all(r["passed"] is not False for r in self.results)


def cuda_library_path() -> str:
    """The folders of the CUDA 13 libraries PyTorch's wheels installed, and the driver's."""
    folders = []
    for site in sys.path:
        folders += glob.glob(os.path.join(site, "nvidia", "cu13", "lib"))
        folders += glob.glob(os.path.join(site, "nvidia", "*", "lib"))
    folders += ["/usr/local/nvidia/lib64", "/usr/local/cuda/lib64"]
    seen = []
    for f in folders:
        if os.path.isdir(f) and f not in seen:
            seen.append(f)
    return os.pathsep.join(seen + [os.environ.get("LD_LIBRARY_PATH", "")])


def unpack(packed: Path, target: Path) -> Path:
    with lzma.open(packed) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    target.chmod(0o755)
    return target


def onnxruntime_gpu_library() -> Path | None:
    """The library of an onnxruntime-gpu >= 1.31 installed for python3, if any (what the
    ONNX provider needs for CUDA; older ones lack the API version dp is built for)."""
    try:
        import onnxruntime
    except ImportError:
        return None
    version = tuple(int(x) for x in onnxruntime.__version__.split(".")[:2])
    if version < (1, 31) or "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return None
    capi = Path(onnxruntime.__file__).parent / "capi"
    libraries = sorted(capi.glob("libonnxruntime.so*"))
    return libraries[0] if libraries else None


def variant(spec_text: str, name: str, new_name: str, device: str, drop=()) -> str:
    """A spec under another name and device policy (line edits: the specs are ours)."""
    out = []
    skipping = False
    for line in spec_text.splitlines():
        key = line.split(":", 1)[0]
        if skipping and (line.startswith(" ") or line.startswith("-")):
            continue
        skipping = False
        if key in drop or key == "aliases":
            skipping = key == "aliases"
            continue
        if line.startswith("model_name:"):
            line = f"model_name: {new_name}"
        elif line.startswith("device_policy:"):
            line = f"device_policy: {device}"
        out.append(line)
    text = "\n".join(out) + "\n"
    assert f"model_name: {new_name}" in text, name
    return text


class Dp:
    """Runs the unpacked `dp` on the generated catalog."""

    def __init__(self, dp: Path, catalog: Path, models: Path, env: dict) -> None:
        self.dp, self.catalog, self.models, self.env = dp, catalog, models, env

    def run(self, *args: str, stdin: str | None = None) -> tuple[int, dict | None, str]:
        cmd = [str(self.dp), "--json", "--catalog", str(self.catalog),
               "--models-root", str(self.models), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=self.env)
        try:
            body = json.loads(proc.stdout) if proc.stdout.strip() else None
        except json.JSONDecodeError:
            body = None
        return proc.returncode, body, proc.stderr[-2000:]

    def timed(self, *args: str) -> tuple[int, float, str]:
        """Runs `dp` with its output discarded (parsing megabytes of JSON vectors in Python
        is not what a throughput figure should time): exit status, seconds, stderr."""
        cmd = [str(self.dp), "--json", "--catalog", str(self.catalog),
               "--models-root", str(self.models), *args]
        t = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=self.env)
        return proc.returncode, time.perf_counter() - t, proc.stderr[-2000:]


def error_code(body: dict | None) -> str | None:
    if body and body.get("errors"):
        return body["errors"][0].get("error_code")
    return None


def write_spec(catalog: Path, role: str, name: str, text: str) -> None:
    folder = catalog / role
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(text)


def role_of(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("role:"):
            return line.split(":", 1)[1].strip()
    raise ValueError("spec without role")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check-out"))
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run the flow with the GPU specs on the CPU (tests the script)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    gpu = "cpu" if args.cpu_dry_run else "cuda"
    check = Check()
    work = Path(tempfile.mkdtemp(prefix="dp-gpu-check-"))
    env = dict(os.environ, LD_LIBRARY_PATH=cuda_library_path(), RUST_LOG="warn")
    dp_path = unpack(HERE / "dp.xz", work / "dp")
    # The CPU library of the onnxruntime 1.31.1 wheel (the one dp's tests use).
    env["ORT_DYLIB_PATH"] = str(unpack(HERE / "onnxruntime.xz", work / "libonnxruntime.so"))
    catalog = work / "catalog"
    models = HERE / "models"
    specs = {p.stem: p.read_text() for p in (HERE / "specs").glob("*.yaml")}

    for name, text in specs.items():
        role = role_of(text)
        write_spec(catalog, role, f"{name}-cpu", variant(text, name, f"{name}-cpu", "cpu"))
        write_spec(catalog, role, f"{name}-gpu", variant(text, name, f"{name}-gpu", gpu))
    dp = Dp(dp_path, catalog, models, env)

    # 1. Devices (in a dry run on a CPU build: `auto` is the CPU, `cuda:99` refused too).
    name = EMBEDDERS[0]
    if name in specs:
        write_spec(catalog, role_of(specs[name]), f"{name}-auto",
                   variant(specs[name], name, f"{name}-auto", "auto"))
        write_spec(catalog, role_of(specs[name]), f"{name}-cuda99",
                   variant(specs[name], name, f"{name}-cuda99", "cuda:99"))
        rc, body, err = dp.run("resolve", f"{name}-auto")
        device = (body or {}).get("models_used", [{}])[0].get("device") if body else None
        if device is None and body:
            device = body.get("device")
        expected = "cpu" if args.cpu_dry_run else "cuda:0"
        check.record(f"auto resolves to {expected}", rc == 0 and device == expected,
                     device=device, rc=rc, stderr=err if rc else "")
        rc, body, err = dp.run("embed", "--model", f"{name}-cuda99", stdin=json.dumps(TEXTS))
        check.record("cuda:99 is device_unavailable", error_code(body) == "device_unavailable",
                     rc=rc, error_code=error_code(body))

    # 2. Parity, GPU vs CPU.
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(TEXTS))
    for name in EMBEDDERS:
        rc, body, err = dp.run("parity", f"{name}-cpu", f"{name}-gpu", "--input", str(texts_file),
                               "--tolerance", str(MIN_COSINE))
        figures = {k: (body or {}).get(k) for k in ("min_cosine", "max_abs_diff", "inputs")}
        devices = [m.get("device") for m in (body or {}).get("models_used", [])]
        check.record(f"{name} texts: GPU vs CPU", rc == 0, devices=devices, **figures,
                     stderr=err if rc else "")
    images = sorted(str(p) for p in (HERE / "images").glob("*"))
    if images:
        image_args = [a for img in images for a in ("--image", img)]
        rc, body, err = dp.run("parity", "tiny-clip-cpu", "tiny-clip-gpu", *image_args,
                               "--tolerance", str(MIN_COSINE))
        figures = {k: (body or {}).get(k) for k in ("min_cosine", "max_abs_diff", "inputs")}
        check.record("tiny-clip images: GPU vs CPU", rc == 0, **figures,
                     stderr=err if rc else "")
    onnx(check, dp, specs, catalog, texts_file, args.cpu_dry_run)
    for name in GENERATORS:
        outs = {}
        for dev in ("cpu", "gpu"):
            rc, body, err = dp.run("generate", "--model", f"{name}-{dev}", "--input",
                                   str(texts_file), "--max-new-tokens", "32")
            outs[dev] = (rc, (body or {}).get("texts"), err)
        same = outs["cpu"][0] == 0 and outs["cpu"][1] == outs["gpu"][1]
        check.record(f"{name} generate: GPU vs CPU texts identical", same,
                     texts=len(outs["cpu"][1] or []), rc=[outs["cpu"][0], outs["gpu"][0]],
                     stderr=outs["gpu"][2] if not same else "")
    audio = sorted(str(p) for p in (HERE / "audio").glob("*.wav"))
    for name in TRANSCRIBERS:
        if not audio:
            break
        outs = {}
        audio_args = [a for f in audio for a in ("--audio", f)]
        for dev in ("cpu", "gpu"):
            rc, body, err = dp.run("transcribe", "--model", f"{name}-{dev}", *audio_args)
            outs[dev] = (rc, (body or {}).get("texts"), err)
        same = outs["cpu"][0] == 0 and outs["cpu"][1] == outs["gpu"][1]
        check.record(f"{name} transcribe: GPU vs CPU texts identical", same,
                     files=len(audio), rc=[outs["cpu"][0], outs["gpu"][0]],
                     stderr=outs["gpu"][2] if not same else "")

    # 3. The VRAM budget, read from the device.
    if not args.cpu_dry_run:
        free = gpu_free_bytes()
        name = EMBEDDERS[0]
        text = specs[name]
        role = role_of(text)
        too_big = set_vram(variant(text, name, f"{name}-huge", "cuda"), free + (1 << 30))
        write_spec(catalog, role, f"{name}-huge", too_big)
        for half in ("a", "b"):
            write_spec(catalog, role, f"{name}-60{half}",
                       set_vram(variant(text, name, f"{name}-60{half}", "cuda"), free * 6 // 10))
        rc, body, err = dp.run("embed", "--model", f"{name}-huge", stdin=json.dumps(TEXTS))
        check.record("a model declaring more than the free VRAM is insufficient_gpu_memory",
                     error_code(body) == "insufficient_gpu_memory", free_bytes=free,
                     declared=free + (1 << 30), rc=rc, error_code=error_code(body))
        rc, body, err = dp.run("parity", f"{name}-60a", f"{name}-60b", "--input",
                               str(texts_file))
        check.record("two models of 60 % of the free VRAM each load one after the other",
                     rc == 0, min_cosine=(body or {}).get("min_cosine"), rc=rc,
                     error_code=error_code(body), stderr=err if rc else "")

    # 4. Throughput vs sentence-transformers.
    if not args.skip_throughput:
        throughput(check, dp, catalog, work, args.cpu_dry_run)

    report = {"passed": check.passed, "results": check.results, "gpu": gpu_name()}
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    lines = ["| check | passed | figures |", "| --- | --- | --- |"]
    for r in check.results:
        figures = {k: v for k, v in r.items() if k not in ("check", "passed", "stderr")}
        verdict = {True: "yes", False: "NO", None: "not run"}[r["passed"]]
        lines.append(f"| {r['check']} | {verdict} | "
                     f"{json.dumps(figures, ensure_ascii=False)} |")
    (args.out / "gpu-check.md").write_text("\n".join(lines) + "\n")
    print(f"gpu-check: {'all passed' if check.passed else 'FAILED'}; {args.out}/gpu-check.md")
    return 0 if check.passed else 1


def onnx(check: Check, dp: Dp, specs: dict, catalog: Path, texts_file: Path, dry: bool) -> None:
    """ONNX Runtime: with the CPU library, `cuda` is refused and `auto` runs on (and says)
    the CPU; with an onnxruntime-gpu library there, CUDA vs CPU parity."""
    name = "tiny-xlmr-e5-onnx"
    if name not in specs:
        return
    role = role_of(specs[name])
    for policy in ("cuda", "auto"):
        write_spec(catalog, role, f"{name}-{policy}",
                   variant(specs[name], name, f"{name}-{policy}", policy))
    rc, body, err = dp.run("embed", "--model", f"{name}-cuda", "--input", str(texts_file))
    check.record("ONNX, CPU library, device_policy cuda: device_unavailable",
                 error_code(body) == "device_unavailable", rc=rc, error_code=error_code(body))
    rc, body, err = dp.run("parity", f"{name}-auto", "tiny-xlmr-e5-cpu", "--input",
                           str(texts_file), "--tolerance", "0.99999")
    devices = [m.get("device") for m in (body or {}).get("models_used", [])]
    check.record("ONNX, CPU library, auto: runs on and records the CPU; = candle CPU",
                 rc == 0 and devices[:1] == ["cpu"], devices=devices,
                 min_cosine=(body or {}).get("min_cosine"), stderr=err if rc else "")
    library = None if dry else onnxruntime_gpu_library()
    if library is None:
        check.not_run("ONNX Runtime CUDA vs CPU parity",
                      "no onnxruntime-gpu >= 1.31 for python3 on this machine (its library "
                      "is too large to carry in the pack)")
        return
    gpu_dp = Dp(dp.dp, dp.catalog, dp.models, dict(dp.env, ORT_DYLIB_PATH=str(library)))
    rc, body, err = gpu_dp.run("parity", f"{name}-cpu", f"{name}-gpu", "--input",
                               str(texts_file), "--tolerance", str(MIN_COSINE))
    devices = [m.get("device") for m in (body or {}).get("models_used", [])]
    check.record("ONNX Runtime CUDA vs CPU", rc == 0, devices=devices, library=str(library),
                 min_cosine=(body or {}).get("min_cosine"), stderr=err if rc else "")


def set_vram(text: str, vram: int) -> str:
    out = []
    for line in text.splitlines():
        if line.strip().startswith("vram_bytes:"):
            continue
        out.append(line)
        if line.startswith("resource_requirements:"):
            out.append(f"  vram_bytes: {vram}")
    return "\n".join(out) + "\n"


def gpu_free_bytes() -> int:
    import torch  # the GPU machine's PyTorch: the driver's own answer

    free, _total = torch.cuda.mem_get_info(0)
    return int(free)


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return "no nvidia-smi"


def throughput(check: Check, dp: Dp, catalog: Path, work: Path, dry: bool) -> None:
    """MiniLM-shaped random weights (made here with transformers, seeded), the real
    tokenizer; dp (candle, CUDA) vs sentence-transformers on the same texts and batch size."""
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import BertConfig, BertModel

    device = "cpu" if dry else "cuda"
    src = HERE / "minilm"
    model_dir = dp.models / "minilm-random"
    if not model_dir.exists():
        model_dir = work / "models-extra" / "minilm-random"
        shutil.copytree(src, model_dir)
        torch.manual_seed(0)
        model = BertModel(BertConfig.from_pretrained(model_dir), add_pooling_layer=False)
        model.save_pretrained(model_dir, safe_serialization=True)
    digest = hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()
    spec = (HERE / "minilm-spec.yaml").read_text()
    spec = "\n".join(
        f"weights_digest: sha256:{digest}" if line.startswith("weights_digest:") else line
        for line in spec.splitlines()
        if not line.startswith("artifacts_digest:")
    ) + "\n"
    spec = spec.replace("all-minilm-l6-v2/", "minilm-random/")
    extra_root = model_dir.parent
    bench = Dp(dp.dp, catalog, extra_root, dp.env)
    texts = [f"Sentence {i}: the {w} report about item {i * 7 % 101} was filed on day {i % 28}."
             for i, w in zip(range(8192), ["weekly", "monthly", "annual", "daily"] * 2048)]
    st = SentenceTransformer(str(model_dir), device=device)
    for batch in (32, 256):
        name = f"minilm-random-b{batch}"
        text = variant(spec, "all-minilm-l6-v2", name, "cpu" if dry else "cuda")
        text = text.replace("max_batch_size: 64", f"max_batch_size: {batch}")
        write_spec(catalog, "text_embedding", name, text)
        n_small, n_big = batch, len(texts) if not dry else 4 * batch
        files = {}
        for n in (n_small, n_big):
            f = work / f"texts-{n}.json"
            f.write_text(json.dumps(texts[:n]))
            files[n] = f
        bench.run("embed", "--model", name, "--input", str(files[n_small]))  # warm-up (JIT)
        timings = {}
        for n in (n_small, n_big):
            best = None
            for _ in range(3):
                rc, elapsed, err = bench.timed("embed", "--model", name, "--input", str(files[n]))
                if rc != 0:
                    check.record(f"dp embed {name}", False, rc=rc, stderr=err)
                    return
                best = elapsed if best is None else min(best, elapsed)
            timings[n] = best
        dp_rate = (n_big - n_small) / max(timings[n_big] - timings[n_small], 1e-9)
        st.encode(texts[:batch], batch_size=batch)
        if device == "cuda":
            torch.cuda.synchronize()
        best = None
        for _ in range(3):
            t = time.perf_counter()
            st.encode(texts[:n_big], batch_size=batch, convert_to_numpy=True)
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t
            best = elapsed if best is None else min(best, elapsed)
        st_rate = n_big / best
        check.record(f"MiniLM-shaped batches of {batch}: dp vs sentence-transformers", True,
                     dp_texts_per_s=round(dp_rate, 1), st_texts_per_s=round(st_rate, 1),
                     ratio=round(dp_rate / st_rate, 3), texts=n_big)


if __name__ == "__main__":
    sys.exit(main())
