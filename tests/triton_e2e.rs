//! The Triton provider against a real `tritonserver` (the `triton` setup asset), started
//! per test on a free 127.0.0.1 port with a repository written from
//! `tests/data/triton-repo/`: inference of every element type in JSON and binary form,
//! metadata and repository calls, the digest check, model control, and the faults (no
//! server, server killed mid-flight and restarted, model unloaded, forbidden host); then
//! MiniLM served by onnxruntime inside Triton, through the manager's shared preset, against
//! sentence-transformers' reference embeddings; the CLIP image tower likewise; and the text
//! models of issue 15 (XLM-R E5 and BERT-CLS embedders with their prompts, BERT and XLM-R
//! cross-encoders) served by the one generic `onnx-text` template, against
//! sentence-transformers' references and the in-process candle and ONNX builds; and a
//! whole Whisper decoding on the server (template `whisper`) behind the client's
//! `speech_recognition` preset, against transformers' Whisper `generate`.
//!
//! Needs `cargo xtask setup` (assets `triton`, and the models each test serves); fails under
//! CI=true when they are missing.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dp_provider_triton::{TensorEncoding, TritonModel, TritonProvider, TritonProviderConfig};
use dp_spec::{
    Catalog, ErrorCode, LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec,
    NamedTensors, Precision, ResolvedDevice, Tensor, TensorData,
};
use dp_tests::cosine;
use dp_tests::triton_harness::{
    AFFINE_WEIGHTS_DIGEST, Deployment, MINILM_ONNX, REPOSITORY_TEMPLATES, TritonInstall,
    TritonServer, free_port, write_repository,
};

const AFFINE_DIGEST: &str = AFFINE_WEIGHTS_DIGEST;

/// A server with its repository; both go away on drop.
struct Running {
    server: TritonServer,
    _dir: tempfile::TempDir,
    repo: PathBuf,
}

fn install(test: &str) -> Option<TritonInstall> {
    let dir = dp_tests::asset("triton", test)?;
    let install = TritonInstall::at(&dir);
    if let Some(missing) = install.missing() {
        assert!(
            !dp_tests::in_ci(),
            "{test}: {} is missing",
            missing.display()
        );
        eprintln!(
            "{test}: NOT RUN: {} is missing; run `cargo xtask setup`",
            missing.display()
        );
        return None;
    }
    Some(install)
}

fn start(test: &str, deployments: &[Deployment], load: &[&str]) -> Option<Running> {
    let install = install(test)?;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let templates = dp_tests::workspace_root().join(REPOSITORY_TEMPLATES);
    write_repository(&templates, &repo, deployments).unwrap();
    let mut server = TritonServer::start(
        &install,
        &repo,
        free_port().unwrap(),
        load,
        &dir.path().join("server.log"),
    )
    .unwrap();
    server.wait_ready(load, Duration::from_secs(120)).unwrap();
    Some(Running {
        server,
        _dir: dir,
        repo,
    })
}

fn spec(endpoint: &str, model: &str, digest: Option<&str>) -> ModelSpec {
    let mut value = serde_json::json!({
        "model_name": model, "model_version": "1", "runtime": "triton", "engine": "onnx",
        "triton": { "endpoint": endpoint, "model_name": model, "connect_timeout_ms": 300,
                    "request_timeout_ms": 10000 }
    });
    if let Some(d) = digest {
        value["weights_digest"] = d.into();
    }
    serde_json::from_value(value).unwrap()
}

/// Through the provider contract, as the manager loads.
fn load_boxed(provider: &TritonProvider, spec: &ModelSpec) -> Box<dyn LoadedModel> {
    // A Triton model without local files: nothing to verify locally.
    let artifacts = dp_spec::VerifiedArtifacts::empty("/nonexistent");
    let loaded = provider.load(&LoadRequest {
        spec,
        artifacts: &artifacts,
        models_root: std::path::Path::new("/nonexistent"),
        device: ResolvedDevice::Cpu,
        precision: Precision::Fp32,
    });
    loaded.map_err(|e| e.to_string()).unwrap()
}

fn load(provider: &TritonProvider, spec: &ModelSpec) -> Result<TritonModel, ModelError> {
    provider.load_spec(spec).map_err(ModelError::from)
}

fn affine_input(rows: usize, cols: usize) -> (NamedTensors, Vec<f32>) {
    #[allow(clippy::cast_precision_loss)]
    let x: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.25 - 3.0).collect();
    let y = x.iter().map(|v| 2.0 * v + 1.0).collect();
    let mut inputs = NamedTensors::new();
    inputs.insert(
        "x".into(),
        Tensor::new(vec![rows, cols], TensorData::Fp32(x)).unwrap(),
    );
    (inputs, y)
}

