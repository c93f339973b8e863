//! The no-network promise, proved rather than assumed.
//!
//! 1. The Tier-0 smoke — load and run every in-process model of the test catalog (the tiny
//!    BERT `dp demo` ships, MiniLM on candle and MiniLM on ONNX Runtime) — runs inside a
//!    fresh network namespace whose only interface is a loopback that is not even up, so any
//!    attempt to reach a network would fail the run.
//! 2. Specs that would need the network fail with `network_forbidden` before any socket is
//!    opened: a listener stands where the forbidden endpoint points and must see no
//!    connection.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dp_manager::ModelManager;
use dp_manager::providers::candle::CandleProvider;
use dp_manager::providers::onnx::{OnnxProvider, OnnxProviderConfig};
use dp_spec::{Catalog, ErrorCode, ModelProvider, SourceDocument, SourceFormat};

/// Set in the child that runs inside the namespace.
const INNER: &str = "DP_OFFLINE_SMOKE_INNER";
/// Printed by the child when the smoke passed, with the number of models it ran.
const MARKER: &str = "tier0-smoke-passed models=";

/// Copies the spec files into a temporary catalog with every model made Tier 0, so the
/// health report's Tier-0 summary covers them all.
fn tier0_catalog(specs: &[PathBuf]) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().expect("temp dir");
    for spec in specs {
        let text = std::fs::read_to_string(spec).expect("spec");
        let mut lines: Vec<&str> = text.lines().filter(|l| !l.starts_with("tier:")).collect();
        lines.push("tier: 0");
        let name = spec.file_name().expect("file name");
        let role_dir = dir.path().join("text_embedding");
        std::fs::create_dir_all(&role_dir).expect("role dir");
        std::fs::write(role_dir.join(name), lines.join("\n") + "\n").expect("write spec");
    }
    let catalog = Catalog::load(dir.path()).expect("the Tier-0 catalog is valid");
    (dir, catalog)
}

fn in_process_providers() -> Vec<Arc<dyn ModelProvider>> {
    vec![
        Arc::new(CandleProvider::new()),
        Arc::new(OnnxProvider::new(OnnxProviderConfig::default())),
    ]
}

/// Health says every Tier-0 model is ready (artifacts present, digest verified, provider
/// found), then each model embeds two sentences that come out unit-length and distinct.
fn smoke(catalog: Catalog, models_root: &Path) -> usize {
    let names: Vec<String> = catalog
        .entries()
        .iter()
        .map(|e| e.spec.model_name.as_str().to_owned())
        .collect();
    let manager = ModelManager::builder(catalog, models_root)
        .providers(in_process_providers())
        .reaper(false)
        .build()
        .expect("builds offline");
    let health = manager.health();
    assert!(
        health.tier0_ready(),
        "Tier-0 not ready offline: {:#?}",
        health.models
    );
    assert_eq!(health.tier0.ready, names.len());
    for name in &names {
        let out = manager
            .embed(name, &["a cat sat on the mat", "quarterly revenue grew"])
            .unwrap_or_else(|e| panic!("{name} embeds offline: {e}"));
        assert_eq!(out.embeddings.len(), 2);
        for e in &out.embeddings {
            let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{name}: norm {norm}");
        }
        assert_ne!(out.embeddings[0], out.embeddings[1], "{name}");
        assert_eq!(out.models_used[0].model_name.as_str(), name.as_str());
    }
    names.len()
}

