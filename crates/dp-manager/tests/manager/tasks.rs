//! The task API, the embedding cache, health and the offline checks, driven by a provider
//! that counts the texts its model embeds (a real model cannot report that) and returns a
//! deterministic `last_hidden_state`: each token's vector is `[token id, 1]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dp_manager::{
    DigestHealth, EmbeddingCacheConfig, ManagerBuilder, ModelManager, TaskData, TaskOutput,
    TaskRequest, TaskType,
};
use dp_spec::{
    CudaDeviceInfo, ErrorCode, LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec,
    NamedTensors, ProviderHealth, ResolvedDevice, Tensor, TensorData,
};
use tempfile::TempDir;

use crate::common::catalog;

/// Lowercase, whitespace split, word-level vocabulary, `[CLS] … [SEP]`.
fn tokenizer_json() -> String {
    let special = |id: u32, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"), special(3, "[SEP]")],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3,
            "the": 4, "cat": 5, "sat": 6, "on": 7, "mat": 8}, "unk_token": "[UNK]"}
    })
    .to_string()
}

/// A syntactically valid digest that matches nothing.
const ZERO_DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// An embedder spec reading `<dir>/tokenizer.json` (pinned to [`ZERO_DIGEST`] unless
/// `extra` pins it).
fn embedder(name: &str, dir: &str, extra: &str) -> (String, String) {
    let pin = if extra.contains("weights_digest") {
        String::new()
    } else {
        format!("weights_digest: {ZERO_DIGEST}\n")
    };
    (
        format!("text_embedding/{name}.yaml"),
        format!(
            "model_name: {name}\nmodel_version: \"1\"\nrole: text_embedding\nruntime: inprocess\n\
             engine: candle\ndevice_policy: auto\nlocal_artifacts: [{dir}/tokenizer.json]\n\
             preprocess_preset: sentence_embedding\n\
             preprocess_params: {{ max_length: 16, pooling: mean, normalize: false }}\n{pin}{extra}"
        ),
    )
}

fn models_root(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
    dir
}

/// Counts loads and embedded rows.
#[derive(Default)]
struct Embedder {
    loads: AtomicUsize,
    rows: Arc<AtomicUsize>,
    /// `[batch, seq]` of every model call.
    shapes: Arc<std::sync::Mutex<Vec<[usize; 2]>>>,
    /// The device of every load.
    devices: std::sync::Mutex<Vec<ResolvedDevice>>,
    /// The device of every model call, and how many texts it embedded.
    calls_on: Arc<std::sync::Mutex<Vec<(ResolvedDevice, usize)>>>,
    /// How long each model call takes (to make concurrent calls overlap).
    call_time: Duration,
}

impl ModelProvider for Embedder {
    fn name(&self) -> &'static str {
        "embedder"
    }

    fn supports(&self, _spec: &ModelSpec) -> bool {
        true
    }

    fn validate_local_artifacts(
        &self,
        _: &ModelSpec,
        _: &dp_spec::VerifiedArtifacts,
    ) -> Result<(), ModelError> {
        Ok(())
    }

    // A double for a runtime that can use the GPUs of the inventory a test gives.
    fn runs_on_cuda(&self, _spec: &ModelSpec, _models_root: &Path) -> bool {
        true
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.devices.lock().expect("lock").push(request.device);
        Ok(Box::new(TokenEcho {
            rows: Arc::clone(&self.rows),
            shapes: Arc::clone(&self.shapes),
            device: request.device,
            calls_on: Arc::clone(&self.calls_on),
            call_time: self.call_time,
        }))
    }

    fn health(&self, spec: &ModelSpec, _: &Path) -> ProviderHealth {
        if spec.model_name.starts_with("no-runtime") {
            ProviderHealth::runtime_missing("libtest.so not found")
        } else {
            ProviderHealth::runtime_found()
        }
    }
}

