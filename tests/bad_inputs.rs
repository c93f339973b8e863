//! The table of bad inputs: every way a spec, an artifact, a lock entry, a request or a
//! runtime can be wrong, refused with its exact error code and a helpful message.
//!
//! Each row builds one broken or hostile situation in a fresh temporary tree (a catalog, a
//! models root, and an `outside/` folder that is NOT under the models root), runs the real
//! public API on it (catalog loading, the manager with the real candle, ONNX Runtime and
//! Triton providers, `dp-digest`), and asserts four things:
//!
//! 1. it is refused with the exact [`ErrorCode`] of the row;
//! 2. the message is helpful: non-empty, and it contains the row's distinctive substrings
//!    (what is wrong: the file, field or tensor; and what to do);
//! 3. nothing panicked (the action runs under `catch_unwind`);
//! 4. no file changed: every path of the temporary tree has the same kind, length, mtime and
//!    SHA-256 (or link target) before and after.
//!
//! ONNX rows run the real ONNX Runtime (`cargo xtask setup`); without it they are not run
//! outside CI and fail under `CI=true`. Triton rows talk to a tiny fake HTTP server on
//! 127.0.0.1 written below: a FAULT INJECTION, allowed because a real Triton server never
//! answers garbage JSON, lies about `Content-Length` or stalls in the middle of a reply.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use std::{fs, thread};

use dp_digest::{DigestAlgorithm, LockFile, VerifyOptions, digest_bytes, verify_artifacts};
use dp_manager::{EmbeddingCacheConfig, ModelManager, TaskData, TaskOutput, TaskRequest, TaskType};
use dp_provider_candle::CandleProvider;
use dp_provider_onnx::{OnnxProvider, OnnxProviderConfig};
use dp_provider_triton::{TritonProvider, TritonProviderConfig};
use dp_spec::{
    Catalog, Diagnostic, ErrorCode, ModelError, NamedTensors, ParseLimits, SourceDocument, Tensor,
    TensorData,
};
use serde_json::{Value, json};

// Area tables: one `#[path = "bad_inputs/<area>.rs"] mod <area>;` line per file.
#[path = "bad_inputs/file_rows.rs"]
mod file_rows;
#[path = "bad_inputs/image_rows.rs"]
mod image_rows;
#[path = "bad_inputs/input_rows.rs"]
mod input_rows;
#[path = "bad_inputs/load_rows.rs"]
mod load_rows;
#[path = "bad_inputs/spec_rows.rs"]
mod spec_rows;
#[path = "bad_inputs/text_rows.rs"]
mod text_rows;

// ---------------------------------------------------------------------------------------
// The table's types
// ---------------------------------------------------------------------------------------

/// One row of the table.
struct Case {
    /// Unique, snake_case; printed when the row fails.
    name: &'static str,
    /// What the row needs besides the repository itself.
    needs: Needs,
    /// Builds the bad situation in the fixture's temporary tree.
    setup: fn(&Fixture),
    /// Runs the real API on it; `Ok` means the bad input was accepted.
    action: fn(&Fixture) -> Outcome,
    /// The exact code expected.
    code: ErrorCode,
    /// Substrings the message must contain: the culprit and the advice.
    says: &'static [&'static str],
}

/// A setup asset a row needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Nothing beyond the repository.
    Nothing,
    /// The ONNX Runtime library from `cargo xtask setup`.
    OnnxRuntime,
    /// The tiny CLIP model from `cargo xtask setup` (`.dp-assets/models/tiny-clip`).
    TinyClip,
    /// The tiny text models from `cargo xtask setup` (`tiny-xlmr-e5`, `tiny-reranker`).
    TinyText,
}

/// How the API refused.
#[derive(Debug)]
struct Refusal {
    /// Every code reported (one for a `ModelError`, one per diagnostic).
    codes: Vec<ErrorCode>,
    /// What a user reads: the message, or each diagnostic as `dp validate` prints it.
    text: String,
}

type Outcome = Result<(), Refusal>;

impl From<ModelError> for Refusal {
    fn from(err: ModelError) -> Self {
        Self {
            codes: vec![err.error_code],
            text: err.message,
        }
    }
}

impl From<Vec<Diagnostic>> for Refusal {
    fn from(diagnostics: Vec<Diagnostic>) -> Self {
        Self {
            codes: diagnostics.iter().map(|d| d.error_code).collect(),
            text: diagnostics
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The fixture: a temporary tree with a catalog, a models root and a place outside it
// ---------------------------------------------------------------------------------------

struct Fixture {
    dir: tempfile::TempDir,
    onnx_library: Option<PathBuf>,
}

/// The demo model every candle row copies and then breaks.
const TINY_BERT: &str = "tiny-bert";
/// A digest no file has.
const OTHER_DIGEST: &str =
    "sha256:abababababababababababababababababababababababababababababababab";
/// The Triton model name the fake server serves.
const FAKE_MODEL: &str = "affine";

impl Fixture {
    fn new(onnx_library: Option<PathBuf>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["catalog", "models", "outside"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Self { dir, onnx_library }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    fn catalog_dir(&self) -> PathBuf {
        self.root().join("catalog")
    }

    /// `${DP_MODELS_ROOT}` of every row.
    fn models(&self) -> PathBuf {
        self.root().join("models")
    }

    /// A folder beside the models root, not under it.
    fn outside(&self) -> PathBuf {
        self.root().join("outside")
    }

    fn model_file(&self, relative: &str) -> PathBuf {
        self.models().join(relative)
    }

    /// Writes `bytes` at `relative` under the temporary tree, creating folders.
    fn write(&self, relative: impl AsRef<Path>, bytes: impl AsRef<[u8]>) {
        let path = self.root().join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    /// Writes a spec file `catalog/<role>/<file>` holding `text`.
    fn spec_file(&self, role: &str, file: &str, text: &str) {
        self.write(format!("catalog/{role}/{file}"), text);
    }

    /// Writes `spec` as `catalog/<role>/<model_name>.json`.
    fn spec_json(&self, spec: &Value) {
        let role = spec["role"].as_str().unwrap();
        let name = spec["model_name"].as_str().unwrap();
        self.spec_file(
            role,
            &format!("{name}.json"),
            &serde_json::to_string_pretty(spec).unwrap(),
        );
    }

    /// Copies the demo tiny BERT into `models/tiny-bert/`.
    fn copy_tiny_bert(&self) {
        let from = dp_tests::workspace_root().join("crates/dp-cli/demo/models/tiny-bert");
        dp_tests::copy_dir(&from, &self.model_file(TINY_BERT)).unwrap();
    }

    /// The demo spec of the tiny BERT, as JSON.
    fn tiny_bert_spec() -> Value {
        let path = dp_tests::workspace_root()
            .join("crates/dp-cli/demo/catalog/text_embedding/tiny-bert.yaml");
        SourceDocument::read(&path, ParseLimits::default())
            .unwrap()
            .value
    }

    /// Writes the tiny BERT's spec with `weights_digest` pinned to the weights as they are
    /// now (so a row reaches the parser of a broken file its operator pinned).
    fn pin_tiny_bert_as_is(&self) {
        let mut spec = Self::tiny_bert_spec();
        spec["weights_digest"] = self.digest_of("tiny-bert/model.safetensors").into();
        self.spec_json(&spec);
    }

    /// The tiny BERT copied, with its committed spec.
    fn tiny_bert(&self) {
        self.copy_tiny_bert();
        self.spec_json(&Self::tiny_bert_spec());
    }

    /// The SHA-256 digest of a file under the models root.
    fn digest_of(&self, relative: &str) -> String {
        let bytes = fs::read(self.model_file(relative)).unwrap();
        digest_bytes(DigestAlgorithm::Sha256, &bytes).to_string()
    }

    /// The catalog, or its diagnostics.
    fn catalog(&self) -> Result<Catalog, Refusal> {
        Ok(Catalog::load(&self.catalog_dir())?)
    }

    /// A manager over the catalog and models root with the real providers (ONNX Runtime
    /// when its library is set up), no reaper, no embedding cache.
    fn manager(&self) -> Result<ModelManager, Refusal> {
        let mut builder = ModelManager::builder(self.catalog()?, self.models())
            .provider(Arc::new(CandleProvider::new()))
            .provider(Arc::new(TritonProvider::new(
                TritonProviderConfig::default(),
            )))
            .embedding_cache(EmbeddingCacheConfig::disabled())
            .reaper(false);
        if let Some(library) = &self.onnx_library {
            builder = builder.provider(Arc::new(OnnxProvider::new(OnnxProviderConfig {
                library_path: Some(library.clone()),
            })));
        }
        Ok(builder.build()?)
    }
}

// ---------------------------------------------------------------------------------------
// "No file changed": a snapshot of the whole temporary tree
// ---------------------------------------------------------------------------------------

/// What one path of the tree is.
#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File {
        len: u64,
        mtime: SystemTime,
        sha256: String,
    },
    Link(PathBuf),
    /// A FIFO, socket or device: never read (reading a FIFO would block).
    Special {
        mtime: SystemTime,
    },
}

/// Every path under `root` (links not followed), with what it is.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let node = if meta.file_type().is_symlink() {
                Node::Link(fs::read_link(&path).unwrap())
            } else if meta.is_dir() {
                pending.push(path.clone());
                Node::Dir
            } else if !meta.is_file() {
                Node::Special {
                    mtime: meta.modified().unwrap(),
                }
            } else {
                Node::File {
                    len: meta.len(),
                    mtime: meta.modified().unwrap(),
                    sha256: digest_bytes(DigestAlgorithm::Sha256, &fs::read(&path).unwrap())
                        .to_string(),
                }
            };
            out.insert(path.strip_prefix(root).unwrap().to_path_buf(), node);
        }
    }
    out
}

