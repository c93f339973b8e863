//! The manager end to end on the real MiniLM: the catalog's candle and ONNX specs, loaded
//! by the real providers through `ModelManager`, embed through the one shared
//! `sentence_embedding` preset and agree with sentence-transformers; cached texts come back
//! bit for bit; the records name what ran.

use std::sync::Arc;

use dp_manager::providers::candle::CandleProvider;
use dp_manager::providers::onnx::{OnnxProvider, OnnxProviderConfig};
use dp_manager::{EmbeddingCacheConfig, ModelManager};
use dp_spec::{Catalog, ModelProvider};

/// sentence-transformers' output (`tests/data/reference/…`): sentences and embeddings.
fn reference() -> (Vec<String>, Vec<Vec<f32>>) {
    let path = dp_tests::data_dir().join("reference/minilm_l6_v2_sentence_transformers.json");
    let text = std::fs::read_to_string(&path).expect("reference file");
    let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let sentences = serde_json::from_value(json["sentences"].clone()).expect("sentences");
    let embeddings = serde_json::from_value(json["embeddings"].clone()).expect("embeddings");
    (sentences, embeddings)
}

fn max_abs_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

/// The sample catalog's MiniLM builds (candle and ONNX) behind one manager, or `None` (not in
/// CI) without the setup's models.
fn minilm_manager(test: &str, cache: EmbeddingCacheConfig) -> Option<ModelManager> {
    dp_tests::asset("models/all-minilm-l6-v2-onnx/model.onnx", test)?;
    let models_root = dp_tests::asset("models", test)?;
    let catalog = Catalog::load(&dp_tests::sample_catalog()).expect("sample catalog");
    let providers: Vec<Arc<dyn ModelProvider>> = vec![
        Arc::new(CandleProvider::new()),
        Arc::new(OnnxProvider::new(OnnxProviderConfig::default())),
    ];
    let manager = ModelManager::builder(catalog, models_root)
        .providers(providers)
        .embedding_cache(cache)
        .reaper(false)
        .build()
        .expect("builds");
    Some(manager)
}

#[test]
fn candle_and_onnx_embed_like_sentence_transformers_through_the_manager() {
    const TEST: &str = "candle_and_onnx_embed_like_sentence_transformers_through_the_manager";
    let Some(manager) = minilm_manager(TEST, EmbeddingCacheConfig::default()) else {
        return;
    };
    let (sentences, expected) = reference();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();

    let candle = manager
        .embed("all-minilm-l6-v2", &texts)
        .expect("candle embeds");
    let onnx = manager
        .embed("all-minilm-l6-v2-onnx", &texts)
        .expect("onnx embeds");
    let candle_diff = max_abs_diff(&candle.embeddings, &expected);
    let onnx_diff = max_abs_diff(&onnx.embeddings, &expected);
    assert!(candle_diff < 1e-5, "candle differs by {candle_diff}");
    assert!(onnx_diff < 1e-5, "onnx differs by {onnx_diff}");

    // The records say what ran; one preset, so one preprocess signature.
    let (c, o) = (&candle.models_used[0], &onnx.models_used[0]);
    assert_eq!((c.engine.as_str(), o.engine.as_str()), ("candle", "onnx"));
    assert_eq!(c.device.to_string(), "cpu");
    assert_eq!(c.preprocess_signature, o.preprocess_signature);
    assert_ne!(candle.model_signature, onnx.model_signature);

    // A second, partly new batch: cached texts come back identical, the new one is embedded.
    let mut again = texts[..3].to_vec();
    again.insert(1, "a sentence the reference does not have");
    let out = manager.embed("all-minilm-l6-v2", &again).expect("embeds");
    assert_eq!(out.embeddings[0], candle.embeddings[0]);
    assert_eq!(out.embeddings[2..], candle.embeddings[1..3]);
    let cache = manager.status().embedding_cache;
    assert_eq!(cache.hits, 3);
    assert_eq!(cache.misses, 2 * texts.len() as u64 + 1);
    let norm: f32 = out.embeddings[1].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "normalized: {norm}");
}

/// 24 threads each embedding one text at once, through the dynamic batching queue: each
/// gets the vector of its own text (as one big call computes it, within float noise), on
/// both engines, and no request is lost.
#[test]
fn concurrent_single_text_callers_are_batched_and_each_gets_its_own_vector() {
    const TEST: &str = "concurrent_single_text_callers_are_batched_and_each_gets_its_own_vector";
    let Some(manager) = minilm_manager(TEST, EmbeddingCacheConfig::disabled()) else {
        return;
    };
    let (sentences, _) = reference();
    let texts: Vec<String> = (0..24)
        .map(|i| format!("{} ({i})", sentences[i % sentences.len()]))
        .collect();
    for model in ["all-minilm-l6-v2", "all-minilm-l6-v2-onnx"] {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let together = manager.embed(model, &refs).expect("one call");
        let barrier = std::sync::Barrier::new(texts.len());
        let vectors: Vec<Vec<f32>> = std::thread::scope(|scope| {
            let handles: Vec<_> = texts
                .iter()
                .map(|text| {
                    let (manager, barrier) = (&manager, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        let out = manager.embed(model, &[text.as_str()]).expect("embeds");
                        out.embeddings.into_iter().next().expect("one vector")
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let diff = max_abs_diff(&vectors, &together.embeddings);
        assert!(
            diff < 1e-5,
            "{model}: a caller got another text's vector? {diff}"
        );
        // The model's queue, as status reports it: the one 24-text call and the 24 single
        // texts, every call counted in the batch-size histogram, every request's latency.
        let status = manager.status();
        let queue = status
            .batching
            .iter()
            .find(|q| q.model == model)
            .expect("the model's batching queue is reported");
        assert_eq!(queue.texts, 48, "{queue:?}");
        assert_eq!(queue.queued_texts, 0);
        assert_eq!(queue.batch_sizes.counts.iter().sum::<u64>(), queue.calls);
        assert!(queue.calls < 25, "single texts shared calls: {queue:?}");
        assert_eq!(queue.latency_ms.counts.iter().sum::<u64>(), 25);
    }
}
