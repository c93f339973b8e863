"""Two builds of dp-models side by side: cold load through the manager (the `embed_candle` /
`embed_onnx` bench runners, verification cache warm: the cached re-verify at load) and
`dp embed` wall time (cache warm, and cache cold: every pinned byte hashed), in interleaved
pairs after a warm-up; prints medians and new/old ratios.

Usage: python3 compare_builds.py OLD_BIN_DIR NEW_BIN_DIR [PAIRS] [--skip-runners]
with OLD_ROOT (default /work/old) the old build's checkout, for its catalog. Each BIN_DIR
holds `dp`, `embed_candle` and `embed_onnx` built with `cargo build --profile bench -p dp-cli
--bin dp -p dp-tests --bench embed_candle --bench embed_onnx`. Used for the verified-bytes
change (docs/benchmarks.md, "Verifying at load")."""
import json, os, statistics, subprocess, sys, tempfile, time
root = os.path.abspath(os.path.join(os.path.dirname(__file__), "../../.."))
old_root = os.environ.get("OLD_ROOT", "/work/old")
models = f"{root}/.dp-assets/models"
old, new = sys.argv[1], sys.argv[2]
pairs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
texts = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
json.dump({"short": ["a cat sat on the mat"] * 4, "long": ["word " * 200]}, texts); texts.close()
line = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False); line.write("a cat sat on the mat\n"); line.close()

def runner(bindir, engine, spec):
    out = subprocess.run([f"{bindir}/embed_{engine}", "--models-root", models, "--spec", spec,
                          "--texts", texts.name, "--loads", "5", "--min-seconds", "0.05"],
                         capture_output=True, text=True, check=True)
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    # The old runner printed its own median; the new one prints the samples only.
    return figures.get("cold_load_s") or statistics.median(figures["cold_load_all_s"])

def dp_embed(bindir, model, cache):
    catalog = f"{old_root}/specs/catalog" if bindir == old else f"{root}/specs/catalog"
    t = time.perf_counter()
    subprocess.run([f"{bindir}/dp", "--catalog", catalog, "--models-root", models, "embed", "--model", model,
                    "--input", line.name, "--cache", cache], capture_output=True, check=True,
                   cwd=root)
    return time.perf_counter() - t

specs = {"candle": f"{root}/specs/catalog/text_embedding/all-minilm-l6-v2.yaml",
         "onnx": f"{root}/specs/catalog/text_embedding/all-minilm-l6-v2-onnx.yaml"}
old_specs = {"candle": f"{old_root}/specs/catalog/text_embedding/all-minilm-l6-v2.yaml",
             "onnx": f"{old_root}/specs/catalog/text_embedding/all-minilm-l6-v2-onnx.yaml"}
rows = []
def pair(name, f_old, f_new):
    f_old(); f_new()  # warm-up
    o, n = [], []
    for _ in range(pairs):
        o.append(f_old()); n.append(f_new())
    mo, mn = statistics.median(o), statistics.median(n)
    rows.append((name, mo, mn, mn / mo))
    print(f"{name}: old {mo*1e3:.1f} ms (min {min(o)*1e3:.1f}, max {max(o)*1e3:.1f}) | new {mn*1e3:.1f} ms (min {min(n)*1e3:.1f}, max {max(n)*1e3:.1f}) | new/old {mn/mo:.3f}", flush=True)

os.environ["ORT_DYLIB_PATH"] = f"{root}/.dp-assets/onnxruntime/libonnxruntime.so"
for engine in (["candle", "onnx"] if "--skip-runners" not in sys.argv else []):
    pair(f"cold load, cached re-verify ({engine} runner)",
         lambda e=engine: runner(old, e, old_specs[e]), lambda e=engine: runner(new, e, specs[e]))
scratch = tempfile.mkdtemp()
for model in ["all-minilm-l6-v2", "all-minilm-l6-v2-onnx"]:
    warm_o, warm_n = f"{scratch}/o-{model}.json", f"{scratch}/n-{model}.json"
    pair(f"dp embed 1 text, cache warm ({model})",
         lambda m=model: dp_embed(old, m, warm_o), lambda m=model: dp_embed(new, m, warm_n))
    counter = iter(range(10**6))
    pair(f"dp embed 1 text, cache cold: every pinned byte hashed ({model})",
         lambda m=model: dp_embed(old, m, f"{scratch}/cold-{next(counter)}.json"),
         lambda m=model: dp_embed(new, m, f"{scratch}/cold-{next(counter)}.json"))