struct TokenEcho {
    rows: Arc<AtomicUsize>,
    shapes: Arc<std::sync::Mutex<Vec<[usize; 2]>>>,
    device: ResolvedDevice,
    calls_on: Arc<std::sync::Mutex<Vec<(ResolvedDevice, usize)>>>,
    call_time: Duration,
}

impl LoadedModel for TokenEcho {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        let ids = inputs
            .get("input_ids")
            .ok_or_else(|| ModelError::new(ErrorCode::InvalidInput, "input_ids is required"))?;
        let [batch, seq] = *ids.shape() else {
            return Err(ModelError::new(ErrorCode::InvalidInput, "rank 2"));
        };
        let TensorData::Int64(ids) = ids.data() else {
            return Err(ModelError::new(ErrorCode::InvalidInput, "int64"));
        };
        self.rows.fetch_add(batch, Ordering::SeqCst);
        self.shapes.lock().expect("not poisoned").push([batch, seq]);
        self.calls_on
            .lock()
            .expect("not poisoned")
            .push((self.device, batch));
        std::thread::sleep(self.call_time);
        #[allow(clippy::cast_precision_loss)]
        let data = ids.iter().flat_map(|&id| [id as f32, 1.0]).collect();
        let hidden = Tensor::new(vec![batch, seq, 2], TensorData::Fp32(data))?;
        Ok(NamedTensors::from([(
            "last_hidden_state".to_owned(),
            hidden,
        )]))
    }
}

struct Setup {
    _specs: TempDir,
    root: TempDir,
    provider: Arc<Embedder>,
    manager: ModelManager,
}

fn setup_with(
    specs: &[(String, String)],
    configure: impl FnOnce(ManagerBuilder) -> ManagerBuilder,
) -> Setup {
    setup_provider(specs, Embedder::default(), configure)
}

fn setup_provider(
    specs: &[(String, String)],
    provider: Embedder,
    configure: impl FnOnce(ManagerBuilder) -> ManagerBuilder,
) -> Setup {
    let tokenizer = tokenizer_json();
    let root = models_root(&[
        ("emb/tokenizer.json", &tokenizer),
        ("broken/tokenizer.json", "{\"model\": 42}"),
    ]);
    let (specs_dir, catalog) = catalog(specs);
    let provider = Arc::new(provider);
    // The test provider reads no weights and the pins are placeholders: verification off.
    let builder = ModelManager::builder(catalog, root.path())
        .provider(Arc::clone(&provider) as Arc<dyn ModelProvider>)
        .verify_before_load(false)
        .reaper(false);
    let manager = configure(builder).build().expect("builds");
    Setup {
        _specs: specs_dir,
        root,
        provider,
        manager,
    }
}

fn setup(configure: impl FnOnce(ManagerBuilder) -> ManagerBuilder) -> Setup {
    setup_with(&[embedder("emb", "emb", "")], configure)
}

/// Mean of `[id, 1]` over `[CLS] words [SEP]`.
fn expected(ids: &[f32]) -> Vec<f32> {
    #[allow(clippy::cast_precision_loss)]
    let n = (ids.len() + 2) as f32;
    vec![(2.0 + 3.0 + ids.iter().sum::<f32>()) / n, 1.0]
}

