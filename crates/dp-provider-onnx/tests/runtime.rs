//! The provider on the real ONNX Runtime library (`cargo xtask setup` places it), with
//! small models built by `tests/data/build_fixtures.py` and committed.
//!
//! Without the library these tests return early, except under `CI=true`, where they fail.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};

use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{
    ErrorCode, LoadRequest, LoadedModel, ModelProvider, ModelSpec, NamedTensors, Precision,
    ResolvedDevice, Tensor, TensorData, WorkerSlot,
};
use serde_json::{Value, json};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The library from `cargo xtask setup`, or `None` (outside CI) when it is not there.
fn library() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.dp-assets/onnxruntime/libonnxruntime.so");
    if path.is_file() {
        return Some(path);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{} is missing: run `cargo xtask setup` (CI must run these tests)",
        path.display()
    );
    eprintln!(
        "skipping: {} is missing; run `cargo xtask setup`",
        path.display()
    );
    None
}

fn provider(library: PathBuf) -> OnnxProvider {
    OnnxProvider::new(OnnxProviderConfig {
        library_path: Some(library),
    })
}

fn spec(artifact: &str, inputs: Value, outputs: Value) -> ModelSpec {
    serde_json::from_value(json!({
        "model_name": "fixture",
        "model_version": "1",
        "runtime": "inprocess",
        "engine": "onnx",
        "local_artifacts": [artifact],
        "input_schema": inputs,
        "output_schema": outputs,
        "onnx": { "intra_op_threads": 1, "graph_optimization_level": "all" },
    }))
    .unwrap()
}

fn affine_spec() -> ModelSpec {
    spec(
        "affine.onnx",
        json!([{ "name": "x", "dtype": "fp32", "shape": [-1, 3] }]),
        json!([{ "name": "y", "dtype": "fp32", "shape": [-1, 2] }]),
    )
}

fn load(
    provider: &OnnxProvider,
    spec: &ModelSpec,
) -> Result<Box<dyn LoadedModel>, dp_spec::ModelError> {
    let artifacts = verified(&data_dir(), spec);
    provider.load(&LoadRequest {
        spec,
        artifacts: &artifacts,
        models_root: &data_dir(),
        device: ResolvedDevice::Cpu,
        precision: Precision::Fp32,
    })
}

fn affine_input(rows: Vec<f32>) -> NamedTensors {
    let n = rows.len() / 3;
    NamedTensors::from([(
        "x".to_owned(),
        Tensor::new(vec![n, 3], TensorData::Fp32(rows)).unwrap(),
    )])
}

#[test]
fn affine_model_gives_the_known_result_for_any_batch() {
    let Some(lib) = library() else { return };
    let provider = provider(lib);
    let spec = affine_spec();
    assert!(provider.supports(&spec));
    provider
        .validate_local_artifacts(&spec, &verified(&data_dir(), &spec))
        .unwrap();
    let model = load(&provider, &spec).unwrap();
    // y = x @ [[1, 2], [3, 4], [5, 6]] + [0.5, -1]
    let out = model
        .infer(&affine_input(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]))
        .unwrap();
    let y = &out["y"];
    assert_eq!(y.shape(), &[2, 2]);
    assert_eq!(y.data(), &TensorData::Fp32(vec![1.5, 1.0, 9.5, 11.0]));
    // A different batch size on the same session: shapes are dynamic.
    let out = model
        .infer(&affine_input(vec![
            0.0, 0.0, 2.0, 0.0, 1.0, 0.0, -1.0, 0.0, 0.0,
        ]))
        .unwrap();
    assert_eq!(out["y"].shape(), &[3, 2]);
    assert_eq!(
        out["y"].data(),
        &TensorData::Fp32(vec![10.5, 11.0, 3.5, 3.0, -0.5, -3.0])
    );
}