fn assert_affine(model: &dyn LoadedModel, rows: usize, cols: usize) {
    let (inputs, expected) = affine_input(rows, cols);
    let out = model.infer(&inputs).unwrap();
    assert_eq!(out["y"].shape(), &[rows, cols]);
    assert_eq!(out["y"].data(), &TensorData::Fp32(expected));
}

#[test]
fn inference_metadata_digest_and_model_control_against_a_real_server() {
    let test = "inference_metadata_digest_and_model_control_against_a_real_server";
    let deployments = [
        Deployment::new("affine", Some(AFFINE_DIGEST)),
        Deployment::new("affine", None).named("affine-nodigest"),
        Deployment::new("affine", Some("sha256:00")).named("affine-otherdigest"),
        Deployment::new("affine", Some(AFFINE_DIGEST)).named("affine-spare"),
        Deployment::new("echo", Some(AFFINE_DIGEST)),
    ];
    let names = [
        "affine",
        "affine-nodigest",
        "affine-otherdigest",
        "affine-spare",
        "echo",
    ];
    let Some(run) = start(test, &deployments, &names) else {
        return;
    };
    let endpoint = run.server.endpoint();
    let provider = TritonProvider::new(TritonProviderConfig::default());

    // Small (JSON) and large (binary extension) requests, batched, give exactly 2x + 1.
    let affine = load_boxed(&provider, &spec(&endpoint, "affine", Some(AFFINE_DIGEST)));
    assert_affine(affine.as_ref(), 1, 3);
    assert_affine(affine.as_ref(), 4, 4096);

    // Every element type, each encoding, through the echo model.
    let echo_spec = spec(&endpoint, "echo", Some(AFFINE_DIGEST));
    let echo = TritonProvider::new(TritonProviderConfig::default());
    let client = echo.client(echo_spec.triton.as_ref().unwrap()).unwrap();
    let meta = client.model_metadata("echo", None).unwrap();
    assert_eq!(meta.inputs.len(), 7);
    assert_eq!(meta.inputs[1].datatype, "FP16");
    let mut inputs = NamedTensors::new();
    let mut put = |name: &str, data: TensorData| {
        let n = data.len();
        inputs.insert(name.into(), Tensor::new(vec![n], data).unwrap());
    };
    put("f32", TensorData::Fp32(vec![1.5, -0.0, 3.25e-8]));
    put("f16", TensorData::Fp16(vec![0x3c00, 0xc000, 0x7bff]));
    put("i64", TensorData::Int64(vec![i64::MIN, 0, i64::MAX]));
    put("i32", TensorData::Int32(vec![i32::MIN, 7, i32::MAX]));
    put("u8", TensorData::Uint8(vec![0, 128, 255]));
    put("flag", TensorData::Bool(vec![true, false, true]));
    put(
        "text",
        TensorData::Bytes(vec![
            b"hello".to_vec(),
            Vec::new(),
            "\u{e9}\u{1f600}".as_bytes().to_vec(),
        ]),
    );
    let model: TritonModel = echo.load_spec(&echo_spec).unwrap();
    for encoding in [
        TensorEncoding::Json,
        TensorEncoding::Binary,
        TensorEncoding::default(),
    ] {
        let out = model.infer_with(&inputs, encoding).unwrap();
        for (name, tensor) in &inputs {
            assert_eq!(&out[&format!("{name}_out")], tensor, "{name} {encoding:?}");
        }
    }

    // Server and repository calls.
    assert!(client.server_live().unwrap());
    assert!(client.server_ready().unwrap());
    assert!(client.model_ready("affine", Some("1")).unwrap());
    assert!(!client.model_ready("affine", Some("7")).unwrap());
    let config = client.model_config("affine", None).unwrap();
    assert_eq!(config["max_batch_size"], 64);
    let index = client.repository_index().unwrap();
    let mut listed: Vec<&str> = index.iter().map(|e| e.name.as_str()).collect();
    listed.sort_unstable();
    assert_eq!(listed, names);
    assert!(index.iter().all(|e| e.state.as_deref() == Some("READY")));

    // A 400 about the data is invalid_input with the server's own message.
    let mut bad = NamedTensors::new();
    bad.insert(
        "x".into(),
        Tensor::new(vec![3], TensorData::Fp32(vec![1.0; 3])).unwrap(),
    );
    let err = affine.infer(&bad).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput, "{err}");
    assert!(
        err.details["server_message"]
            .as_str()
            .unwrap()
            .contains("shape"),
        "{err:?}"
    );
    // A wrong element type is caught locally, against the metadata.
    let mut wrong = NamedTensors::new();
    wrong.insert(
        "x".into(),
        Tensor::new(vec![1, 1], TensorData::Int32(vec![1])).unwrap(),
    );
    assert_eq!(
        affine.infer(&wrong).unwrap_err().error_code,
        ErrorCode::InvalidInput
    );

    // The deployment's digest must be the spec's: missing and different both fail.
    for (name, actual) in [
        ("affine-nodigest", None),
        ("affine-otherdigest", Some("sha256:00")),
    ] {
        let err = load(&provider, &spec(&endpoint, name, Some(AFFINE_DIGEST))).unwrap_err();
        assert_eq!(
            err.error_code,
            ErrorCode::WeightsDigestMismatch,
            "{name}: {err}"
        );
        assert_eq!(err.details["actual"], serde_json::json!(actual));
        assert_eq!(err.details["expected"], AFFINE_DIGEST);
    }
    let other = format!("sha256:{}", "2".repeat(64));
    let err = load(&provider, &spec(&endpoint, "affine", Some(&other))).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::WeightsDigestMismatch);

    // Unknown model → model_not_found.
    let err = load(
        &provider,
        &spec(&endpoint, "no-such-model", Some(AFFINE_DIGEST)),
    )
    .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::ModelNotFound, "{err}");

    // Model control: refused by default; when allowed, unload makes the loaded model
    // model_not_found, and load brings it back for a new load.
    let spare = spec(&endpoint, "affine-spare", Some(AFFINE_DIGEST));
    let err = client.unload_model("affine-spare").unwrap_err();
    assert_eq!(
        ModelError::from(err).error_code,
        ErrorCode::NetworkForbidden
    );
    let spare_model = load(&provider, &spare).unwrap();
    let control = TritonProvider::new(TritonProviderConfig {
        allow_model_control: true,
        ..TritonProviderConfig::default()
    });
    let control_client = control.client(spare.triton.as_ref().unwrap()).unwrap();
    control_client.unload_model("affine-spare").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while control_client.model_ready("affine-spare", None).unwrap() {
        assert!(Instant::now() < deadline, "unload did not finish");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (inputs, _) = affine_input(1, 2);
    let err = spare_model.infer(&inputs).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::ModelNotFound, "{err}");
    let err = load(&provider, &spare).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::ModelNotFound, "{err}");
    // With model control allowed, load() asks the server to load it.
    let reloaded = load(&control, &spare).unwrap();
    assert_affine(&reloaded, 2, 5);
    assert_affine(&spare_model, 2, 5);
    drop(run);
}