#[test]
fn a_partly_cached_batch_embeds_only_the_misses_in_input_order() {
    let s = setup(|b| b);
    let first = s
        .manager
        .embed("emb", &["the cat", "mat", "the cat"])
        .expect("embeds");
    assert_eq!(
        first.embeddings,
        vec![
            expected(&[4.0, 5.0]),
            expected(&[8.0]),
            expected(&[4.0, 5.0])
        ]
    );
    assert_eq!(
        s.provider.rows.load(Ordering::SeqCst),
        2,
        "a repeated text is embedded once"
    );

    let second = s
        .manager
        .embed("emb", &["on", "the cat", "sat on", "mat"])
        .expect("embeds");
    assert_eq!(
        second.embeddings,
        vec![
            expected(&[7.0]),
            expected(&[4.0, 5.0]),
            expected(&[6.0, 7.0]),
            expected(&[8.0])
        ]
    );
    assert_eq!(
        s.provider.rows.load(Ordering::SeqCst),
        4,
        "only the two misses"
    );
    let cache = s.manager.status().embedding_cache;
    assert_eq!((cache.hits, cache.misses), (2, 3 + 2));
    assert_eq!(s.provider.loads.load(Ordering::SeqCst), 1);

    // The record names the model as resolved.
    assert_eq!(second.models_used.len(), 1);
    let used = &second.models_used[0];
    assert_eq!(used.model_name, "emb");
    assert_eq!(used.device.to_string(), "cpu", "auto without CUDA");
    assert_eq!(used.model_signature, second.model_signature);
    assert!(second.model_signature.contains("device=cpu"));
}

#[test]
fn a_disabled_cache_embeds_every_text_every_time() {
    let s = setup(|b| b.embedding_cache(EmbeddingCacheConfig::disabled()));
    for _ in 0..2 {
        s.manager.embed("emb", &["the cat", "mat"]).expect("embeds");
    }
    assert_eq!(s.provider.rows.load(Ordering::SeqCst), 4);
    let cache = s.manager.status().embedding_cache;
    assert!(!cache.enabled);
    assert_eq!((cache.entries, cache.hits), (0, 0));
}

/// The `emb` model with `extra` in its spec, without embedding cache: every text runs.
fn uncached_with(extra: &str) -> Setup {
    setup_with(&[embedder("emb", "emb", extra)], |b| {
        b.embedding_cache(EmbeddingCacheConfig::disabled())
    })
}

#[test]
fn batches_follow_max_batch_size() {
    let s = uncached_with("resource_requirements: { max_batch_size: 2 }\n");
    let out = s
        .manager
        .embed("emb", &["the", "cat", "sat", "on", "mat"])
        .expect("embeds");
    assert_eq!(out.embeddings.len(), 5);
    assert_eq!(out.embeddings[4], expected(&[8.0]));
}

#[test]
fn batches_follow_max_batch_tokens() {
    let s = uncached_with("resource_requirements: { max_batch_tokens: 12 }\n");
    // 3, 8, 3 and 4 tokens with [CLS] and [SEP], at most 12 padded tokens a call: the
    // three short texts together, the long one alone.
    let texts = ["mat", "the cat sat on the mat", "on", "the cat"];
    let out = s.manager.embed("emb", &texts).expect("embeds");
    assert_eq!(
        out.embeddings,
        vec![
            expected(&[8.0]),
            expected(&[4.0, 5.0, 6.0, 7.0, 4.0, 8.0]),
            expected(&[7.0]),
            expected(&[4.0, 5.0])
        ]
    );
    let shapes = s.provider.shapes.lock().expect("not poisoned").clone();
    assert!(
        shapes.iter().all(|[b, s]| b * s <= 12),
        "every call within the budget: {shapes:?}"
    );
    assert_eq!(shapes.iter().map(|[b, _]| b).sum::<usize>(), 4);
}

#[test]
fn a_cancelled_task_runs_nothing() {
    let s = setup(|b| b);
    let token = dp_manager::CancelToken::new();
    token.cancel();
    for task_type in [TaskType::Embedding, TaskType::Infer] {
        let data = match task_type {
            TaskType::Embedding => TaskData::Texts(vec!["the cat".to_owned()]),
            _ => TaskData::Tensors(NamedTensors::new()),
        };
        let request = TaskRequest {
            cancel: Some(token.clone()),
            ..TaskRequest::new(task_type, "emb", Some(data))
        };
        let err = s.manager.task(request).expect_err("cancelled");
        assert_eq!(err.error_code, ErrorCode::Cancelled, "{err}");
    }
    // Not even loaded.
    assert_eq!(s.provider.loads.load(Ordering::SeqCst), 0);
    assert_eq!(s.provider.rows.load(Ordering::SeqCst), 0);
    // A token not cancelled changes nothing.
    let request = TaskRequest {
        cancel: Some(dp_manager::CancelToken::new()),
        ..TaskRequest::new(
            TaskType::Embedding,
            "emb",
            Some(TaskData::Texts(vec!["mat".to_owned()])),
        )
    };
    let TaskOutput::Embeddings(rows) = s.manager.task(request).expect("embeds").output else {
        panic!("embeddings");
    };
    assert_eq!(rows, vec![expected(&[8.0])]);
}