/// Runs in the namespace only (started by the test below, which checks its output).
#[test]
#[ignore = "runs inside a network namespace, started by tier0_smoke_passes_in_a_network_namespace_with_no_interfaces_but_loopback"]
fn tier0_smoke_inside_the_namespace() {
    assert!(
        std::env::var_os(INNER).is_some(),
        "run through tier0_smoke_passes_in_a_network_namespace_with_no_interfaces_but_loopback"
    );
    // /sys shows the host's interfaces unless remounted; the kernel's own per-namespace
    // list is /proc/self/net/dev.
    let dev = std::fs::read_to_string("/proc/self/net/dev").expect("/proc/self/net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "the namespace must have loopback only");
    // And it really is cut off: a connection to any address, even loopback, fails at once.
    for addr in ["192.0.2.1:80", "127.0.0.1:9"] {
        let addr = addr.parse().expect("address");
        let reached = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        assert!(
            reached.is_err(),
            "{addr} was reachable inside the namespace"
        );
    }

    let root = dp_tests::workspace_root();
    let demo = root.join("crates/dp-cli/demo");
    let (_d1, demo_catalog) = tier0_catalog(&[demo.join("catalog/text_embedding/tiny-bert.yaml")]);
    let mut ran = smoke(demo_catalog, &demo.join("models"));

    let assets = root.join(".dp-assets/models");
    let specs = dp_tests::sample_catalog().join("text_embedding");
    let (_d2, minilm_catalog) = tier0_catalog(&[
        specs.join("all-minilm-l6-v2.yaml"),
        specs.join("all-minilm-l6-v2-onnx.yaml"),
    ]);
    ran += smoke(minilm_catalog, &assets);
    println!("{MARKER}{ran}");
}

#[test]
fn tier0_smoke_passes_in_a_network_namespace_with_no_interfaces_but_loopback() {
    const TEST: &str = "tier0_smoke_passes_in_a_network_namespace_with_no_interfaces_but_loopback";
    let (Some(_), Some(_), Some(_)) = (
        dp_tests::asset("models/all-minilm-l6-v2/model.safetensors", TEST),
        dp_tests::asset("models/all-minilm-l6-v2-onnx/model.onnx", TEST),
        dp_tests::asset("onnxruntime/libonnxruntime.so", TEST),
    ) else {
        return;
    };
    // `-r` maps us to root in a new user namespace, which lets an unprivileged user create
    // the network namespace too; the child sees only its own, unconfigured loopback.
    let exe = std::env::current_exe().expect("test binary");
    let output = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "tier0_smoke_inside_the_namespace",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(INNER, "1")
        .output()
        .expect(
            "`unshare` (util-linux) must be installed and user namespaces enabled \
             (sysctl kernel.unprivileged_userns_clone=1) to prove the no-network promise",
        );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the offline smoke failed in the namespace ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let ran: usize = stdout
        .lines()
        .find_map(|l| l.split_once(MARKER))
        .and_then(|(_, n)| n.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("the child did not report the smoke:\n{stdout}\n{stderr}"));
    assert_eq!(ran, 3, "tiny-bert, MiniLM on candle, MiniLM on ONNX");
}

fn triton_spec_text(endpoint: &str) -> String {
    format!(
        "model_name: remote-embedder\nmodel_version: '1'\nrole: text_embedding\n\
         runtime: triton\nengine: onnx\n\
         triton:\n  endpoint: {endpoint}\n  model_name: remote-embedder\n"
    )
}

fn url_artifact_spec_text(artifact: &str) -> String {
    format!(
        "model_name: fetched\nmodel_version: '1'\nrole: text_embedding\n\
         runtime: inprocess\nengine: onnx\nlocal_artifacts:\n  - {artifact}\n\
         weights_digest: sha256:{}\n",
        "ab".repeat(32)
    )
}

/// Loads a one-spec catalog from `text`; `Err` holds the codes of the diagnostics.
fn one_spec_catalog(dir: &Path, name: &str, text: &str) -> Result<Catalog, Vec<ErrorCode>> {
    let role_dir = dir.join("catalog/text_embedding");
    std::fs::create_dir_all(&role_dir).expect("catalog dir");
    std::fs::write(role_dir.join(format!("{name}.yaml")), text).expect("spec");
    Catalog::load(&dir.join("catalog"))
        .map_err(|diagnostics| diagnostics.iter().map(|d| d.error_code).collect())
}

/// No connection may have reached `listener`.
fn assert_untouched(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("a connection was opened from {peer}"),
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn a_spec_needing_the_network_is_network_forbidden_before_any_socket_is_opened() {
    // A real listener where the forbidden endpoint points: if anything dialed it (health
    // probe, model-ready check, load), it would see the connection.
    let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
    listener.set_nonblocking(true).expect("non-blocking");
    let endpoint = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let dir = tempfile::tempdir().expect("temp dir");

    // The manager is told only `triton.internal` may be contacted, so the loopback endpoint
    // is as forbidden as any remote one; the build must refuse it without dialing.
    let catalog = one_spec_catalog(dir.path(), "remote-embedder", &triton_spec_text(&endpoint))
        .expect("valid");
    let err = ModelManager::builder(catalog, dir.path())
        .providers(vec![
            Arc::new(dp_manager::providers::triton::TritonProvider::new(
                dp_manager::providers::triton::TritonProviderConfig {
                    allowed_hosts: vec!["triton.internal".into()],
                    ..Default::default()
                },
            )) as Arc<dyn ModelProvider>,
        ])
        .allowed_triton_hosts(["triton.internal".to_owned()])
        .reaper(false)
        .build()
        .expect_err("a forbidden endpoint fails the build");
    assert_eq!(err.error_code, ErrorCode::NetworkForbidden, "{err}");
    assert!(err.message.contains(&endpoint), "{}", err.message);
    assert_untouched(&listener);

    // The provider on its own refuses it too (a caller that bypasses the manager).
    let provider = dp_manager::providers::triton::TritonProvider::new(
        dp_manager::providers::triton::TritonProviderConfig {
            allowed_hosts: vec!["triton.internal".into()],
            ..Default::default()
        },
    );
    let doc = SourceDocument::parse_str(
        "remote.yaml",
        &triton_spec_text(&endpoint),
        SourceFormat::Yaml,
    )
    .expect("YAML");
    let spec = dp_spec::validate_document(&doc).expect("valid");
    let err = provider
        .load(&dp_spec::LoadRequest {
            spec: &spec,
            artifacts: &dp_spec::VerifiedArtifacts::empty(dir.path()),
            models_root: dir.path(),
            device: dp_spec::ResolvedDevice::Cpu,
            precision: dp_spec::Precision::Fp32,
        })
        .err()
        .expect("refused");
    assert_eq!(err.error_code, ErrorCode::NetworkForbidden, "{err}");
    assert_untouched(&listener);

    // Artifacts given as URLs, whatever the scheme, are refused the same way.
    for artifact in [
        format!("{endpoint}/model.onnx"),
        "file:///etc/passwd".to_owned(),
        "s3://bucket/model.onnx".to_owned(),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = match one_spec_catalog(dir.path(), "fetched", &url_artifact_spec_text(&artifact))
        {
            // The spec rules refuse it already: the same promise, earlier.
            Err(codes) => {
                assert!(
                    codes.contains(&ErrorCode::NetworkForbidden),
                    "{artifact}: {codes:?}"
                );
                continue;
            }
            Ok(catalog) => ModelManager::builder(catalog, dir.path())
                .providers(in_process_providers())
                .reaper(false)
                .build()
                .expect_err("a URL artifact fails the build"),
        };
        assert_eq!(
            err.error_code,
            ErrorCode::NetworkForbidden,
            "{artifact}: {err}"
        );
    }
    assert_untouched(&listener);
}