/// The differences between two snapshots, one line each.
fn changes(before: &BTreeMap<PathBuf, Node>, after: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, node) in before {
        match after.get(path) {
            None => out.push(format!("removed {}", path.display())),
            Some(now) if now != node => {
                out.push(format!("changed {}: {node:?} -> {now:?}", path.display()));
            }
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("created {}", path.display()));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Safetensors surgery
// ---------------------------------------------------------------------------------------

/// Rewrites the JSON header of a safetensors file, keeping its data bytes.
fn edit_safetensors_header(path: &Path, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    let bytes = fs::read(path).unwrap();
    let len = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    let mut header: serde_json::Map<String, Value> =
        serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    edit(&mut header);
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(&bytes[8 + len..]);
    fs::write(path, out).unwrap();
}

/// The tiny BERT's word embedding table.
const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

fn tensor_entry<'a>(
    header: &'a mut serde_json::Map<String, Value>,
    name: &str,
) -> &'a mut serde_json::Map<String, Value> {
    header.get_mut(name).unwrap().as_object_mut().unwrap()
}

// ---------------------------------------------------------------------------------------
// Actions shared by many rows
// ---------------------------------------------------------------------------------------

fn load_catalog(fx: &Fixture) -> Outcome {
    fx.catalog().map(drop)
}

fn embed_tiny_bert(fx: &Fixture) -> Outcome {
    fx.manager()?.embed(TINY_BERT, &["a sentence"])?;
    Ok(())
}

fn get_model(fx: &Fixture, name: &str) -> Outcome {
    drop(fx.manager()?.get(name)?);
    Ok(())
}

fn infer(fx: &Fixture, model: &str, inputs: NamedTensors) -> Outcome {
    let response = fx.manager()?.task(TaskRequest::new(
        TaskType::Infer,
        model,
        Some(TaskData::Tensors(inputs)),
    ))?;
    assert!(matches!(response.output, TaskOutput::Tensors(_)));
    Ok(())
}

/// Text-encoder inputs of shape `[1, 3]` (with `attention_mask` of `mask_shape`).
fn encoder_inputs(ids: TensorData, mask_shape: Vec<usize>) -> NamedTensors {
    let mask_len = mask_shape.iter().product();
    NamedTensors::from([
        (
            "input_ids".to_owned(),
            Tensor::new(vec![1, 3], ids).unwrap(),
        ),
        (
            "attention_mask".to_owned(),
            Tensor::new(mask_shape, TensorData::Int64(vec![1; mask_len])).unwrap(),
        ),
        (
            "token_type_ids".to_owned(),
            Tensor::new(vec![1, 3], TensorData::Int64(vec![0; 3])).unwrap(),
        ),
    ])
}

/// `x`: fp32 `[1, 3]`, the input of the `affine` models (ONNX and fake Triton).
fn affine_inputs() -> NamedTensors {
    NamedTensors::from([(
        "x".to_owned(),
        Tensor::new(vec![1, 3], TensorData::Fp32(vec![1.0, 2.0, 3.0])).unwrap(),
    )])
}

/// A minimal valid spec for `name` (an in-process candle model) with `extra` YAML lines.
fn small_spec_yaml(name: &str, extra: &str) -> String {
    format!(
        "model_name: {name}\nmodel_version: \"1\"\nrole: text_embedding\nruntime: inprocess\n\
         engine: candle\nlocal_artifacts: [{name}/model.safetensors]\n\
         weights_digest: {OTHER_DIGEST}\n{extra}"
    )
}

/// The spec of the ONNX `affine` model (`x` fp32 [-1, 3] → `y` fp32 [-1, 2]) at
/// `artifact`, pinned to the file as it is now.
fn onnx_spec(fx: &Fixture, name: &str, artifact: &str) -> Value {
    json!({
        "model_name": name,
        "model_version": "1",
        "role": "regression",
        "runtime": "inprocess",
        "engine": "onnx",
        "device_policy": "cpu",
        "local_artifacts": [artifact],
        "weights_digest": fx.digest_of(artifact),
        "input_schema": [{ "name": "x", "dtype": "fp32", "shape": [-1, 3] }],
        "output_schema": [{ "name": "y", "dtype": "fp32", "shape": [-1, 2] }],
        "onnx": { "intra_op_threads": 1 }
    })
}