#[test]
fn the_num_workers_option_sets_the_calls_a_queue_runs_at_once() {
    let s = setup(|b| b);
    let task = |workers: serde_json::Value| {
        let request = TaskRequest {
            options: BTreeMap::from([("num_workers".to_owned(), workers)]),
            ..TaskRequest::new(
                TaskType::Embedding,
                "emb",
                Some(TaskData::Texts(vec!["the cat".to_owned()])),
            )
        };
        s.manager.task(request)
    };
    let TaskOutput::Embeddings(rows) = task(serde_json::json!(3)).expect("embeds").output else {
        panic!("embeddings");
    };
    assert_eq!(rows, vec![expected(&[4.0, 5.0])]);
    let queues = s.manager.status().batching;
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].workers, 3, "the spec sets none: the option's");
    for bad in [
        serde_json::json!(0),
        serde_json::json!(65),
        serde_json::json!("2"),
    ] {
        let err = task(bad.clone()).expect_err("refused");
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{bad}: {err}");
        assert!(err.message.contains("1 to 64"), "{err}");
    }
}

/// `count` GPUs of 16 GiB.
fn gpus(count: u16) -> dp_manager::DeviceInventory {
    dp_manager::DeviceInventory::from_devices(
        (0..count)
            .map(|index| CudaDeviceInfo {
                index,
                name: format!("test GPU {index}"),
                compute_capability: (9, 0),
                total_bytes: 16 << 30,
                free_bytes: 16 << 30,
            })
            .collect(),
    )
}