#[test]
fn no_server_is_triton_unavailable_in_under_a_second() {
    let port = free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let provider = TritonProvider::new(TritonProviderConfig::default());
    let started = Instant::now();
    let err = load(&provider, &spec(&endpoint, "affine", Some(AFFINE_DIGEST))).unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.error_code, ErrorCode::TritonUnavailable, "{err}");
    assert_eq!(err.details["endpoint"], endpoint);
    assert!(err.details["cause"].as_str().is_some_and(|c| !c.is_empty()));
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    eprintln!("no server: triton_unavailable after {elapsed:?}");
}

#[test]
fn non_loopback_endpoint_is_network_forbidden() {
    let provider = TritonProvider::new(TritonProviderConfig::default());
    for endpoint in [
        "http://192.0.2.10:8000",
        "http://example.com:8000",
        "http://10.0.0.1",
    ] {
        let started = Instant::now();
        let err = load(&provider, &spec(endpoint, "affine", Some(AFFINE_DIGEST))).unwrap_err();
        assert_eq!(
            err.error_code,
            ErrorCode::NetworkForbidden,
            "{endpoint}: {err}"
        );
        // Checked before any socket or name lookup: TEST-NET would hang until the timeout.
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}

#[test]
fn server_killed_in_flight_then_restarted_and_the_same_provider_recovers() {
    let test = "server_killed_in_flight_then_restarted_and_the_same_provider_recovers";
    let deployments = [Deployment::new("affine", Some(AFFINE_DIGEST))];
    let Some(mut run) = start(test, &deployments, &["affine"]) else {
        return;
    };
    let port = run.server.port();
    let endpoint = run.server.endpoint();
    let provider = Arc::new(TritonProvider::new(TritonProviderConfig::default()));
    let model: Arc<dyn LoadedModel> = Arc::from(load_boxed(
        &provider,
        &spec(&endpoint, "affine", Some(AFFINE_DIGEST)),
    ));
    assert_affine(model.as_ref(), 2, 8);
    // Health asks the endpoint: up and ready; a model the server does not have is not ready.
    let root = std::path::Path::new("/nonexistent");
    let health = provider.health(&spec(&endpoint, "affine", Some(AFFINE_DIGEST)), root);
    assert!(
        health.runtime_found && health.model_ready == Some(true),
        "{health:?}"
    );
    let health = provider.health(&spec(&endpoint, "absent", Some(AFFINE_DIGEST)), root);
    assert!(health.runtime_found, "{health:?}");
    assert_eq!(health.model_ready, Some(false), "{health:?}");

    // Four threads infer in a loop while the server is killed under them.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let model = Arc::clone(&model);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (inputs, _) = affine_input(8, 2048);
                let mut errors = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Err(e) = model.infer(&inputs) {
                        errors.push(e);
                    }
                }
                errors
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    run.server.kill();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let errors: Vec<ModelError> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(!errors.is_empty(), "killing the server must fail requests");
    for err in &errors {
        assert_eq!(err.error_code, ErrorCode::TritonUnavailable, "{err}");
        assert_eq!(err.details["endpoint"], endpoint);
    }
    // Down: fast, clear errors; health says the runtime is gone and why.
    let health = provider.health(&spec(&endpoint, "affine", Some(AFFINE_DIGEST)), root);
    assert!(!health.runtime_found, "{health:?}");
    assert!(
        health
            .detail
            .as_deref()
            .is_some_and(|d| d.contains(&endpoint)),
        "{health:?}"
    );
    let (inputs, expected) = affine_input(1, 4);
    assert_eq!(
        model.infer(&inputs).unwrap_err().error_code,
        ErrorCode::TritonUnavailable
    );

    // Restart on the same port; the same loaded model (same provider, same pool) works again.
    let install = install(test).unwrap();
    let log = run.repo.with_file_name("server2.log");
    let mut restarted = TritonServer::start(&install, &run.repo, port, &["affine"], &log).unwrap();
    restarted
        .wait_ready(&["affine"], Duration::from_secs(120))
        .unwrap();
    let out = model.infer(&inputs).unwrap();
    assert_eq!(out["y"].data(), &TensorData::Fp32(expected));
    assert_affine(model.as_ref(), 3, 300);
    drop(restarted);
}