/// The spec of the `affine` model whose weights are external data (`ext/weights.bin`),
/// both files listed: only listed (verified) files reach ONNX Runtime.
fn onnx_external_spec(fx: &Fixture) -> Value {
    let mut spec = onnx_spec(fx, "ext", "ext/model.onnx");
    spec["local_artifacts"] = json!(["ext/model.onnx", "ext/weights.bin"]);
    spec
}

/// The top-level fields of a protobuf message as `(field number, bytes of the whole
/// field)`; varint and length-delimited wire types only (all a `ModelProto` uses).
fn protobuf_fields(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = bytes.split_first().unwrap();
            *bytes = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let key = varint(&mut bytes);
        match key & 7 {
            0 => drop(varint(&mut bytes)),
            2 => {
                let len = usize::try_from(varint(&mut bytes)).unwrap();
                bytes = &bytes[len..];
            }
            other => panic!("wire type {other} in an ONNX fixture"),
        }
        out.push((key >> 3, start[..start.len() - bytes.len()].to_vec()));
    }
    out
}

/// Copies an ONNX fixture of `dp-provider-onnx` under the models root.
fn copy_onnx_fixture(fx: &Fixture, from: &str, to: &str) {
    let source = dp_tests::workspace_root()
        .join("crates/dp-provider-onnx/tests/data")
        .join(from);
    if source.is_dir() {
        dp_tests::copy_dir(&source, &fx.model_file(to)).unwrap();
    } else {
        fx.write(Path::new("models").join(to), fs::read(source).unwrap());
    }
}

// ---------------------------------------------------------------------------------------
// The fake Triton server (fault injection; see the module comment)
// ---------------------------------------------------------------------------------------

/// What the fake server sends for one request.
enum Answer {
    /// A complete reply with this status and JSON (or garbage) body.
    Body(u16, String),
    /// These exact bytes, then the connection is closed.
    Raw(Vec<u8>),
    /// The status line and headers promise a body, which then trickles one byte every
    /// 50 ms and never ends (a slow-loris server).
    Trickle,
}

/// The replies of a healthy Triton serving `affine` (`x` FP32 [-1,3] → `y` FP32 [-1,2]),
/// with `infer` answering inference requests.
fn healthy(path: &str, infer: fn() -> Answer) -> Answer {
    let base = format!("/v2/models/{FAKE_MODEL}");
    if path == format!("{base}/ready") {
        Answer::Body(200, String::new())
    } else if path == format!("{base}/config") {
        Answer::Body(
            200,
            json!({"name": FAKE_MODEL,
                   "parameters": {"weights_digest": {"string_value": OTHER_DIGEST}}})
            .to_string(),
        )
    } else if path == base {
        Answer::Body(
            200,
            json!({"name": FAKE_MODEL, "versions": ["1"], "platform": "python",
                   "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
                   "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]})
            .to_string(),
        )
    } else if path == format!("{base}/infer") {
        infer()
    } else {
        Answer::Body(404, json!({"error": "not found"}).to_string())
    }
}

/// Starts the fake server on a free loopback port; `route` answers each request by path.
/// The server's threads are detached: they end with the test process.
fn fake_triton(route: fn(&str) -> Answer) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || serve_connection(stream, route));
        }
    });
    port
}

/// Serves requests on one keep-alive connection until the client goes away.
fn serve_connection(mut stream: TcpStream, route: fn(&str) -> Answer) {
    loop {
        let Some(path) = read_request(&mut stream) else {
            return;
        };
        let keep_going = match route(&path) {
            Answer::Body(status, body) => {
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes()).is_ok()
                    && stream.write_all(body.as_bytes()).is_ok()
            }
            Answer::Raw(bytes) => {
                let _ = stream.write_all(&bytes);
                false
            }
            Answer::Trickle => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                            Content-Length: 1000000\r\n\r\n{\"outputs\": [";
                let started = Instant::now();
                let mut ok = stream.write_all(head.as_bytes()).is_ok();
                // Until the client hangs up; the bound only keeps a broken client from
                // holding the thread forever.
                while ok && started.elapsed() < Duration::from_secs(30) {
                    thread::sleep(Duration::from_millis(50));
                    ok = stream.write_all(b" ").and_then(|()| stream.flush()).is_ok();
                }
                false
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body) and returns its path.
fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0_u8; length];
    stream.read_exact(&mut body).ok()?;
    head.split_whitespace().nth(1).map(str::to_owned)
}

/// Writes the spec of a Triton model served by the fake server on `port`, with a 300 ms
/// request timeout.
fn fake_triton_spec(fx: &Fixture, port: u16) {
    fx.spec_json(&json!({
        "model_name": "remote-affine",
        "model_version": "1",
        "role": "regression",
        "runtime": "triton",
        "engine": "onnx",
        "weights_digest": OTHER_DIGEST,
        "input_schema": [{ "name": "x", "dtype": "fp32", "shape": [-1, 3] }],
        "output_schema": [{ "name": "y", "dtype": "fp32", "shape": [-1, 2] }],
        "triton": {
            "endpoint": format!("http://127.0.0.1:{port}"),
            "model_name": FAKE_MODEL,
            "connect_timeout_ms": 300,
            "request_timeout_ms": 300
        }
    }));
}

fn infer_remote(fx: &Fixture) -> Outcome {
    infer(fx, "remote-affine", affine_inputs())
}

// ---------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------

/// Every row: the base table, then the rows of each area (one file each under
/// `tests/bad_inputs/`).
fn cases() -> Vec<Case> {
    let mut cases = base_cases();
    // Area rows: one `cases.extend(<area>::rows());` line per file in tests/bad_inputs/.
    cases.extend(spec_rows::rows());
    cases.extend(file_rows::rows());
    cases.extend(input_rows::rows());
    cases.extend(load_rows::rows());
    cases.extend(image_rows::rows());
    cases.extend(text_rows::rows());
    cases
}