#[test]
fn a_worker_pool_goes_round_robin_over_the_gpus_its_policy_allows() {
    let workers = "resource_requirements: { num_workers: 4, vram_bytes: 1000000 }\n";
    let (path, pinned) = embedder("pinned", "emb", workers);
    let specs = [
        embedder("spread", "emb", workers),
        (
            path,
            pinned.replace("device_policy: auto", "device_policy: cuda:1"),
        ),
        embedder("single", "emb", ""),
    ];
    let provider = Embedder {
        call_time: Duration::from_millis(30),
        ..Embedder::default()
    };
    let s = setup_provider(&specs, provider, |b| b.devices(gpus(3)));
    // 12 callers at once: the first four lead a call each (four workers), the others
    // queue behind them.
    let barrier = std::sync::Barrier::new(12);
    let records: Vec<(dp_signature::ModelsUsedEntry, Vec<Vec<f32>>)> =
        std::thread::scope(|scope| {
            let callers: Vec<_> = (0..12)
                .map(|i| {
                    let (s, barrier) = (&s, &barrier);
                    scope.spawn(move || {
                        let words = ["the", "cat", "sat", "on", "mat"];
                        let text = format!("{} {}", words[i % 5], words[(i / 5) % 5]);
                        barrier.wait();
                        let out = s.manager.embed("spread", &[text.as_str()]).expect("embeds");
                        (out.models_used[0].clone(), out.embeddings)
                    })
                })
                .collect();
            callers
                .into_iter()
                .map(|c| c.join().expect("no panic"))
                .collect()
        });
    let calls = s.provider.calls_on.lock().expect("lock").clone();
    let used: std::collections::BTreeSet<ResolvedDevice> = calls.iter().map(|c| c.0).collect();
    assert_eq!(
        used,
        (0..3).map(ResolvedDevice::Cuda).collect(),
        "four workers over three GPUs: worker 3 back on cuda:0 ({calls:?})"
    );
    let mut loads = s.provider.devices.lock().expect("lock").clone();
    loads.sort();
    assert_eq!(
        loads,
        (0..3).map(ResolvedDevice::Cuda).collect::<Vec<_>>(),
        "one instance per GPU, shared by the workers on it"
    );
    // Every caller's record names the GPU its call ran on, and its vector is right.
    for (record, rows) in &records {
        let device = record.device.local_device().expect("local");
        assert!(used.contains(&device));
        assert!(
            record.model_signature.contains(&format!("device={device}")),
            "{}",
            record.model_signature
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][1], 1.0);
    }
    let by_device = |d: ResolvedDevice| {
        records
            .iter()
            .filter(|r| r.0.device.local_device() == Some(d))
            .count()
    };
    let texts_on = |d: ResolvedDevice| {
        calls
            .iter()
            .filter(|c| c.0 == d)
            .map(|c| c.1)
            .sum::<usize>()
    };
    for d in (0..3).map(ResolvedDevice::Cuda) {
        assert_eq!(by_device(d), texts_on(d), "records and calls agree on {d}");
    }
    // Status lists one instance per GPU; releasing the model releases them all.
    let status = s.manager.status();
    let mut placed: Vec<ResolvedDevice> = status
        .models
        .iter()
        .filter(|m| m.key.model_name == "spread")
        .map(|m| m.key.device)
        .collect();
    placed.sort();
    assert_eq!(placed, (0..3).map(ResolvedDevice::Cuda).collect::<Vec<_>>());
    assert!(s.manager.release("spread"));
    assert_eq!(s.manager.status().totals.loaded, 0);

    // A pinned GPU keeps every worker there; one worker never leaves cuda:0.
    for (model, device) in [
        ("pinned", ResolvedDevice::Cuda(1)),
        ("single", ResolvedDevice::Cuda(0)),
    ] {
        s.provider.devices.lock().expect("lock").clear();
        let barrier = std::sync::Barrier::new(6);
        std::thread::scope(|scope| {
            for i in 0..6 {
                let (s, barrier) = (&s, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    let text = ["the", "cat", "sat", "on", "mat", "the cat"][i];
                    let out = s.manager.embed(model, &[text]).expect("embeds");
                    assert_eq!(out.models_used[0].device.local_device(), Some(device));
                });
            }
        });
        assert_eq!(
            *s.provider.devices.lock().expect("lock"),
            vec![device],
            "{model}"
        );
    }
}