#[test]
fn every_supported_dtype_goes_in_and_out() {
    let Some(lib) = library() else { return };
    let schema = |suffix: &str| {
        json!([
            { "name": format!("f32_{suffix}"), "dtype": "fp32", "shape": [-1] },
            { "name": format!("i64_{suffix}"), "dtype": "int64", "shape": [-1] },
            { "name": format!("i32_{suffix}"), "dtype": "int32", "shape": [-1] },
            { "name": format!("f16_{suffix}"), "dtype": "fp16", "shape": [-1] },
            { "name": format!("u8_{suffix}"), "dtype": "uint8", "shape": [-1] },
            { "name": format!("b_{suffix}"), "dtype": "bool", "shape": [-1] },
        ])
    };
    let spec = spec("dtypes.onnx", schema("in"), schema("out"));
    let model = load(&provider(lib), &spec).unwrap();
    let t = |data: TensorData| Tensor::new(vec![3], data).unwrap();
    // fp16 bit patterns of 1.0, -2.0, 0.5.
    let half = vec![0x3c00_u16, 0xc000, 0x3800];
    let inputs = NamedTensors::from([
        (
            "f32_in".to_owned(),
            t(TensorData::Fp32(vec![1.5, -2.0, 0.25])),
        ),
        (
            "i64_in".to_owned(),
            t(TensorData::Int64(vec![1 << 40, -3, 0])),
        ),
        ("i32_in".to_owned(), t(TensorData::Int32(vec![7, -8, 9]))),
        ("f16_in".to_owned(), t(TensorData::Fp16(half.clone()))),
        ("u8_in".to_owned(), t(TensorData::Uint8(vec![0, 128, 255]))),
        (
            "b_in".to_owned(),
            t(TensorData::Bool(vec![true, false, true])),
        ),
    ]);
    let out = model.infer(&inputs).unwrap();
    assert_eq!(
        out["f32_out"].data(),
        &TensorData::Fp32(vec![3.0, -4.0, 0.5])
    );
    assert_eq!(
        out["i64_out"].data(),
        &TensorData::Int64(vec![1 << 41, -6, 0])
    );
    assert_eq!(out["i32_out"].data(), &TensorData::Int32(vec![14, -16, 18]));
    assert_eq!(out["f16_out"].data(), &TensorData::Fp16(half));
    assert_eq!(out["u8_out"].data(), &TensorData::Uint8(vec![0, 128, 255]));
    assert_eq!(
        out["b_out"].data(),
        &TensorData::Bool(vec![false, true, false])
    );
    assert!(out.values().all(|t| t.shape() == [3]));
}

#[test]
fn a_schema_that_disagrees_with_the_file_is_invalid_spec_naming_the_tensor() {
    let Some(lib) = library() else { return };
    let provider = provider(lib);
    let y = json!([{ "name": "y", "dtype": "fp32", "shape": [-1, 2] }]);
    let cases = [
        // Wrong name.
        (
            json!([{ "name": "input", "dtype": "fp32", "shape": [-1, 3] }]),
            y.clone(),
            "'input'",
        ),
        // Wrong element type.
        (
            json!([{ "name": "x", "dtype": "int64", "shape": [-1, 3] }]),
            y.clone(),
            "'x'",
        ),
        // Wrong rank.
        (
            json!([{ "name": "x", "dtype": "fp32", "shape": [-1] }]),
            y.clone(),
            "'x'",
        ),
        // Wrong fixed dimension.
        (
            json!([{ "name": "x", "dtype": "fp32", "shape": [-1, 4] }]),
            y,
            "'x'",
        ),
        // Wrong output.
        (
            json!([{ "name": "x", "dtype": "fp32", "shape": [-1, 3] }]),
            json!([{ "name": "y", "dtype": "fp32", "shape": [-1, 2, 1] }]),
            "'y'",
        ),
    ];
    for (inputs, outputs, named) in cases {
        let err = load(&provider, &spec("affine.onnx", inputs, outputs))
            .err()
            .unwrap();
        assert_eq!(err.error_code, ErrorCode::InvalidSpec, "{err}");
        assert!(err.message.contains(named), "{named} not in: {err}");
    }
}

