//! The ONNX rows of `cargo xtask bench embed`: the ONNX MiniLM through the manager and the
//! `onnx` provider, against Python ONNX Runtime running the same `model.onnx` with the same
//! threads (the provider should add nearly nothing: ≥ 0.97×), and against
//! sentence-transformers on PyTorch CPU (≥ 1.5×).

use super::{BenchContext, CommandLine, Row, THREADS, path_arg, sentence_transformers_minilm};

/// The venv holding Python onnxruntime and tokenizers (`cargo xtask setup`, `python-onnx`).
const ONNX_VENV: &str = ".dp-assets/venv-onnx";

/// The Python ONNX Runtime runner, relative to the workspace root.
const ORT_RUNNER: &str = "xtask/src/bench/embed_onnxruntime.py";

/// The ONNX MiniLM folder (`cargo xtask setup`, `minilm-onnx`).
const MODEL_DIR: &str = ".dp-assets/models/all-minilm-l6-v2-onnx";

/// The targets.
const VS_ONNXRUNTIME_TARGET: f64 = 0.97;
const VS_SENTENCE_TRANSFORMERS_TARGET: f64 = 1.5;

/// The rows, in report order.
pub(super) fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "all-minilm-l6-v2-onnx fp32 cpu: onnx provider vs Python onnxruntime (same model.onnx)",
            ours: onnx_minilm,
            anchor: onnxruntime_minilm,
            throughput_target: VS_ONNXRUNTIME_TARGET,
        },
        Row {
            name: "all-minilm-l6-v2-onnx fp32 cpu: onnx provider vs sentence-transformers (PyTorch)",
            ours: onnx_minilm,
            anchor: sentence_transformers_minilm,
            throughput_target: VS_SENTENCE_TRANSFORMERS_TARGET,
        },
    ]
}

fn onnx_minilm(cx: &BenchContext) -> CommandLine {
    let models_root = path_arg(&cx.root.join(".dp-assets/models"));
    let spec = path_arg(
        &cx.root
            .join("specs/catalog/text_embedding/all-minilm-l6-v2-onnx.yaml"),
    );
    let sentences = path_arg(&cx.sentences);
    let threads = THREADS.to_string();
    let manifest = path_arg(&cx.root.join("Cargo.toml"));
    CommandLine::new(
        "dp onnx",
        &[
            "cargo",
            "bench",
            "--quiet",
            "--manifest-path",
            &manifest,
            "-p",
            "dp-tests",
            "--bench",
            "embed_onnx",
            "--",
            "--models-root",
            &models_root,
            "--spec",
            &spec,
            "--sentences",
            &sentences,
            "--threads",
            &threads,
        ],
    )
}

fn onnxruntime_minilm(cx: &BenchContext) -> CommandLine {
    let python = path_arg(&cx.root.join(ONNX_VENV).join("bin/python"));
    let runner = path_arg(&cx.root.join(ORT_RUNNER));
    let model_dir = path_arg(&cx.root.join(MODEL_DIR));
    let sentences = path_arg(&cx.sentences);
    let threads = THREADS.to_string();
    CommandLine::new(
        "python onnxruntime",
        &[
            &python,
            &runner,
            "--model-dir",
            &model_dir,
            "--sentences",
            &sentences,
            "--threads",
            &threads,
        ],
    )
}