#[test]
fn tasks_preload_embed_infer_and_refuse_what_they_cannot_do() {
    let s = setup(|b| b);
    // data: None preloads.
    let mut preload = TaskRequest::new(TaskType::Embedding, "emb", None);
    preload.keep_alive = Some(Duration::from_secs(7));
    let response = s.manager.task(preload).expect("preloads");
    assert_eq!(response.output, TaskOutput::Preloaded);
    let status = s.manager.status();
    assert_eq!(status.totals.loaded, 1);
    assert_eq!(status.models[0].keep_alive, Some(Duration::from_secs(7)));
    assert_eq!(response.models_used[0].model_name, "emb");

    let texts = TaskData::Texts(vec!["mat".to_owned()]);
    let response = s
        .manager
        .task(TaskRequest::new(TaskType::Embedding, "emb", Some(texts)))
        .expect("embeds");
    assert_eq!(
        response.output,
        TaskOutput::Embeddings(vec![expected(&[8.0])])
    );
    assert_eq!(s.provider.loads.load(Ordering::SeqCst), 1, "preloaded");

    let ids = Tensor::new(vec![1, 2], TensorData::Int64(vec![2, 3])).expect("tensor");
    let tensors = NamedTensors::from([("input_ids".to_owned(), ids)]);
    let response = s
        .manager
        .task(TaskRequest::new(
            TaskType::Infer,
            "emb",
            Some(TaskData::Tensors(tensors.clone())),
        ))
        .expect("infers");
    let TaskOutput::Tensors(out) = response.output else {
        panic!("tensors expected")
    };
    assert_eq!(
        out["last_hidden_state"].data(),
        &TensorData::Fp32(vec![2.0, 1.0, 3.0, 1.0])
    );

    let refused = [
        TaskRequest::new(
            TaskType::TextGeneration,
            "emb",
            Some(TaskData::Tensors(tensors.clone())),
        ),
        TaskRequest::new(TaskType::Embedding, "emb", Some(TaskData::Tensors(tensors))),
        TaskRequest::new(TaskType::Infer, "emb", Some(TaskData::Texts(vec![]))),
        TaskRequest {
            options: BTreeMap::from([("temperature".to_owned(), serde_json::json!(0.1))]),
            ..TaskRequest::new(TaskType::Embedding, "emb", None)
        },
    ];
    for request in refused {
        let what = format!("{:?}", request.task_type);
        let err = s.manager.task(request).expect_err(&what);
        assert_eq!(err.error_code, ErrorCode::InvalidInput, "{what}: {err}");
    }
    // An embedder has no decoder: generation is refused by name, after the load it needed.
    let err = s
        .manager
        .task(TaskRequest::new(
            TaskType::TextGeneration,
            "emb",
            Some(TaskData::Texts(vec!["mat".to_owned()])),
        ))
        .expect_err("an embedder cannot generate");
    assert_eq!(err.error_code, ErrorCode::InvalidInput, "{err}");
    assert_eq!(err.details["reason"], "generation_unsupported", "{err}");
    assert!(
        err.message.contains("model emb cannot generate text"),
        "{err}"
    );
    let err = s
        .manager
        .task(TaskRequest::new(TaskType::Embedding, "nope", None))
        .expect_err("unknown");
    assert_eq!(err.error_code, ErrorCode::ModelNotFound);
}

#[test]
fn a_bad_tokenizer_fails_the_load_with_invalid_spec_naming_the_file() {
    let s = setup_with(&[embedder("bad", "broken", "")], |b| b);
    let err = s.manager.embed("bad", &["x"]).expect_err("bad tokenizer");
    assert_eq!(err.error_code, ErrorCode::InvalidSpec);
    assert!(
        err.message.contains("broken/tokenizer.json"),
        "{}",
        err.message
    );
    let status = s.manager.status();
    assert_eq!((status.totals.load_errors, status.totals.loaded), (1, 0));
    assert_eq!(
        s.provider.loads.load(Ordering::SeqCst),
        0,
        "weights untouched"
    );
    assert_eq!(status.totals.ram_used, 0, "reservation returned");
}

#[test]
fn specs_that_need_the_network_fail_the_build() {
    let remote = (
        "r/far.yaml".to_owned(),
        "model_name: far\nmodel_version: \"1\"\nrole: r\nruntime: triton\nengine: onnx\n\
         triton:\n  endpoint: http://10.1.2.3:8000\n  model_name: far\n"
            .to_owned(),
    );
    let (_dir, catalog) = catalog(&[remote]);
    let err = ModelManager::builder(catalog.clone(), "/models")
        .reaper(false)
        .build()
        .expect_err("non-loopback endpoint");
    assert_eq!(err.error_code, ErrorCode::NetworkForbidden);
    assert!(err.message.contains("10.1.2.3"), "{}", err.message);
    ModelManager::builder(catalog, "/models")
        .allowed_triton_hosts(["10.1.2.3".to_owned()])
        .reaper(false)
        .build()
        .expect("allowed explicitly");
}