#[test]
fn bad_requests_are_invalid_input() {
    let Some(lib) = library() else { return };
    let model = load(&provider(lib), &affine_spec()).unwrap();
    let wrong_type = NamedTensors::from([(
        "x".to_owned(),
        Tensor::new(vec![1, 3], TensorData::Int64(vec![1, 2, 3])).unwrap(),
    )]);
    let unknown = NamedTensors::from([(
        "z".to_owned(),
        Tensor::new(vec![1, 3], TensorData::Fp32(vec![1.0; 3])).unwrap(),
    )]);
    let wrong_shape = NamedTensors::from([(
        "x".to_owned(),
        Tensor::new(vec![1, 4], TensorData::Fp32(vec![1.0; 4])).unwrap(),
    )]);
    for (inputs, expected) in [
        (wrong_type, ErrorCode::InvalidInput),
        (unknown, ErrorCode::InvalidInput),
        (NamedTensors::new(), ErrorCode::InvalidInput),
    ] {
        assert_eq!(model.infer(&inputs).unwrap_err().error_code, expected);
    }
    // ONNX Runtime itself rejects the shape; it is reported, not a panic.
    assert!(model.infer(&wrong_shape).is_err());
}

#[test]
fn external_data_inside_the_model_folder_loads() {
    let Some(lib) = library() else { return };
    let spec = spec(
        "external_inside/model.onnx",
        json!([{ "name": "x", "dtype": "fp32", "shape": [-1, 3] }]),
        json!([{ "name": "y", "dtype": "fp32", "shape": [-1, 2] }]),
    );
    // The data file is read only if it is one of the model's (verified) artifacts.
    let err = load(&provider(lib.clone()), &spec).err().unwrap();
    assert_eq!(err.error_code, ErrorCode::InvalidSpec, "{err}");
    assert!(
        err.message.contains("not among the model's verified files"),
        "{err}"
    );
    let mut spec = spec;
    spec.local_artifacts
        .push("external_inside/weights.bin".to_owned());
    let model = load(&provider(lib), &spec).unwrap();
    let out = model.infer(&affine_input(vec![1.0, 1.0, 1.0])).unwrap();
    assert_eq!(out["y"].data(), &TensorData::Fp32(vec![9.5, 11.0]));
    // A worker's own sessions are built from the same verified data.
    let out = model
        .infer_on(
            &affine_input(vec![1.0, 1.0, 1.0]),
            WorkerSlot {
                index: 1,
                count: 2,
                running: 2,
            },
        )
        .unwrap();
    assert_eq!(out["y"].data(), &TensorData::Fp32(vec![9.5, 11.0]));
}

#[test]
fn workers_run_side_by_side_on_sessions_of_their_own() {
    let Some(lib) = library() else { return };
    let provider = provider(lib);
    let mut spec = affine_spec();
    // Three threads: two workers get shares of 2 and 1; four workers, 1 each (the fourth
    // shares the first's sessions); a call that starts alone, the model's own sessions.
    spec.onnx.as_mut().unwrap().intra_op_threads = Some(3);
    let model = load(&provider, &spec).unwrap();
    let x = affine_input(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let want = TensorData::Fp32(vec![1.5, 1.0, 9.5, 11.0]);
    std::thread::scope(|scope| {
        let runs: Vec<_> = [
            (0, 2, 2),
            (1, 2, 2),
            (0, 4, 3),
            (3, 4, 4),
            (2, 4, 2),
            (1, 2, 1),
        ]
        .into_iter()
        .flat_map(|worker| [worker; 3])
        .map(|(index, count, running)| {
            let (model, x) = (&model, &x);
            scope.spawn(move || {
                let slot = WorkerSlot {
                    index,
                    count,
                    running,
                };
                (slot, model.infer_on(x, slot).unwrap())
            })
        })
        .collect();
        for run in runs {
            let (slot, out) = run.join().unwrap();
            assert_eq!(out["y"].data(), &want, "{slot:?}");
        }
    });
    // Bad input on a worker is the same invalid_input as on the model.
    let err = model
        .infer_on(
            &NamedTensors::new(),
            WorkerSlot {
                index: 1,
                count: 2,
                running: 2,
            },
        )
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput, "{err}");
    assert!(err.message.contains("'x' is missing"), "{err}");
}

#[test]
fn external_data_outside_the_model_folder_is_refused() {
    let Some(lib) = library() else { return };
    let spec = spec("external_outside/model.onnx", json!([]), json!([]));
    let err = load(&provider(lib), &spec).err().unwrap();
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
    assert!(
        err.message.contains("'W'") && err.message.contains("../outside.bin"),
        "{err}"
    );
}

