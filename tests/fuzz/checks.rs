//! The properties the fuzz targets check, shared by `cargo fuzz` (tests/fuzz/fuzz_targets)
//! and by the regression test that replays every kept input on stable Rust
//! (tests/fuzz_regressions.rs). Each check takes the raw fuzzer bytes, never panics on bad
//! input, and panics only when a promised property breaks.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use dp_digest::{
    ArtifactPins, DigestAlgorithm, ManifestOptions, VerifyOptions, WeightsDigest, digest_bytes,
    manifest_of_dir, open_verified,
};
use dp_provider_candle::CandleProvider;
use dp_provider_triton::http::{HeaderMap, HeaderName, HeaderValue};
use dp_provider_triton::{INFERENCE_HEADER, decode_infer_response};
use dp_spec::{
    ErrorCode, LoadRequest, ModelProvider, ModelSpec, NamedTensors, Precision, ResolvedDevice,
    SourceDocument, SourceFormat, Tensor, TensorData, to_yaml, validate_document,
};

/// A property check over raw fuzzer bytes.
pub(crate) type Check = fn(&[u8]);

/// The fuzz targets, by name (the names of `tests/fuzz/fuzz_targets/*.rs`).
pub(crate) const TARGETS: &[(&str, Check)] = &[
    ("spec_yaml", spec_yaml),
    ("spec_json", spec_json),
    ("weights_digest", weights_digest),
    ("manifest", manifest),
    ("safetensors_header", safetensors_header),
    ("triton_response", triton_response),
];

/// The YAML spec reader and validator: every document it accepts survives a round trip
/// through the YAML writer unchanged.
pub(crate) fn spec_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = SourceDocument::parse_str("fuzz.yaml", text, SourceFormat::Yaml) else {
        return;
    };
    let _ = validate_document(&doc);
    let written = to_yaml(&doc.value);
    let back = SourceDocument::parse_str("again.yaml", &written, SourceFormat::Yaml)
        .unwrap_or_else(|e| panic!("writer output does not parse: {e}\n{written}"));
    assert_eq!(
        back.value, doc.value,
        "round trip changed the value:\n{written}"
    );
}

/// The JSON spec reader and validator agree with serde_json on which documents are
/// well-formed and what they hold.
pub(crate) fn spec_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(doc) = SourceDocument::parse_str("fuzz.json", text, SourceFormat::Json) {
        let _ = validate_document(&doc);
        let reference: serde_json::Value =
            serde_json::from_str(text).expect("accepted JSON that serde_json rejects");
        assert_eq!(reference, doc.value);
    }
}

/// `WeightsDigest` parsing: what parses prints back to an equal digest, also via JSON.
pub(crate) fn weights_digest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(digest) = text.parse::<WeightsDigest>() {
        let printed = digest.to_string();
        let again: WeightsDigest = printed.parse().expect("printed digest does not parse");
        assert_eq!(again, digest);
        let via_json: WeightsDigest =
            serde_json::from_value(serde_json::to_value(digest).expect("serializes"))
                .expect("round trips through JSON");
        assert_eq!(via_json, digest);
    }
}

#[derive(Debug, Arbitrary)]
enum Node {
    File { name: Vec<u8>, contents: Vec<u8> },
    Dir { name: Vec<u8> },
    Link { name: Vec<u8>, target: Vec<u8> },
}

#[derive(Debug, Arbitrary)]
struct Tree {
    blake3: bool,
    nodes: Vec<Node>,
}

fn path_of(root: &Path, name: &[u8]) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::OsStr::from_bytes(name);
    let rel = Path::new(name);
    // Keep the fuzzer's writes inside its temporary directory.
    if name.is_empty()
        || rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(root.join(rel))
}

/// Directory manifests on arbitrary trees (names, contents, symlinks): every entry's digest
/// is the digest of the file's bytes, entries are in byte order without `./`, and the
/// aggregate is the digest of the `sha256sum` lines, as docs/digests.md promises.
pub(crate) fn manifest(data: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(tree) = Tree::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root");
    for node in tree.nodes.iter().take(32) {
        // Names the file system refuses are simply not created.
        match node {
            Node::File { name, contents } => {
                if let Some(p) = path_of(&root, name) {
                    let _ = std::fs::write(p, contents);
                }
            }
            Node::Dir { name } => {
                if let Some(p) = path_of(&root, name) {
                    let _ = std::fs::create_dir_all(p);
                }
            }
            Node::Link { name, target } => {
                if let Some(p) = path_of(&root, name) {
                    let _ = std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), p);
                }
            }
        }
    }
    let algorithm = if tree.blake3 {
        DigestAlgorithm::Blake3
    } else {
        DigestAlgorithm::Sha256
    };
    let options = ManifestOptions {
        algorithm,
        ..ManifestOptions::default()
    };
    let Ok(manifest) = manifest_of_dir(&root, &options) else {
        return;
    };
    for entry in &manifest.files {
        let bytes = std::fs::read(root.join(&entry.path)).expect("listed file is readable");
        assert_eq!(entry.size, bytes.len() as u64);
        assert_eq!(entry.digest, digest_bytes(algorithm, &bytes));
        assert!(!entry.path.starts_with("./") && !entry.path.contains('\\'));
    }
    assert!(
        manifest
            .files
            .windows(2)
            .all(|w| w[0].path.as_bytes() < w[1].path.as_bytes())
    );
    assert_eq!(
        manifest.aggregate,
        digest_bytes(algorithm, manifest.sha256sum_lines().as_bytes())
    );
}