#[test]
fn the_offline_environment_is_given_to_children_not_to_this_process() {
    let s = setup(|b| b);
    let root = s.root.path();
    let env: BTreeMap<_, _> = s.manager.offline_env().into_iter().collect();
    assert_eq!(env["HF_HUB_OFFLINE"], "1");
    assert_eq!(env["TRANSFORMERS_OFFLINE"], "1");
    assert_eq!(env["TORCH_HOME"], root.join(".cache/torch"));
    assert!(std::path::PathBuf::from(&env["HF_HOME"]).starts_with(root));
    // A real child process sees it (whatever this process's own environment says).
    let out = s
        .manager
        .offline_command("sh")
        .args([
            "-c",
            "echo $HF_HUB_OFFLINE $TRANSFORMERS_OFFLINE $TORCH_HOME",
        ])
        .output()
        .expect("sh runs");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("1 1 {}", root.join(".cache/torch").display())
    );
}

#[test]
fn health_reports_artifacts_digests_runtimes_and_tier0() {
    let tokenizer = tokenizer_json();
    let digest = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Sha256, tokenizer.as_bytes());
    let specs = [
        embedder(
            "good",
            "emb",
            &format!("tier: 0\nweights_digest: {digest}\n"),
        ),
        embedder("altered", "emb", "tier: 1\n"),
        embedder("absent", "gone", "tier: 0\n"),
        embedder(
            "no-runtime",
            "emb",
            &format!("tier: 2\nweights_digest: {digest}\n"),
        ),
    ];
    let state = tempfile::tempdir().expect("tempdir");
    let cache = state.path().join("verify-cache.json");
    let s = setup_with(&specs, |b| b.verification_cache(&cache));
    let report = s.manager.health();
    let by_name = |name: &str| {
        report
            .models
            .iter()
            .find(|m| m.model_name == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let good = by_name("good");
    assert!(good.ready, "{good:?}");
    assert_eq!(good.digest, DigestHealth::Verified);
    assert_eq!(good.provider.as_deref(), Some("embedder"));

    let altered = by_name("altered");
    assert_eq!(altered.digest, DigestHealth::Mismatch);
    assert_eq!(
        altered.problems[0].error_code,
        ErrorCode::WeightsDigestMismatch
    );

    let absent = by_name("absent");
    assert!(!absent.artifacts_present && !absent.ready);
    assert_eq!(absent.problems[0].error_code, ErrorCode::WeightsMissing);

    let no_runtime = by_name("no-runtime");
    assert_eq!(no_runtime.digest, DigestHealth::Verified);
    assert!(!no_runtime.ready);
    assert_eq!(
        no_runtime.problems[0].error_code,
        ErrorCode::ProviderUnavailable
    );

    assert_eq!(report.tier0.total, 2);
    assert_eq!(report.tier0.ready, 1);
    assert_eq!(report.tier0.not_ready, ["absent"]);
    assert!(!report.tier0_ready());
    assert!(cache.exists(), "the verification cache was saved");
    assert_eq!(
        s.provider.loads.load(Ordering::SeqCst),
        0,
        "health loads nothing"
    );
    let json = serde_json::to_value(&report).expect("serializes");
    assert_eq!(json["tier0"]["not_ready"][0], "absent");
}

#[test]
fn models_without_a_provider_are_unhealthy_and_name_the_feature() {
    let (_dir, catalog) = catalog(&[embedder("emb", "emb", "tier: 0\n")]);
    let manager = ModelManager::builder(catalog, "/nonexistent")
        .reaper(false)
        .build()
        .expect("builds");
    let report = manager.health();
    let m = &report.models[0];
    assert!(m.provider.is_none() && !m.ready);
    let codes: Vec<ErrorCode> = m.problems.iter().map(|p| p.error_code).collect();
    assert_eq!(
        codes,
        [ErrorCode::WeightsMissing, ErrorCode::ProviderUnavailable]
    );
}