#[allow(clippy::too_many_lines, reason = "the table is one list of rows")]
fn base_cases() -> Vec<Case> {
    use ErrorCode as C;
    vec![
        // ---- Artifact paths ------------------------------------------------------------
        Case {
            name: "artifact_path_with_dotdot",
            needs: Needs::Nothing,
            setup: |fx| {
                let mut spec = Fixture::tiny_bert_spec();
                spec["local_artifacts"][0] = "../outside/model.safetensors".into();
                fx.spec_json(&spec);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &[
                "/local_artifacts/0",
                "../outside/model.safetensors",
                "climbs out",
                "relative to DP_MODELS_ROOT",
            ],
        },
        Case {
            name: "absolute_artifact_path",
            needs: Needs::Nothing,
            setup: |fx| {
                let mut spec = Fixture::tiny_bert_spec();
                spec["local_artifacts"][0] = "/etc/passwd".into();
                fx.spec_json(&spec);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/etc/passwd", "is absolute", "relative to DP_MODELS_ROOT"],
        },
        Case {
            name: "file_url_artifact",
            needs: Needs::Nothing,
            setup: |fx| {
                let mut spec = Fixture::tiny_bert_spec();
                spec["local_artifacts"][0] = "file:///etc/passwd".into();
                fx.spec_json(&spec);
            },
            action: load_catalog,
            code: C::NetworkForbidden,
            says: &["file:///etc/passwd", "never downloads", "DP_MODELS_ROOT"],
        },
        Case {
            name: "http_url_artifact",
            needs: Needs::Nothing,
            setup: |fx| {
                let mut spec = Fixture::tiny_bert_spec();
                spec["local_artifacts"][0] = "http://example.com/model.safetensors".into();
                fx.spec_json(&spec);
            },
            action: load_catalog,
            code: C::NetworkForbidden,
            says: &["http://example.com/model.safetensors", "never downloads"],
        },
        Case {
            name: "s3_url_artifact",
            needs: Needs::Nothing,
            setup: |fx| {
                let mut spec = Fixture::tiny_bert_spec();
                spec["local_artifacts"][0] = "s3://bucket/model.safetensors".into();
                fx.spec_json(&spec);
            },
            action: load_catalog,
            code: C::NetworkForbidden,
            says: &["s3://bucket/model.safetensors", "never downloads"],
        },
        Case {
            // A hand-built catalog skips the spec rules: the manager must still refuse.
            name: "url_artifact_in_a_hand_built_catalog",
            needs: Needs::Nothing,
            setup: |_| {},
            action: |fx| {
                let mut value = Fixture::tiny_bert_spec();
                value["local_artifacts"][0] = "https://example.com/w.safetensors".into();
                let text = serde_json::to_string(&value).unwrap();
                let document = SourceDocument::parse_str(
                    fx.catalog_dir().join("text_embedding/tiny-bert.json"),
                    &text,
                    dp_spec::SourceFormat::Json,
                )
                .unwrap();
                let entry = dp_spec::CatalogEntry {
                    spec: serde_json::from_value(value).unwrap(),
                    document,
                    role_dir: "text_embedding".into(),
                };
                let catalog = Catalog::from_entries(&fx.catalog_dir(), vec![entry])?;
                ModelManager::builder(catalog, fx.models())
                    .provider(Arc::new(CandleProvider::new()))
                    .reaper(false)
                    .build()?;
                Ok(())
            },
            code: C::NetworkForbidden,
            says: &[
                "https://example.com/w.safetensors",
                "never downloads",
                "DP_MODELS_ROOT",
            ],
        },
        Case {
            name: "symlink_in_models_root_pointing_outside",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                // The same bytes, but outside the models root: the digest alone would pass.
                let weights = fx.model_file("tiny-bert/model.safetensors");
                let outside = fx.outside().join("model.safetensors");
                fs::rename(&weights, &outside).unwrap();
                std::os::unix::fs::symlink(&outside, &weights).unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsDigestMismatch,
            says: &["tiny-bert/model.safetensors", "outside"],
        },
        Case {
            name: "model_folder_symlinked_out_of_the_models_root",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let folder = fx.model_file("tiny-bert");
                let outside = fx.outside().join("tiny-bert");
                fs::rename(&folder, &outside).unwrap();
                std::os::unix::fs::symlink(&outside, &folder).unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsDigestMismatch,
            says: &[
                "tiny-bert/model.safetensors",
                "outside the models root",
                "instead of linking",
            ],
        },
        Case {
            name: "dangling_symlink_as_weights",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let weights = fx.model_file("tiny-bert/model.safetensors");
                fs::remove_file(&weights).unwrap();
                std::os::unix::fs::symlink(fx.outside().join("gone.safetensors"), &weights)
                    .unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsMissing,
            says: &["tiny-bert/model.safetensors", "put the files there"],
        },
        Case {
            // Opening a FIFO for reading blocks until a writer comes: it must be refused
            // before anything opens it.
            name: "weights_file_is_a_fifo",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let weights = fx.model_file("tiny-bert/model.safetensors");
                fs::remove_file(&weights).unwrap();
                let made = std::process::Command::new("mkfifo")
                    .arg(&weights)
                    .status()
                    .unwrap();
                assert!(made.success(), "mkfifo failed");
            },
            action: embed_tiny_bert,
            code: C::WeightsDigestMismatch,
            says: &[
                "tiny-bert/model.safetensors",
                "neither a regular file",
                "remove it",
            ],
        },
        // ---- Missing and altered artifacts ----------------------------------------------
        Case {
            name: "missing_weights_file",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                fs::remove_file(fx.model_file("tiny-bert/model.safetensors")).unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsMissing,
            says: &[
                "tiny-bert/model.safetensors",
                "missing",
                "put the files there",
            ],
        },
        Case {
            name: "missing_tokenizer_json",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                fs::remove_file(fx.model_file("tiny-bert/tokenizer.json")).unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsMissing,
            says: &["tiny-bert/tokenizer.json"],
        },
        Case {
            name: "missing_config_json",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                fs::remove_file(fx.model_file("tiny-bert/config.json")).unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsMissing,
            says: &["tiny-bert/config.json"],
        },
        Case {
            name: "digest_mismatch_one_byte_changed",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let path = fx.model_file("tiny-bert/model.safetensors");
                let mut bytes = fs::read(&path).unwrap();
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01; // one bit of the last weight
                fs::write(path, bytes).unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsDigestMismatch,
            says: &["tiny-bert/model.safetensors", "weights_digest"],
        },
        // ---- Digests in specs ----------------------------------------------------------
        Case {
            name: "unknown_digest_algorithm",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.spec_file(
                    "text_embedding",
                    "m.yaml",
                    &small_spec_yaml("m", "")
                        .replace(OTHER_DIGEST, "md5:0123456789abcdef0123456789abcdef"),
                );
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/weights_digest", "md5", "sha256"],
        },
        Case {
            name: "short_digest",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.spec_file(
                    "text_embedding",
                    "m.yaml",
                    &small_spec_yaml("m", "").replace(OTHER_DIGEST, "sha256:abcd"),
                );
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &[
                "/weights_digest",
                "64 lowercase hexadecimal digits",
                "\"abcd\"",
            ],
        },
        Case {
            name: "non_hex_digest",
            needs: Needs::Nothing,
            setup: |fx| {
                let bad = format!("sha256:{}", "zz".repeat(32));
                fx.spec_file(
                    "text_embedding",
                    "m.yaml",
                    &small_spec_yaml("m", "").replace(OTHER_DIGEST, &bad),
                );
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/weights_digest", "64 lowercase hexadecimal digits", "zzzz"],
        },
        Case {
            name: "digest_parsed_directly",
            needs: Needs::Nothing,
            setup: |_| {},
            action: |_| {
                let parsed = "blake2b:00ff".parse::<dp_digest::WeightsDigest>();
                parsed.map(drop).map_err(|e| ModelError::from(e).into())
            },
            code: C::InvalidSpec,
            says: &["blake2b", "sha256 and blake3"],
        },
        // ---- Safetensors ---------------------------------------------------------------
        Case {
            name: "truncated_safetensors",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                let path = fx.model_file("tiny-bert/model.safetensors");
                let bytes = fs::read(&path).unwrap();
                fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/model.safetensors", "truncated", "replace it"],
        },
        Case {
            name: "safetensors_header_claims_an_enormous_length",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                let path = fx.model_file("tiny-bert/model.safetensors");
                let mut bytes = fs::read(&path).unwrap();
                bytes[..8].copy_from_slice(&(1_u64 << 62).to_le_bytes());
                fs::write(&path, bytes).unwrap();
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/model.safetensors", "100 MB", "replace it"],
        },
        Case {
            name: "safetensors_header_length_past_the_end",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                let path = fx.model_file("tiny-bert/model.safetensors");
                let mut bytes = fs::read(&path).unwrap();
                let past = bytes.len() as u64 + 10;
                bytes[..8].copy_from_slice(&past.to_le_bytes());
                fs::write(&path, bytes).unwrap();
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/model.safetensors", "past the end", "replace it"],
        },
        Case {
            name: "safetensors_overlapping_tensor_offsets",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                edit_safetensors_header(&fx.model_file("tiny-bert/model.safetensors"), |h| {
                    // Starts inside the previous tensor (8448..8704 is token_type_embeddings).
                    tensor_entry(h, WORD_EMBEDDINGS)["data_offsets"] = json!([8600, 25368]);
                });
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/model.safetensors", "replace it"],
        },
        Case {
            name: "safetensors_tensor_offsets_out_of_range",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                edit_safetensors_header(&fx.model_file("tiny-bert/model.safetensors"), |h| {
                    let last = "encoder.layer.1.output.dense.weight";
                    tensor_entry(h, last)["data_offsets"] = json!([85632, 1_000_000_000_u64]);
                });
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/model.safetensors", "replace it"],
        },
        Case {
            name: "safetensors_wrong_dtype",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                edit_safetensors_header(&fx.model_file("tiny-bert/model.safetensors"), |h| {
                    // Same size per element, so the file stays self-consistent.
                    tensor_entry(h, WORD_EMBEDDINGS)["dtype"] = "I32".into();
                });
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &[WORD_EMBEDDINGS, "dtype", "F32", "replace it"],
        },
        Case {
            name: "safetensors_wrong_shape",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                edit_safetensors_header(&fx.model_file("tiny-bert/model.safetensors"), |h| {
                    // Same element count, transposed.
                    tensor_entry(h, WORD_EMBEDDINGS)["shape"] = json!([32, 131]);
                });
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &[WORD_EMBEDDINGS, "[32, 131]", "config.json", "replace it"],
        },
        Case {
            name: "safetensors_missing_tensor",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                edit_safetensors_header(&fx.model_file("tiny-bert/model.safetensors"), |h| {
                    // Renamed: the file stays valid, the model lacks a layer norm.
                    let entry = h.remove("embeddings.LayerNorm.bias").unwrap();
                    h.insert("embeddings.LayerNorm.unused".into(), entry);
                });
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["embeddings.LayerNorm.bias", "missing", "replace it"],
        },
        Case {
            name: "empty_weights_file",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                fs::write(fx.model_file("tiny-bert/model.safetensors"), b"").unwrap();
                fx.pin_tiny_bert_as_is();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/model.safetensors", "empty", "replace it"],
        },
        // ---- Other model files ---------------------------------------------------------
        Case {
            name: "config_json_not_json",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                fs::write(
                    fx.model_file("tiny-bert/config.json"),
                    b"{\"hidden_size\": ",
                )
                .unwrap();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/config.json", "not a model config", "replace it"],
        },
        Case {
            name: "config_json_absurd_size",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let path = fx.model_file("tiny-bert/config.json");
                let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
                config["hidden_size"] = json!(1_u64 << 40);
                fs::write(path, config.to_string()).unwrap();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/config.json", "hidden_size", "out of range"],
        },
        Case {
            name: "invalid_tokenizer_json",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                fs::write(
                    fx.model_file("tiny-bert/tokenizer.json"),
                    br#"{"version": "1.0", "model": {"type": "NoSuchModel"}}"#,
                )
                .unwrap();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &[
                "tiny-bert/tokenizer.json",
                "replace it with the model's tokenizer.json",
            ],
        },
        Case {
            name: "tokenizer_json_not_utf8",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                fs::write(fx.model_file("tiny-bert/tokenizer.json"), b"\xff\xfe{}").unwrap();
            },
            action: embed_tiny_bert,
            code: C::InvalidSpec,
            says: &["tiny-bert/tokenizer.json", "replace it"],
        },
        // ---- Spec and catalog files ----------------------------------------------------
        Case {
            name: "empty_spec_file",
            needs: Needs::Nothing,
            setup: |fx| fx.spec_file("text_embedding", "m.yaml", ""),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.yaml", "empty", "a spec is a mapping of fields"],
        },
        Case {
            name: "spec_file_not_utf8",
            needs: Needs::Nothing,
            setup: |fx| fx.write("catalog/text_embedding/m.yaml", b"model_name: \xff\xfe\n"),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.yaml", "not valid UTF-8", "save it as UTF-8"],
        },
        Case {
            name: "non_utf8_spec_file_name",
            needs: Needs::Nothing,
            setup: |fx| {
                let name = OsStr::from_bytes(b"m\xff.yaml");
                let path = fx.catalog_dir().join("text_embedding").join(name);
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(path, small_spec_yaml("m", "")).unwrap();
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/model_name", "name the file m.yaml"],
        },
        Case {
            name: "non_utf8_file_name_inside_a_model_folder",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                let name = OsStr::from_bytes(b"notes-\xff.txt");
                fs::write(fx.model_file("tiny-bert").join(name), b"x").unwrap();
            },
            action: |fx| {
                // The whole folder is the artifact, so every name in it is hashed.
                let artifacts = ["tiny-bert".to_owned()];
                let pin = OTHER_DIGEST.parse().unwrap();
                let report = verify_artifacts(
                    &fx.models(),
                    &artifacts,
                    Some(&pin),
                    None,
                    &VerifyOptions::default(),
                )
                .map_err(ModelError::from)?;
                let code = ErrorCode::of_verify_status(report.status());
                match code {
                    None => Ok(()),
                    Some(code) => Err(Refusal {
                        codes: vec![code],
                        text: report
                            .rejected
                            .iter()
                            .map(|r| r.problem.clone())
                            .collect::<Vec<_>>()
                            .join("\n"),
                    }),
                }
            },
            code: C::WeightsDigestMismatch,
            says: &["notes-", "rename"],
        },
        Case {
            name: "non_utf8_file_name_in_a_listed_folder_at_load",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                let name = OsStr::from_bytes(b"notes-\xff.txt");
                fs::write(fx.model_file("tiny-bert/1_Pooling").join(name), b"x").unwrap();
                // The pooling folder is listed whole, so the manager walks every name in it.
                let mut spec = Fixture::tiny_bert_spec();
                let artifacts = spec["local_artifacts"].as_array_mut().unwrap();
                for artifact in artifacts.iter_mut() {
                    if artifact == "tiny-bert/1_Pooling/config.json" {
                        *artifact = "tiny-bert/1_Pooling".into();
                    }
                }
                fx.spec_json(&spec);
            },
            action: embed_tiny_bert,
            code: C::WeightsDigestMismatch,
            says: &["tiny-bert/1_Pooling/notes-", "not valid UTF-8", "rename it"],
        },
        Case {
            name: "spec_file_is_a_symlink",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.write("outside/m.yaml", small_spec_yaml("m", ""));
                fs::create_dir_all(fx.catalog_dir().join("text_embedding")).unwrap();
                std::os::unix::fs::symlink(
                    fx.outside().join("m.yaml"),
                    fx.catalog_dir().join("text_embedding/m.yaml"),
                )
                .unwrap();
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.yaml", "symbolic links are not followed"],
        },
        Case {
            name: "yaml_alias_bomb",
            needs: Needs::Nothing,
            setup: |fx| {
                // "Billion laughs": 9 levels of 9 aliases = 9^9 nodes if expanded.
                let mut text = small_spec_yaml("m", "metadata:\n  a0: &a0 [lol]\n");
                for level in 1..=9 {
                    let prev = level - 1;
                    let refs = vec![format!("*a{prev}"); 9].join(", ");
                    let _ = writeln!(text, "  a{level}: &a{level} [{refs}]");
                }
                fx.spec_file("text_embedding", "m.yaml", &text);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.yaml", "alias bomb"],
        },
        Case {
            name: "deeply_nested_json",
            needs: Needs::Nothing,
            setup: |fx| {
                let depth = 100_000;
                let text = format!(
                    "{{\"model_name\": \"m\", \"metadata\": {{\"x\": {}{}}}}}",
                    "[".repeat(depth),
                    "]".repeat(depth)
                );
                fx.spec_file("text_embedding", "m.json", &text);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.json", "nest"],
        },
        Case {
            name: "deeply_nested_yaml",
            needs: Needs::Nothing,
            setup: |fx| {
                let depth = 100_000;
                let text = format!(
                    "{}metadata:\n  x: {}{}\n",
                    small_spec_yaml("m", ""),
                    "[".repeat(depth),
                    "]".repeat(depth)
                );
                fx.spec_file("text_embedding", "m.yaml", &text);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.yaml", "nest"],
        },
        Case {
            name: "duplicate_model_name",
            needs: Needs::Nothing,
            setup: |fx| {
                let text = small_spec_yaml("m", "roles: [text_embedding, reranking]\n");
                fx.spec_file("text_embedding", "m.yaml", &text);
                fx.spec_file("reranking", "m.yaml", &text);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/model_name", "\"m\" is already used by", "must be unique"],
        },
        Case {
            name: "duplicate_alias",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.spec_file(
                    "text_embedding",
                    "a.yaml",
                    &small_spec_yaml("a", "aliases: [shared]\n"),
                );
                fx.spec_file(
                    "text_embedding",
                    "b.yaml",
                    &small_spec_yaml("b", "aliases: [shared]\n"),
                );
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/aliases/0", "alias \"shared\" clashes", "must be unique"],
        },
        Case {
            name: "alias_equal_to_another_models_name",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.spec_file("text_embedding", "a.yaml", &small_spec_yaml("a", ""));
                fx.spec_file(
                    "text_embedding",
                    "b.yaml",
                    &small_spec_yaml("b", "aliases: [a]\n"),
                );
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &[
                "b.yaml",
                "alias \"a\" clashes with model \"a\"",
                "must be unique",
            ],
        },
        Case {
            name: "unknown_top_level_field",
            needs: Needs::Nothing,
            setup: |fx| {
                let text = small_spec_yaml("m", "wieghts_digest: sha256:00\n");
                fx.spec_file("text_embedding", "m.yaml", &text);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.yaml", "/wieghts_digest", "check its spelling"],
        },
        Case {
            name: "unknown_nested_field",
            needs: Needs::Nothing,
            setup: |fx| {
                let text = small_spec_yaml("m", "resource_requirements:\n  ram: 100\n");
                fx.spec_file("text_embedding", "m.yaml", &text);
            },
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["m.yaml", "/resource_requirements/ram", "check its spelling"],
        },
        Case {
            name: "malformed_lock_file",
            needs: Needs::Nothing,
            setup: |fx| fx.write("catalog/catalog.lock", "{\"version\": 1, \"models\": [tru"),
            action: |fx| {
                LockFile::read(&fx.catalog_dir().join("catalog.lock"))
                    .map(drop)
                    .map_err(|e| ModelError::from(e).into())
            },
            code: C::InvalidInput,
            says: &[
                "catalog.lock",
                "malformed",
                "restore it from version control",
            ],
        },
        Case {
            name: "unknown_model_name",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| get_model(fx, "tiny-bret"),
            code: C::ModelNotFound,
            says: &["tiny-bret", "dp list"],
        },
        // ---- Requests that do not fit the model ----------------------------------------
        Case {
            name: "input_ids_of_the_wrong_dtype",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| {
                let ids = TensorData::Fp32(vec![1.0, 2.0, 3.0]);
                infer(fx, TINY_BERT, encoder_inputs(ids, vec![1, 3]))
            },
            code: C::InvalidInput,
            says: &["input_ids", "must be int64"],
        },
        Case {
            name: "attention_mask_of_the_wrong_shape",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| {
                let ids = TensorData::Int64(vec![1, 2, 3]);
                infer(fx, TINY_BERT, encoder_inputs(ids, vec![3, 1]))
            },
            code: C::InvalidInput,
            says: &["attention_mask", "[3, 1]", "must match"],
        },
        // ---- ONNX (real ONNX Runtime) ---------------------------------------------------
        Case {
            name: "onnx_truncated",
            needs: Needs::OnnxRuntime,
            setup: |fx| {
                copy_onnx_fixture(fx, "affine.onnx", "affine/model.onnx");
                let path = fx.model_file("affine/model.onnx");
                let bytes = fs::read(&path).unwrap();
                fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
                fx.spec_json(&onnx_spec(fx, "affine", "affine/model.onnx"));
            },
            action: |fx| get_model(fx, "affine"),
            code: C::InvalidSpec,
            says: &["affine/model.onnx", "not a valid ONNX model", "replace it"],
        },
        Case {
            // Cut where a field ends, the file is still well-formed protobuf: only ONNX
            // Runtime can tell that the model lost its operator sets.
            name: "onnx_truncated_at_a_field_boundary",
            needs: Needs::OnnxRuntime,
            setup: |fx| {
                copy_onnx_fixture(fx, "affine.onnx", "affine/model.onnx");
                let path = fx.model_file("affine/model.onnx");
                let fields = protobuf_fields(&fs::read(&path).unwrap());
                // ModelProto.opset_import = 8 is the last field: keep what comes before it.
                assert_eq!(fields.last().map(|f| f.0), Some(8));
                let kept: Vec<u8> = fields[..fields.len() - 1]
                    .iter()
                    .flat_map(|(_, bytes)| bytes.clone())
                    .collect();
                fs::write(&path, kept).unwrap();
                fx.spec_json(&onnx_spec(fx, "affine", "affine/model.onnx"));
            },
            action: |fx| get_model(fx, "affine"),
            code: C::InvalidSpec,
            says: &["affine/model.onnx", "replace it"],
        },
        Case {
            name: "onnx_external_data_outside_its_folder",
            needs: Needs::OnnxRuntime,
            setup: |fx| {
                copy_onnx_fixture(fx, "external_outside", "ext");
                // What `../outside.bin` would reach, were it followed.
                fx.write("models/outside.bin", [0_u8; 32]);
                fx.spec_json(&onnx_spec(fx, "ext", "ext/model.onnx"));
            },
            action: |fx| get_model(fx, "ext"),
            code: C::InvalidSpec,
            says: &[
                "ext/model.onnx",
                "'W'",
                "../outside.bin",
                "relative path inside",
            ],
        },
        Case {
            name: "onnx_external_data_symlinked_out_of_the_models_root",
            needs: Needs::OnnxRuntime,
            setup: |fx| {
                copy_onnx_fixture(fx, "external_inside", "ext");
                let data = fx.model_file("ext/weights.bin");
                let outside = fx.outside().join("weights.bin");
                fs::rename(&data, &outside).unwrap();
                std::os::unix::fs::symlink(&outside, &data).unwrap();
                fx.spec_json(&onnx_external_spec(fx));
            },
            action: |fx| get_model(fx, "ext"),
            // Refused while verifying, before ONNX Runtime (or anything) reads it.
            code: C::WeightsDigestMismatch,
            says: &[
                "ext/weights.bin",
                "outside/weights.bin",
                "instead of linking out of it",
            ],
        },
        Case {
            name: "onnx_spec_declares_the_wrong_shape",
            needs: Needs::OnnxRuntime,
            setup: |fx| {
                copy_onnx_fixture(fx, "affine.onnx", "affine/model.onnx");
                let mut spec = onnx_spec(fx, "affine", "affine/model.onnx");
                spec["input_schema"][0]["shape"] = json!([-1, 4]);
                fx.spec_json(&spec);
            },
            action: |fx| get_model(fx, "affine"),
            code: C::InvalidSpec,
            says: &["'x'", "[-1, 4]", "fix input_schema"],
        },
        // ---- Triton (fake server: fault injection) -------------------------------------
        Case {
            name: "triton_endpoint_not_on_loopback",
            needs: Needs::Nothing,
            setup: |fx| {
                fake_triton_spec(fx, 8000);
                let path = fx.catalog_dir().join("regression/remote-affine.json");
                let text = fs::read_to_string(&path).unwrap();
                fs::write(path, text.replace("127.0.0.1", "203.0.113.7")).unwrap();
            },
            action: infer_remote,
            code: C::NetworkForbidden,
            says: &["203.0.113.7", "allowed_triton_hosts"],
        },
        Case {
            name: "triton_metadata_is_garbage_json",
            needs: Needs::Nothing,
            setup: |fx| {
                let port = fake_triton(|path| {
                    if path == format!("/v2/models/{FAKE_MODEL}") {
                        Answer::Body(200, "<html>{\"name\": oops".into())
                    } else {
                        healthy(path, || unreachable!())
                    }
                });
                fake_triton_spec(fx, port);
            },
            action: infer_remote,
            code: C::TritonUnavailable,
            says: &["127.0.0.1", "unreadable response", "check that it runs"],
        },
        Case {
            name: "triton_infer_reply_is_garbage_json",
            needs: Needs::Nothing,
            setup: |fx| {
                let port = fake_triton(|path| {
                    healthy(path, || {
                        Answer::Body(200, "{\"outputs\": [{\"name\": \"y\", ".into())
                    })
                });
                fake_triton_spec(fx, port);
            },
            action: infer_remote,
            code: C::TritonUnavailable,
            says: &["127.0.0.1", "does not parse", "check that it runs"],
        },
        Case {
            name: "triton_reply_shape_does_not_match_its_data",
            needs: Needs::Nothing,
            setup: |fx| {
                let port = fake_triton(|path| {
                    healthy(path, || {
                        Answer::Body(
                            200,
                            json!({"outputs": [{"name": "y", "datatype": "FP32",
                                                "shape": [1, 5], "data": [1.0, 2.0]}]})
                            .to_string(),
                        )
                    })
                });
                fake_triton_spec(fx, port);
            },
            action: infer_remote,
            code: C::TritonUnavailable,
            says: &["\"y\"", "[1, 5]", "needs 5 elements"],
        },
        Case {
            name: "triton_reply_shape_contradicts_the_spec",
            needs: Needs::Nothing,
            setup: |fx| {
                let port = fake_triton(|path| {
                    healthy(path, || {
                        Answer::Body(
                            200,
                            json!({"outputs": [{"name": "y", "datatype": "FP32",
                                                "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]})
                            .to_string(),
                        )
                    })
                });
                fake_triton_spec(fx, port);
            },
            action: infer_remote,
            code: C::TritonUnavailable,
            says: &["\"y\"", "[1, 3]", "[-1, 2]"],
        },
        Case {
            name: "triton_huge_content_length",
            needs: Needs::Nothing,
            setup: |fx| {
                let port = fake_triton(|path| {
                    healthy(path, || {
                        Answer::Raw(
                            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                              Content-Length: 1099511627776\r\n\r\n{\"outputs\": []}"
                                .to_vec(),
                        )
                    })
                });
                fake_triton_spec(fx, port);
            },
            action: infer_remote,
            code: C::TritonUnavailable,
            says: &["1099511627776", "cap"],
        },
        Case {
            name: "triton_slow_loris_reply",
            needs: Needs::Nothing,
            setup: |fx| {
                let port = fake_triton(|path| healthy(path, || Answer::Trickle));
                fake_triton_spec(fx, port);
            },
            action: |fx| {
                let manager = fx.manager()?;
                // Loaded (fast), then the inference reply never ends: it must be cut at the
                // spec's request_timeout_ms (300 ms), give or take scheduling.
                let handle = manager.get("remote-affine")?;
                let started = Instant::now();
                let result = handle.infer(&affine_inputs());
                let took = started.elapsed();
                assert!(
                    took < Duration::from_secs(5),
                    "the provider waited {took:?} for a reply bounded at 300 ms"
                );
                result.map(drop).map_err(Refusal::from)
            },
            code: C::TritonUnavailable,
            says: &["127.0.0.1", "300 ms", "request_timeout_ms"],
        },
    ]
}

// ---------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------

/// Runs one row; `Err` says how it failed.
fn run(case: &Case, onnx_library: Option<PathBuf>) -> Result<(), String> {
    let fx = Fixture::new(onnx_library);
    (case.setup)(&fx);
    let before = snapshot(fx.root());
    let outcome = catch_unwind(AssertUnwindSafe(|| (case.action)(&fx)));
    let after = snapshot(fx.root());
    let mut problems = Vec::new();
    match outcome {
        Err(payload) => {
            let what = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            problems.push(format!("PANICKED: {what}"));
        }
        Ok(Ok(())) => problems.push("the bad input was ACCEPTED".to_owned()),
        Ok(Err(refusal)) => {
            if refusal.codes.is_empty() || refusal.codes.iter().any(|c| *c != case.code) {
                problems.push(format!(
                    "expected error_code {}, got {:?}",
                    case.code,
                    refusal.codes.iter().map(|c| c.as_str()).collect::<Vec<_>>()
                ));
            }
            if refusal.text.trim().is_empty() {
                problems.push("the message is empty".to_owned());
            }
            for needle in case.says {
                if !refusal.text.contains(needle) {
                    problems.push(format!("the message does not say {needle:?}"));
                }
            }
            if !problems.is_empty() {
                problems.push(format!("message: {}", refusal.text));
            }
        }
    }
    let changed = changes(&before, &after);
    if !changed.is_empty() {
        problems.push(format!("files changed: {}", changed.join("; ")));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n    "))
    }
}

#[test]
fn every_bad_input_is_refused_with_its_code_a_helpful_message_and_no_side_effect() {
    let test = "every_bad_input_is_refused_with_its_code_a_helpful_message_and_no_side_effect";
    let cases = cases();
    let onnx_library = if cases.iter().any(|c| c.needs == Needs::OnnxRuntime) {
        dp_tests::asset("onnxruntime/libonnxruntime.so", test)
    } else {
        None
    };
    let tiny_clip = if cases.iter().any(|c| c.needs == Needs::TinyClip) {
        dp_tests::asset("models/tiny-clip", test)
    } else {
        None
    };
    let tiny_text = if cases.iter().any(|c| c.needs == Needs::TinyText) {
        dp_tests::asset("models/tiny-xlmr-e5", test)
            .and_then(|_| dp_tests::asset("models/tiny-reranker", test))
    } else {
        None
    };
    let mut failures = Vec::new();
    for case in &cases {
        if case.needs == Needs::OnnxRuntime && onnx_library.is_none() {
            continue; // `asset` said why (and panicked in CI).
        }
        if case.needs == Needs::TinyClip && tiny_clip.is_none() {
            continue; // Likewise.
        }
        if case.needs == Needs::TinyText && tiny_text.is_none() {
            continue; // Likewise.
        }
        if let Err(why) = run(case, onnx_library.clone()) {
            failures.push(format!("{}:\n    {why}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The positive controls: each fixture WITHOUT its fault is accepted, so every refusal
/// above comes from the fault the row injects, not from a broken fixture.
#[test]
fn the_fixtures_without_their_faults_work() {
    let test = "the_fixtures_without_their_faults_work";
    // The tiny BERT as committed, and re-pinned as the broken-file rows re-pin it.
    for pin_as_is in [false, true] {
        let fx = Fixture::new(None);
        if pin_as_is {
            fx.copy_tiny_bert();
            fx.pin_tiny_bert_as_is();
        } else {
            fx.tiny_bert();
        }
        let out = fx
            .manager()
            .unwrap()
            .embed(TINY_BERT, &["a sentence"])
            .unwrap();
        assert_eq!(out.embeddings[0].len(), 32);
        // The header surgery itself, with no edit, leaves a loadable file.
        edit_safetensors_header(&fx.model_file("tiny-bert/model.safetensors"), |_| {});
        fx.pin_tiny_bert_as_is();
        fx.manager()
            .unwrap()
            .embed(TINY_BERT, &["a sentence"])
            .unwrap();
    }
    // The fake Triton answering a well-formed reply.
    let fx = Fixture::new(None);
    let port = fake_triton(|path| {
        healthy(path, || {
            Answer::Body(
                200,
                json!({"outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2],
                                    "data": [15.0, 16.0]}]})
                .to_string(),
            )
        })
    });
    fake_triton_spec(&fx, port);
    infer_remote(&fx).unwrap();
    // The ONNX model, and its external-data twin, on the real ONNX Runtime.
    if let Some(library) = dp_tests::asset("onnxruntime/libonnxruntime.so", test) {
        let fx = Fixture::new(Some(library));
        copy_onnx_fixture(&fx, "affine.onnx", "affine/model.onnx");
        fx.spec_json(&onnx_spec(&fx, "affine", "affine/model.onnx"));
        copy_onnx_fixture(&fx, "external_inside", "ext");
        fx.spec_json(&onnx_external_spec(&fx));
        infer(&fx, "affine", affine_inputs()).unwrap();
        infer(&fx, "ext", affine_inputs()).unwrap();
    }
}

/// The "no file changed" check itself notices every kind of change.
#[test]
fn the_snapshot_notices_every_kind_of_change() {
    let fx = Fixture::new(None);
    fx.write("models/a.bin", b"0123456789");
    fx.write("models/b.bin", b"b");
    std::os::unix::fs::symlink("a.bin", fx.model_file("link")).unwrap();
    let before = snapshot(fx.root());
    assert!(changes(&before, &snapshot(fx.root())).is_empty());

    // Same length, same mtime, other bytes: only the digest tells.
    let a = fx.model_file("a.bin");
    let mtime = fs::metadata(&a).unwrap().modified().unwrap();
    fs::write(&a, b"9876543210").unwrap();
    fs::File::options()
        .write(true)
        .open(&a)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let found = changes(&before, &snapshot(fx.root()));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("changed models/a.bin"), "{found:?}");
    assert_eq!(
        fs::metadata(&a).unwrap().modified().unwrap(),
        mtime,
        "the mtime was restored, so only the digest can tell"
    );

    let fx = Fixture::new(None);
    fx.write("models/a.bin", b"a");
    std::os::unix::fs::symlink("a.bin", fx.model_file("link")).unwrap();
    let before = snapshot(fx.root());
    fs::remove_file(fx.model_file("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", fx.model_file("link")).unwrap();
    fx.write("models/new.bin", b"");
    fs::remove_file(fx.model_file("a.bin")).unwrap();
    let found = changes(&before, &snapshot(fx.root()));
    for expected in [
        "changed models/link",
        "created models/new.bin",
        "removed models/a.bin",
    ] {
        assert!(
            found.iter().any(|c| c.starts_with(expected)),
            "{expected}: {found:?}"
        );
    }
}

#[test]
fn the_table_is_large_and_its_names_unique() {
    let cases = cases();
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    let mut names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "case names must be unique");
    for case in &cases {
        assert!(
            !case.says.is_empty(),
            "{}: says nothing to check",
            case.name
        );
    }
}
