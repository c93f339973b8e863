//! Verification before a load: nothing altered, missing or linked from outside the models
//! root reaches a provider, and the verification cache is used and refreshed.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use dp_digest::{DigestAlgorithm, digest_bytes};
use dp_manager::ModelManager;
use dp_spec::{Catalog, ErrorCode, ModelProvider};
use tempfile::TempDir;

use crate::common::{TestProvider, catalog};

/// A models root holding `m/weights.bin`, and a catalog whose model `m` pins it.
fn pinned_model(extra: &str) -> (TempDir, TempDir, Catalog) {
    let root = tempfile::tempdir().expect("temp dir");
    fs::create_dir(root.path().join("m")).expect("mkdir");
    fs::write(root.path().join("m/weights.bin"), b"the pinned bytes").expect("write");
    let pin = digest_bytes(DigestAlgorithm::Sha256, b"the pinned bytes");
    let (specs, catalog) = catalog(&[(
        "test/m.yaml".to_owned(),
        format!(
            "model_name: m\nmodel_version: \"1\"\nrole: test\nruntime: inprocess\n\
             engine: candle\nlocal_artifacts: [m/weights.bin]\nweights_digest: {pin}\n{extra}"
        ),
    )]);
    (root, specs, catalog)
}

fn manager(root: &Path, catalog: Catalog, provider: &Arc<TestProvider>) -> ModelManager {
    ModelManager::builder(catalog, root)
        .provider(Arc::clone(provider) as Arc<dyn ModelProvider>)
        .reaper(false)
        .build()
        .expect("builds")
}

#[test]
fn pinned_bytes_load_and_altered_bytes_never_reach_the_provider() {
    let (root, _specs, catalog) = pinned_model("");
    let provider = TestProvider::new();
    let manager = manager(root.path(), catalog, &provider);
    drop(manager.get("m").expect("the pinned bytes load"));
    assert_eq!(provider.loads(), 1);
    assert!(manager.release("m"));

    fs::write(root.path().join("m/weights.bin"), b"the altered bytes").expect("write");
    let err = manager.get("m").expect_err("altered");
    assert_eq!(err.error_code, ErrorCode::WeightsDigestMismatch);
    assert!(err.message.contains("m/weights.bin"), "{}", err.message);
    assert!(err.message.contains("re-pin"), "{}", err.message);
    assert_eq!(err.details["artifact"], "m/weights.bin");
    assert_eq!(provider.loads(), 1, "the provider was not asked");
}

#[test]
fn a_link_out_of_the_models_root_is_refused_even_with_the_pinned_bytes() {
    let (root, _specs, catalog) = pinned_model("");
    let outside = tempfile::tempdir().expect("temp dir");
    let weights = root.path().join("m/weights.bin");
    fs::rename(&weights, outside.path().join("weights.bin")).expect("move out");
    std::os::unix::fs::symlink(outside.path().join("weights.bin"), &weights).expect("link");
    let provider = TestProvider::new();
    let err = manager(root.path(), catalog, &provider)
        .get("m")
        .expect_err("outside the root");
    assert_eq!(err.error_code, ErrorCode::WeightsDigestMismatch);
    assert!(err.message.contains("outside"), "{}", err.message);
    assert_eq!(provider.loads(), 0);
}

#[test]
fn missing_artifacts_are_named() {
    let (root, _specs, catalog) = pinned_model("");
    fs::remove_file(root.path().join("m/weights.bin")).expect("remove");
    let provider = TestProvider::new();
    let err = manager(root.path(), catalog, &provider)
        .get("m")
        .expect_err("missing");
    assert_eq!(err.error_code, ErrorCode::WeightsMissing);
    assert!(err.message.contains("m/weights.bin"), "{}", err.message);
    assert_eq!(err.details["missing"][0], "m/weights.bin");
    let file = root.path().join("m/weights.bin");
    assert_eq!(err.details["file"], file.display().to_string());
    assert_eq!(provider.loads(), 0);
}

#[test]
fn a_triton_pin_describes_the_deployment_not_the_local_files() {
    let root = tempfile::tempdir().expect("temp dir");
    fs::create_dir(root.path().join("tok")).expect("mkdir");
    fs::write(root.path().join("tok/tokenizer.json"), b"{}").expect("write");
    let (_specs, catalog) = catalog(&[(
        "test/remote.yaml".to_owned(),
        format!(
            "model_name: remote\nmodel_version: \"1\"\nrole: test\nruntime: triton\n\
             engine: onnx\nlocal_artifacts: [tok/tokenizer.json]\nweights_digest: sha256:{}\n\
             triton:\n  endpoint: http://127.0.0.1:8000\n  model_name: remote\n",
            "ab".repeat(32)
        ),
    )]);
    let provider = TestProvider::new();
    let manager = manager(root.path(), catalog, &provider);
    drop(
        manager
            .get("remote")
            .expect("local files present; the pin is not theirs"),
    );
    assert!(manager.release("remote"));
    fs::remove_file(root.path().join("tok/tokenizer.json")).expect("remove");
    let err = manager.get("remote").expect_err("missing tokenizer");
    assert_eq!(err.error_code, ErrorCode::WeightsMissing);
}

#[test]
fn the_verification_cache_is_filled_then_trusted() {
    let (root, _specs, catalog) = pinned_model("");
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = cache_dir.path().join("verify-cache.json");
    let provider = TestProvider::new();
    let manager = ModelManager::builder(catalog, root.path())
        .provider(Arc::clone(&provider) as Arc<dyn ModelProvider>)
        .verification_cache(&cache)
        .reaper(false)
        .build()
        .expect("builds");
    drop(manager.get("m").expect("loads"));
    assert!(cache.is_file(), "the first load records the digests");
    let recorded = fs::read(&cache).expect("read");
    assert!(manager.release("m"));
    drop(manager.get("m").expect("reloads"));
    assert_eq!(
        fs::read(&cache).expect("read"),
        recorded,
        "nothing new to save"
    );
}

#[test]
fn verification_can_be_turned_off_for_providers_that_read_no_file() {
    let (root, _specs, catalog) = pinned_model("");
    fs::write(root.path().join("m/weights.bin"), b"altered").expect("write");
    let provider = TestProvider::new();
    let manager = ModelManager::builder(catalog, root.path())
        .provider(Arc::clone(&provider) as Arc<dyn ModelProvider>)
        .verify_before_load(false)
        .reaper(false)
        .build()
        .expect("builds");
    drop(manager.get("m").expect("not verified"));
    assert_eq!(provider.loads(), 1);
}