#[test]
fn a_missing_library_is_provider_unavailable_with_install_instructions() {
    // Needs no library: the point is its absence.
    let provider = provider(PathBuf::from("/nonexistent/libonnxruntime.so"));
    let err = load(&provider, &affine_spec()).err().unwrap();
    assert_eq!(err.error_code, ErrorCode::ProviderUnavailable);
    assert!(err.message.contains("cargo xtask setup"), "{err}");
    assert!(err.message.contains("ORT_DYLIB_PATH"), "{err}");
    assert!(!provider.health(&affine_spec(), &data_dir()).runtime_found);
}

#[test]
fn cuda_without_a_cuda_library_is_an_error_and_auto_is_told_to_stay_on_the_cpu() {
    let Some(lib) = library() else { return };
    let provider = provider(lib);
    let mut spec = affine_spec();
    let request = |spec: &ModelSpec| {
        let artifacts = verified(&data_dir(), spec);
        provider
            .load(&LoadRequest {
                spec,
                artifacts: &artifacts,
                models_root: &data_dir(),
                device: ResolvedDevice::Cuda(0),
                precision: Precision::Fp32,
            })
            .map(drop)
    };
    // The CPU wheel's library offers no CUDA provider; a GPU build would load. Under either
    // policy a session on the CPU would be recorded as a GPU run: refused.
    for policy in ["cuda", "auto"] {
        spec.device_policy = policy.parse().unwrap();
        let err = request(&spec).unwrap_err();
        assert_eq!(err.error_code, ErrorCode::DeviceUnavailable, "{err}");
        assert!(err.message.contains("CUDAExecutionProvider"), "{err}");
    }
    // What the manager asks before sending `auto` to a GPU: no, so `auto` is the CPU.
    assert!(!provider.runs_on_cuda(&spec, &data_dir()));
    let missing = crate::provider(PathBuf::from("/nonexistent/libonnxruntime.so"));
    assert!(!missing.runs_on_cuda(&spec, &data_dir()));
}

#[test]
fn a_model_file_onnx_runtime_rejects_is_invalid_spec() {
    let Some(lib) = library() else { return };
    // affine.onnx without its last field (opset_import): still well-formed protobuf, so
    // only ONNX Runtime can tell the model is broken.
    let bytes = std::fs::read(data_dir().join("affine.onnx")).unwrap();
    let opset_import = [0x42, 0x04]; // field 8, length-delimited, 4 bytes
    assert_eq!(bytes[bytes.len() - 6..bytes.len() - 4], opset_import);
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("affine.onnx"), &bytes[..bytes.len() - 6]).unwrap();
    let artifacts = verified(root.path(), &affine_spec());
    let err = provider(lib)
        .load(&LoadRequest {
            spec: &affine_spec(),
            artifacts: &artifacts,
            models_root: root.path(),
            device: ResolvedDevice::Cpu,
            precision: Precision::Fp32,
        })
        .err()
        .unwrap();
    assert_eq!(err.error_code, ErrorCode::InvalidSpec, "{err}");
    assert!(err.message.contains("affine.onnx"), "{err}");
    assert!(err.message.contains("replace it"), "{err}");
}

#[test]
fn missing_artifacts_are_weights_missing() {
    let provider = OnnxProvider::default();
    let spec = spec("absent/model.onnx", json!([]), json!([]));
    let err = provider
        .validate_local_artifacts(&spec, &verified(&data_dir(), &spec))
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::WeightsMissing);
}

/// The spec's files as the manager hands them over: opened once through `dp-digest`
/// (unpinned here); files that are absent are simply not among them.
fn verified(root: &std::path::Path, spec: &ModelSpec) -> dp_spec::VerifiedArtifacts {
    let present: Vec<String> = spec
        .local_artifacts
        .iter()
        .filter(|a| root.join(a).exists())
        .cloned()
        .collect();
    dp_digest::open_verified(
        root,
        &present,
        &dp_digest::ArtifactPins::default(),
        &dp_digest::VerifyOptions::default(),
    )
    .unwrap()
    .artifacts
    .unwrap()
}