#[derive(serde::Deserialize)]
struct Reference {
    sentences: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

#[test]
fn minilm_served_by_triton_through_the_manager_matches_sentence_transformers() {
    let test = "minilm_served_by_triton_through_the_manager_matches_sentence_transformers";
    let Some(onnx) = dp_tests::asset(MINILM_ONNX.trim_start_matches(".dp-assets/"), test) else {
        return;
    };
    let Some(models_root) = dp_tests::asset("models/all-minilm-l6-v2", test)
        .and_then(|p| p.parent().map(PathBuf::from))
    else {
        return;
    };
    // The deployment declares the digest of the file it actually serves.
    let Some((_run, manager)) = serve_onnx_with_catalog(
        test,
        "all-minilm-l6-v2",
        &onnx,
        "all-minilm-l6-v2-triton",
        &models_root,
    ) else {
        return;
    };
    let reference: Reference = serde_json::from_slice(
        &std::fs::read(
            dp_tests::data_dir().join("reference/minilm_l6_v2_sentence_transformers.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let sentences: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let output = manager
        .embed("all-minilm-l6-v2-triton", &sentences)
        .unwrap();
    assert_eq!(output.embeddings.len(), sentences.len());
    assert_eq!(output.models_used[0].model_name, "all-minilm-l6-v2-triton");
    for (i, (got, want)) in output
        .embeddings
        .iter()
        .zip(&reference.embeddings)
        .enumerate()
    {
        assert_eq!(got.len(), 384);
        let c = cosine(got, want);
        assert!(c >= 0.99999, "sentence {i} {:?}: cosine {c}", sentences[i]);
    }
    // The three providers' builds of MiniLM agree with each other (what `dp parity`
    // reports, through the same comparison).
    let builds = ["all-minilm-l6-v2", "all-minilm-l6-v2-onnx"].map(|name| {
        let out = manager.embed(name, &sentences).unwrap();
        assert_eq!(out.models_used[0].model_name, name);
        out.embeddings
    });
    for (name, vectors) in ["candle vs triton", "onnx vs triton"].iter().zip(&builds) {
        let parity = dp_manager::EmbeddingParity::compare(vectors, &output.embeddings).unwrap();
        println!("{name}: {parity:?}");
        assert_eq!(parity.inputs, sentences.len());
        assert!(parity.within(0.99999), "{name}: {parity:?}");
        assert!(parity.max_abs_diff < 1e-5, "{name}: {parity:?}");
    }
    let parity = dp_manager::EmbeddingParity::compare(&builds[0], &builds[1]).unwrap();
    assert!(parity.within(0.99999), "candle vs onnx: {parity:?}");
}

/// Serves `onnx` with the repository template `template` (its deployment declaring the
/// file's digest, as a real one would) and builds a manager on the real catalog whose
/// spec `spec_name` points at that server; `None` when the Triton install is missing.
fn serve_onnx_with_catalog(
    test: &str,
    template: &str,
    onnx: &std::path::Path,
    spec_name: &str,
    models_root: &std::path::Path,
) -> Option<(Running, dp_manager::ModelManager)> {
    serve_with_catalog(
        test,
        &[onnx_deployment(template, template, onnx)],
        &[spec_name],
        models_root,
    )
}

/// `onnx` served as `name` with the repository template `template`, its deployment
/// declaring the file's digest, as a real one would.
fn onnx_deployment(template: &str, name: &str, onnx: &std::path::Path) -> Deployment {
    let digest = dp_digest::digest_file(
        onnx,
        dp_digest::DigestAlgorithm::Sha256,
        &dp_digest::NoProgress,
    )
    .unwrap()
    .to_string();
    Deployment::new(template, Some(&digest))
        .named(name)
        .parameter("onnx_path", onnx.to_str().unwrap())
}

/// Serves `deployments` (all loaded) and builds a manager on the real catalog whose specs
/// `spec_names` point at that server; `None` when the Triton install is missing.
fn serve_with_catalog(
    test: &str,
    deployments: &[Deployment],
    spec_names: &[&str],
    models_root: &std::path::Path,
) -> Option<(Running, dp_manager::ModelManager)> {
    let names: Vec<&str> = deployments.iter().map(|d| d.name.as_str()).collect();
    let run = start(test, deployments, &names)?;
    let root = dp_tests::workspace_root().join("specs/catalog");
    let catalog = Catalog::load(&root).unwrap();
    let overrides: Vec<String> = spec_names
        .iter()
        .map(|spec| format!("{spec}.triton.endpoint={}", run.server.endpoint()))
        .collect();
    let overrides = dp_spec::Layer::from_overrides(&overrides).unwrap();
    let catalog = dp_spec::resolve(&catalog, &[overrides]).unwrap().catalog;
    // The in-process providers too: the same catalog's candle and ONNX builds are compared
    // with the served one.
    let manager = dp_manager::ModelManager::builder(catalog, models_root)
        .provider(Arc::new(TritonProvider::new(
            TritonProviderConfig::default(),
        )))
        .provider(Arc::new(dp_provider_candle::CandleProvider::new()))
        .provider(Arc::new(dp_provider_onnx::OnnxProvider::new(
            dp_provider_onnx::OnnxProviderConfig::default(),
        )))
        .reaper(false)
        .build()
        .unwrap();
    Some((run, manager))
}

#[derive(serde::Deserialize)]
struct ClipImageReference {
    image: String,
    path: String,
    embedding: Vec<f32>,
}

#[derive(serde::Deserialize)]
struct ClipReference {
    images: Vec<ClipImageReference>,
}

#[test]
fn clip_image_tower_served_by_triton_with_client_side_preset_matches_transformers() {
    let test = "clip_image_tower_served_by_triton_with_client_side_preset_matches_transformers";
    let Some(onnx) = dp_tests::asset("models/tiny-clip-onnx/vision_model.onnx", test) else {
        return;
    };
    if dp_tests::asset("images/skimage", test).is_none() {
        return;
    }
    let models_root = onnx
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf();
    let Some((_run, manager)) = serve_onnx_with_catalog(
        test,
        "tiny-clip-visual",
        &onnx,
        "tiny-clip-triton",
        &models_root,
    ) else {
        return;
    };
    let reference: ClipReference = serde_json::from_slice(
        &std::fs::read(dp_tests::data_dir().join("reference/clip/tiny-clip.json")).unwrap(),
    )
    .unwrap();
    let images: Vec<dp_manager::preset::ImageInput> = reference
        .images
        .iter()
        .map(|r| {
            dp_manager::preset::ImageInput::Encoded(
                std::fs::read(dp_tests::workspace_root().join(&r.path)).unwrap(),
            )
        })
        .collect();
    let output = manager.embed_images("tiny-clip-triton", &images).unwrap();
    assert_eq!(output.models_used[0].model_name, "tiny-clip-triton");
    assert_eq!(
        output.models_used[0].preprocess_preset.as_deref(),
        Some("image_clip")
    );
    for (want, got) in reference.images.iter().zip(&output.embeddings) {
        let c = cosine(got, &want.embedding);
        assert!(c >= 0.9999, "image {}: cosine {c}", want.image);
    }
    // A text request is refused by the preset before any call: this deployment has no
    // text tower and the spec lists no tokenizer.
    let err = manager.embed("tiny-clip-triton", &["a cat"]).unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(err.details["reason"], "texts_unsupported", "{err}");
}

/// The text models of `tests/data/reference/text/` (what sentence-transformers computed on
/// the files `cargo xtask setup` makes), each served from its ONNX file by the one generic
/// template `onnx-text` under the name its `-triton` spec gives.
const TEXT_TEMPLATE: &str = "onnx-text";

/// Serves the ONNX builds of `models` (`tiny-xlmr-e5`, …) with [`TEXT_TEMPLATE`] and builds
/// a manager whose `<model>-triton` specs point at that server; `None` (not in CI) when an
/// asset is missing.
fn serve_text_models(test: &str, models: &[&str]) -> Option<(Running, dp_manager::ModelManager)> {
    let mut deployments = Vec::new();
    for model in models {
        // The candle build (compared with the served one) and the ONNX file served.
        dp_tests::asset(&format!("models/{model}"), test)?;
        let onnx = dp_tests::asset(&format!("models/{model}-onnx/model.onnx"), test)?;
        deployments.push(onnx_deployment(TEXT_TEMPLATE, model, &onnx));
    }
    let models_root = dp_tests::workspace_root().join(".dp-assets/models");
    let specs: Vec<String> = models.iter().map(|m| format!("{m}-triton")).collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    serve_with_catalog(test, &deployments, &specs, &models_root)
}

fn text_reference<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = dp_tests::data_dir().join(format!("reference/text/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[derive(serde::Deserialize)]
struct TextEmbeddingReference {
    texts: Vec<String>,
    /// By prompt name (`none` for no prompt).
    outputs: std::collections::BTreeMap<String, PromptEmbeddings>,
}

#[derive(serde::Deserialize)]
struct PromptEmbeddings {
    embeddings: Vec<Vec<f32>>,
}

#[derive(serde::Deserialize)]
struct RerankReference {
    query: String,
    documents: Vec<String>,
    scores: Vec<f32>,
}

#[test]
fn text_embedders_served_by_triton_with_prompts_match_sentence_transformers() {
    let test = "text_embedders_served_by_triton_with_prompts_match_sentence_transformers";
    let models = ["tiny-xlmr-e5", "tiny-bert-cls"];
    let Some((_run, manager)) = serve_text_models(test, &models) else {
        return;
    };
    let (mut worst_cosine, mut worst_abs) = (1.0_f64, 0.0_f32);
    let mut worst_build = (1.0_f64, 0.0_f64);
    for model in models {
        let served = format!("{model}-triton");
        let reference: TextEmbeddingReference = text_reference(model);
        let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
        // No prompt, then each prompt of the model (E5's `query: `/`passage: `, the BERT
        // model's query instruction and its empty passage prompt).
        assert!(reference.outputs.contains_key("none") && reference.outputs.contains_key("query"));
        for (key, want) in &reference.outputs {
            let prompt = (key != "none").then_some(key.as_str());
            let out = manager.embed_with_prompt(&served, &texts, prompt).unwrap();
            let entry = &out.models_used[0];
            assert_eq!(entry.model_name, served);
            assert_eq!(entry.prompt_name.as_deref(), prompt, "{served}");
            assert_eq!(
                entry.preprocess_preset.as_deref(),
                Some("sentence_embedding")
            );
            assert_eq!(out.embeddings.len(), texts.len());
            for ((text, got), expected) in texts.iter().zip(&out.embeddings).zip(&want.embeddings) {
                let c = cosine(got, expected);
                let d = max_abs(got, expected);
                assert!(
                    c >= 0.99999 && d <= 1e-4,
                    "{served} prompt {key}: {text:?}: cosine {c}, max abs {d}"
                );
                worst_cosine = worst_cosine.min(c);
                worst_abs = worst_abs.max(d);
            }
            // The in-process builds of the same model, same prompt: the same preprocessing
            // (signature) and the same vectors.
            for build in [model.to_owned(), format!("{model}-onnx")] {
                let local = manager.embed_with_prompt(&build, &texts, prompt).unwrap();
                assert_eq!(
                    local.models_used[0].preprocess_signature, entry.preprocess_signature,
                    "{build} vs {served}, prompt {key}"
                );
                let parity =
                    dp_manager::EmbeddingParity::compare(&local.embeddings, &out.embeddings)
                        .unwrap();
                assert_eq!(parity.inputs, texts.len());
                assert!(
                    parity.within(0.99999) && parity.max_abs_diff <= 1e-5,
                    "{build} vs {served}, prompt {key}: {parity:?}"
                );
                worst_build = (
                    worst_build.0.min(parity.min_cosine),
                    worst_build.1.max(parity.max_abs_diff),
                );
            }
        }
    }
    println!(
        "triton text embeddings vs sentence-transformers: worst cosine {worst_cosine:.10}, \
         worst max abs {worst_abs:.2e}; vs candle/onnx builds: worst cosine {:.10}, worst max \
         abs {:.2e}",
        worst_build.0, worst_build.1
    );
}

#[test]
fn rerankers_served_by_triton_match_sentence_transformers_cross_encoder() {
    let test = "rerankers_served_by_triton_match_sentence_transformers_cross_encoder";
    let models = ["tiny-reranker", "tiny-xlmr-reranker"];
    let Some((_run, manager)) = serve_text_models(test, &models) else {
        return;
    };
    let (mut worst_reference, mut worst_build) = (0.0_f32, 0.0_f32);
    for model in models {
        let served = format!("{model}-triton");
        let reference: RerankReference = text_reference(model);
        let documents: Vec<&str> = reference.documents.iter().map(String::as_str).collect();
        let out = manager
            .rerank(&served, &reference.query, &documents)
            .unwrap();
        assert_eq!(out.scores.len(), documents.len());
        let entry = &out.models_used[0];
        assert_eq!(entry.model_name, served);
        assert_eq!(entry.preprocess_preset.as_deref(), Some("cross_encoder"));
        for (i, (got, want)) in out.scores.iter().zip(&reference.scores).enumerate() {
            let d = (got - want).abs();
            assert!(d <= 1e-4, "{served}: document {i}: score {got} vs {want}");
            worst_reference = worst_reference.max(d);
        }
        // The in-process builds: the same preprocessing and the same scores.
        for build in [model.to_owned(), format!("{model}-onnx")] {
            let local = manager
                .rerank(&build, &reference.query, &documents)
                .unwrap();
            assert_eq!(
                local.models_used[0].preprocess_signature, entry.preprocess_signature,
                "{build} vs {served}"
            );
            for (i, (a, b)) in local.scores.iter().zip(&out.scores).enumerate() {
                let d = (a - b).abs();
                assert!(d <= 1e-5, "{build} vs {served}: document {i}: {a} vs {b}");
                worst_build = worst_build.max(d);
            }
        }
        // Ranking through the task API, as for the in-process builds.
        let mut request = dp_manager::TaskRequest::new(
            dp_manager::TaskType::Rerank,
            &served,
            Some(dp_manager::TaskData::QueryWithDocuments {
                query: reference.query.clone(),
                documents: reference.documents.clone(),
            }),
        );
        request
            .options
            .insert("top_k".to_owned(), serde_json::json!(3));
        let dp_manager::TaskOutput::Ranking(ranking) = manager.task(request).unwrap().output else {
            panic!("a ranking")
        };
        assert_eq!(ranking, out.top_k(3), "{served}");
    }
    println!(
        "triton reranking: worst |Δscore| vs sentence-transformers {worst_reference:.2e}, vs \
         candle/onnx builds {worst_build:.2e}"
    );
}

/// What transformers' Whisper `generate` made of one audio file (a case of
/// `tests/data/reference/speech/tiny-whisper.json`): the language, and each 30-second
/// chunk's text on its own.
#[derive(serde::Deserialize)]
struct SpeechCase {
    name: String,
    language: String,
    chunks: Vec<SpeechChunk>,
}

#[derive(serde::Deserialize)]
struct SpeechChunk {
    text: String,
}

#[derive(serde::Deserialize)]
struct SpeechReference {
    cases: Vec<SpeechCase>,
}

#[test]
fn whisper_served_by_triton_with_client_side_features_matches_transformers() {
    use dp_manager::preset::AudioInput;
    use dp_manager::preset::audio::SpeechTask;
    use dp_manager::{GenerationOptions, TranscriptionOptions};

    let test = "whisper_served_by_triton_with_client_side_features_matches_transformers";
    let Some(weights) = dp_tests::asset("models/tiny-whisper/model.safetensors", test) else {
        return;
    };
    let Some(audio_dir) = dp_tests::asset("audio", test) else {
        return;
    };
    let digest = dp_digest::digest_file(
        &weights,
        dp_digest::DigestAlgorithm::Sha256,
        &dp_digest::NoProgress,
    )
    .unwrap()
    .to_string();
    // The server reads the whole Hugging Face folder; the client only the preset's files.
    let deployment = Deployment::new("whisper", Some(&digest))
        .named("tiny-whisper")
        .parameter("model_dir", weights.parent().unwrap().to_str().unwrap());
    let models_root = dp_tests::workspace_root().join(".dp-assets/models");
    let Some((_run, manager)) =
        serve_with_catalog(test, &[deployment], &["tiny-whisper-triton"], &models_root)
    else {
        return;
    };
    let reference: SpeechReference = serde_json::from_slice(
        &std::fs::read(dp_tests::data_dir().join("reference/speech/tiny-whisper.json")).unwrap(),
    )
    .unwrap();
    let case = |name: &str| reference.cases.iter().find(|c| c.name == name).unwrap();
    let audio = |file: &str| AudioInput::Encoded(std::fs::read(audio_dir.join(file)).unwrap());
    let greedy = |language: Option<&str>, task: SpeechTask| TranscriptionOptions {
        language: language.map(str::to_owned),
        task,
        generation: GenerationOptions {
            max_new_tokens: Some(40),
            ..GenerationOptions::default()
        },
    };

    // Detection in one request of three inputs, one of them 65 s long: its first chunk is
    // sent with the others (empty language), its two later chunks afterwards with the
    // language the server reported; the texts of its chunks are joined.
    let inputs = [
        ("speech/greedy_detect", "speech_16k_s16.wav", 30.0),
        ("two_tone/greedy_detect", "two_tone_16k_s16.wav", 3.0),
        ("long_65s/greedy_detect", "long_65s_16k_s16.wav", 65.0),
    ];
    let audios: Vec<AudioInput> = inputs.iter().map(|(_, file, _)| audio(file)).collect();
    let output = manager
        .transcribe(
            "tiny-whisper-triton",
            &audios,
            &greedy(None, SpeechTask::Transcribe),
        )
        .unwrap();
    assert_eq!(output.transcripts.len(), inputs.len());
    for ((name, _, seconds), got) in inputs.iter().zip(&output.transcripts) {
        let want = case(name);
        let text: String = want.chunks.iter().map(|c| c.text.as_str()).collect();
        assert_eq!(got.text, text, "{name}");
        assert_eq!(
            got.language.as_deref(),
            Some(want.language.as_str()),
            "{name}"
        );
        assert!((got.duration_seconds - seconds).abs() < 1e-3, "{name}");
        assert!(
            got.chunk_token_ids.is_empty(),
            "the server returns text only"
        );
    }
    assert_eq!(output.kv_cache_peak_bytes, 0);
    let used = &output.models_used[0];
    assert_eq!(used.model_name, "tiny-whisper-triton");
    assert_eq!(
        used.preprocess_preset.as_deref(),
        Some("speech_recognition")
    );
    let generation = used.generation.as_ref().unwrap();
    assert_eq!(generation["decoded_by"], "server");
    assert_eq!(generation["decoding"], "greedy");
    assert_eq!(generation["max_new_tokens"], 40);
    assert_eq!(output.model_signature, used.model_signature);

    // A forced language and translation reach the server's prompt.
    let want = case("chirp/greedy_translate_de");
    let output = manager
        .transcribe(
            "tiny-whisper-triton",
            &[audio("chirp_16k_s16.wav")],
            &greedy(Some("de"), SpeechTask::Translate),
        )
        .unwrap();
    assert_eq!(output.transcripts[0].text, want.chunks[0].text);
    assert_eq!(output.transcripts[0].language.as_deref(), Some("de"));

    // Refused on the client, before any audio is sent: beam search (the server decodes
    // greedily) and a language the model's generation_config.json does not list.
    let mut beams = greedy(Some("en"), SpeechTask::Transcribe);
    beams.generation.num_beams = 4;
    let err = manager
        .transcribe("tiny-whisper-triton", &[audio("chirp_16k_s16.wav")], &beams)
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(err.details["reason"], "invalid_option", "{err}");
    assert_eq!(err.details["option"], "num_beams", "{err}");
    let err = manager
        .transcribe(
            "tiny-whisper-triton",
            &[audio("chirp_16k_s16.wav")],
            &greedy(Some("xx"), SpeechTask::Transcribe),
        )
        .unwrap_err();
    assert_eq!(err.error_code, ErrorCode::InvalidInput);
    assert_eq!(err.details["reason"], "unknown_language", "{err}");
}
