//! The persistent embedding cache through the manager, on the demo tiny BERT (in the
//! repository, so nothing needs setup): vectors survive a restart bit for bit, a modified
//! model (one weight changed, its pin updated) never gets the old vectors, and a cache file
//! that is not a cache is set aside, never served.

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::Path;
use std::sync::Arc;

use dp_manager::{ModelManager, PersistentCacheConfig};
use dp_provider_candle::CandleProvider;
use dp_spec::Catalog;

const TEXTS: [&str; 4] = [
    "the cat sat on the mat",
    "dogs play in the rain",
    "a model runs offline",
    "music plays loud today",
];

/// A catalog and models root holding a copy of the demo tiny BERT, under `root`.
fn copy_demo(root: &Path) {
    let demo = dp_tests::workspace_root().join("crates/dp-cli/demo");
    dp_tests::copy_dir(&demo.join("catalog"), &root.join("catalog")).unwrap();
    dp_tests::copy_dir(&demo.join("models"), &root.join("models")).unwrap();
}

fn manager(root: &Path, cache: &Path) -> ModelManager {
    ModelManager::builder(
        Catalog::load(&root.join("catalog")).unwrap(),
        root.join("models"),
    )
    .provider(Arc::new(CandleProvider::new()))
    .persistent_embedding_cache(PersistentCacheConfig::new(cache))
    .reaper(false)
    .build()
    .unwrap()
}

#[test]
fn vectors_survive_a_restart_and_a_modified_model_misses() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("tree"), dir.path().join("cache"));
    copy_demo(&root);

    let first = manager(&root, &cache).embed("tiny-bert", &TEXTS).unwrap();
    // A new manager (a restarted pipeline): every text comes from disk, bit for bit.
    let restarted = manager(&root, &cache);
    let again = restarted.embed("tiny-bert", &TEXTS).unwrap();
    assert_eq!(again.embeddings, first.embeddings);
    let status = restarted.status().embedding_cache;
    assert_eq!(
        (status.hits, status.persistent_hits, status.misses),
        (4, 4, 0)
    );
    assert_eq!(
        status.persistent_file.as_deref(),
        Some(cache.join("embeddings.sqlite").as_path())
    );
    // A text never seen is computed, and stored for next time.
    let mixed = restarted
        .embed("tiny-bert", &[TEXTS[0], "a brand new text"])
        .unwrap();
    assert_eq!(mixed.embeddings[0], first.embeddings[0]);
    assert_eq!(restarted.status().embedding_cache.misses, 1);
    drop(restarted);

    // One weight changed by 1e-3 (and the spec pinned to the new bytes): another model
    // signature, so not one old vector is served.
    let weights = root.join("models/tiny-bert/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let header = usize::try_from(u64::from_le_bytes(bytes[..8].try_into().unwrap())).unwrap();
    let at = 8 + header;
    let value = f32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) + 1e-3;
    bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    std::fs::write(&weights, &bytes).unwrap();
    let new = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Sha256, &bytes).to_string();
    dp_tests::repin_weights(&root.join("catalog/text_embedding/tiny-bert.yaml"), &new);
    let modified = manager(&root, &cache);
    let out = modified.embed("tiny-bert", &TEXTS).unwrap();
    let status = modified.status().embedding_cache;
    assert_eq!(
        (status.hits, status.misses),
        (0, 4),
        "the old vectors are not served"
    );
    assert_ne!(out.model_signature, first.model_signature);
    assert_ne!(out.embeddings, first.embeddings);
}

#[test]
fn a_cache_file_that_is_not_a_cache_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("tree"), dir.path().join("cache"));
    copy_demo(&root);
    std::fs::create_dir_all(&cache).unwrap();
    // Garbage where the cache file goes (a crash of another program, a wrong folder).
    std::fs::write(cache.join("embeddings.sqlite"), vec![0x5a; 8192]).unwrap();
    let m = manager(&root, &cache);
    let out = m.embed("tiny-bert", &TEXTS).unwrap();
    assert_eq!(out.embeddings.len(), 4);
    assert_eq!(m.status().embedding_cache.persistent_hits, 0);
    let names: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("embeddings.sqlite.unreadable-")),
        "{names:?}"
    );
    // The new cache works.
    drop(m);
    let m = manager(&root, &cache);
    assert_eq!(
        m.embed("tiny-bert", &TEXTS).unwrap().embeddings,
        out.embeddings
    );
    assert_eq!(m.status().embedding_cache.persistent_hits, 4);
}