/// The tiny BERT `dp demo` ships (`crates/dp-cli/demo`), copied once into a temporary
/// models root whose `model.safetensors` each input replaces.
struct SafetensorsFixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    spec: ModelSpec,
}

fn safetensors_fixture() -> &'static SafetensorsFixture {
    static FIXTURE: OnceLock<SafetensorsFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // Included by two crates (tests/fuzz and tests), so find the workspace upwards.
        let demo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|dir| dir.join("crates/dp-cli/demo"))
            .find(|demo| demo.is_dir())
            .expect("crates/dp-cli/demo above the including crate");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_owned();
        dp_tests::copy_dir(&demo.join("models/tiny-bert"), &root.join("tiny-bert")).expect("copy");
        let text = std::fs::read_to_string(demo.join("catalog/text_embedding/tiny-bert.yaml"))
            .expect("demo spec");
        let doc = SourceDocument::parse_str("tiny-bert.yaml", &text, SourceFormat::Yaml)
            .expect("demo spec parses");
        let spec = validate_document(&doc).expect("demo spec is valid");
        SafetensorsFixture {
            _dir: dir,
            root,
            spec,
        }
    })
}

fn ids(values: Vec<i64>) -> Tensor {
    Tensor::new(vec![1, values.len()], TensorData::Int64(values)).expect("shape fits")
}

/// Safetensors handling in the candle provider: whatever bytes sit in `model.safetensors`
/// (huge header lengths, overlapping or out-of-range offsets, wrong dtypes or shapes,
/// truncation), loading either gives a model that runs or a structured error about the
/// file; never a panic, never a huge allocation.
pub(crate) fn safetensors_header(data: &[u8]) {
    let fixture = safetensors_fixture();
    std::fs::write(fixture.root.join("tiny-bert/model.safetensors"), data).expect("write");
    // As the manager hands files to a provider: opened once and hashed (unpinned here: the
    // bytes are the fuzzer's).
    let artifacts = open_verified(
        &fixture.root,
        &fixture.spec.local_artifacts,
        &ArtifactPins::default(),
        &VerifyOptions::default(),
    )
    .expect("walk")
    .artifacts
    .expect("unpinned files verify");
    let loaded = CandleProvider::new().load(&LoadRequest {
        spec: &fixture.spec,
        artifacts: &artifacts,
        models_root: &fixture.root,
        device: ResolvedDevice::Cpu,
        precision: Precision::Fp32,
    });
    match loaded {
        Ok(model) => {
            // Its tensors were checked against the config, so a loaded model runs.
            let mut inputs = NamedTensors::new();
            inputs.insert("input_ids".into(), ids(vec![1, 5, 2]));
            inputs.insert("attention_mask".into(), ids(vec![1, 1, 1]));
            inputs.insert("token_type_ids".into(), ids(vec![0, 0, 0]));
            let out = model.infer(&inputs).expect("a loaded model runs");
            assert_eq!(out["last_hidden_state"].shape()[..2], [1, 3]);
        }
        Err(err) => {
            assert!(
                matches!(
                    err.error_code,
                    ErrorCode::InvalidSpec | ErrorCode::Io | ErrorCode::WeightsMissing
                ),
                "unexpected error code {:?}: {err}",
                err.error_code
            );
            assert!(err.message.contains("model.safetensors"), "{err}");
        }
    }
}

/// Triton's inference-response decoder: the bytes before the first `\n` are the
/// `Inference-Header-Content-Length` value (none when empty), the rest is the body. What
/// decodes has element counts that match its shapes; the rest is a `DecodeError`.
pub(crate) fn triton_response(data: &[u8]) {
    let (header, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let mut headers = HeaderMap::new();
    if !header.is_empty()
        && let Ok(value) = HeaderValue::from_bytes(header)
    {
        headers.insert(
            HeaderName::try_from(INFERENCE_HEADER).expect("a valid header name"),
            value,
        );
    }
    if let Ok(outputs) = decode_infer_response(&headers, body) {
        for (name, tensor) in &outputs {
            let count = tensor
                .shape()
                .iter()
                .try_fold(1_usize, |a, &d| a.checked_mul(d));
            assert_eq!(count, Some(tensor.data().len()), "tensor {name}");
        }
    }
}
