//! Rows of the bad-input table for what a load or a health check finds among a model's
//! files: an empty folder or a symlink loop where a file should be, a FIFO or a link out of
//! the models root in place of `config.json` (named as such, not blamed on the weights),
//! and a lock entry written for another version or pin of the model.

use dp_digest::{ManifestOptions, manifest_of_artifacts};

use super::*;

/// The tiny BERT's artifacts, relative to the models root.
fn tiny_bert_artifacts() -> Vec<String> {
    Fixture::tiny_bert_spec()["local_artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect()
}

/// A manager's health of the tiny BERT, refused when it is not ready.
fn tiny_bert_health(fx: &Fixture) -> Outcome {
    let report = fx.manager()?.health();
    let model = &report.models[0];
    match model.problems.first() {
        Some(problem) => Err(Refusal::from(problem.clone())),
        None => Ok(()),
    }
}

/// A manager reading the lock file `catalog.lock` beside the catalog.
fn embed_tiny_bert_locked(fx: &Fixture) -> Outcome {
    let lock = LockFile::read(&fx.root().join("catalog.lock")).unwrap();
    let manager = ModelManager::builder(fx.catalog()?, fx.models())
        .provider(Arc::new(CandleProvider::new()))
        .embedding_cache(EmbeddingCacheConfig::disabled())
        .lock_file(lock)
        .reaper(false)
        .build()?;
    manager.embed(TINY_BERT, &["a sentence"])?;
    Ok(())
}

/// The locked tiny BERT through the unified task API (`task(embedding)`), and a preload
/// (`task` without data).
fn task_tiny_bert_locked(fx: &Fixture) -> Outcome {
    let lock = LockFile::read(&fx.root().join("catalog.lock")).unwrap();
    let manager = ModelManager::builder(fx.catalog()?, fx.models())
        .provider(Arc::new(CandleProvider::new()))
        .embedding_cache(EmbeddingCacheConfig::disabled())
        .lock_file(lock)
        .reaper(false)
        .build()?;
    let preload = manager.task(TaskRequest::new(TaskType::Embedding, TINY_BERT, None));
    let embed = manager.task(TaskRequest::new(
        TaskType::Embedding,
        TINY_BERT,
        Some(TaskData::Texts(vec!["a sentence".to_owned()])),
    ));
    // Both must refuse, with the same error.
    match (preload, embed) {
        (Err(a), Err(b)) if a == b => Err(Refusal::from(a)),
        (a, b) => panic!("preload and embedding disagree: {a:?} / {b:?}"),
    }
}

/// Writes `catalog.lock` with an entry for the tiny BERT as it is now, then lets `edit`
/// change the entry.
fn lock_tiny_bert(fx: &Fixture, edit: fn(&mut dp_digest::LockEntry)) {
    let manifest = manifest_of_artifacts(
        &fx.models(),
        &tiny_bert_artifacts(),
        &ManifestOptions::default(),
    )
    .unwrap();
    let pin = Fixture::tiny_bert_spec()["weights_digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut entry = dp_digest::LockEntry::new("1.0.0", Some(pin), manifest, SystemTime::now());
    edit(&mut entry);
    LockFile::update(&fx.root().join("catalog.lock"), |lock| {
        lock.models.insert(TINY_BERT.to_owned(), entry);
        Ok::<_, dp_digest::DigestError>(())
    })
    .unwrap();
}

/// The tiny BERT, locked as it is, then one of its files edited (`from` → `to`, once).
fn edit_after_the_lock(fx: &Fixture, file: &str, from: &str, to: &str) {
    fx.tiny_bert();
    lock_tiny_bert(fx, |_| {});
    let path = fx.model_file(&format!("tiny-bert/{file}"));
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no {from:?}");
    fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

pub(crate) fn rows() -> Vec<Case> {
    use ErrorCode as C;
    vec![
        Case {
            name: "empty_folder_in_place_of_a_listed_file",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let config = fx.model_file("tiny-bert/config.json");
                fs::remove_file(&config).unwrap();
                fs::create_dir(&config).unwrap();
            },
            action: tiny_bert_health,
            code: C::WeightsMissing,
            says: &["tiny-bert/config.json", "missing", "put the files there"],
        },
        Case {
            name: "empty_folder_in_place_of_a_listed_file_at_load",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let config = fx.model_file("tiny-bert/tokenizer.json");
                fs::remove_file(&config).unwrap();
                fs::create_dir(&config).unwrap();
            },
            action: embed_tiny_bert,
            code: C::WeightsMissing,
            says: &["tiny-bert/tokenizer.json", "missing"],
        },
        Case {
            name: "symlink_loop_as_an_artifact",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let config = fx.model_file("tiny-bert/config.json");
                fs::remove_file(&config).unwrap();
                std::os::unix::fs::symlink("config.json", &config).unwrap();
            },
            action: tiny_bert_health,
            code: C::WeightsDigestMismatch,
            says: &[
                "tiny-bert/config.json",
                "cannot be resolved",
                "remove the link",
            ],
        },
        Case {
            name: "config_json_is_a_fifo_and_is_named",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let config = fx.model_file("tiny-bert/config.json");
                fs::remove_file(&config).unwrap();
                let status = std::process::Command::new("mkfifo")
                    .arg(&config)
                    .status()
                    .unwrap();
                assert!(status.success());
            },
            action: tiny_bert_health,
            code: C::WeightsDigestMismatch,
            says: &["tiny-bert/config.json", "FIFO"],
        },
        Case {
            name: "config_json_linked_out_of_the_models_root_is_named",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                let config = fx.model_file("tiny-bert/config.json");
                let outside = fx.outside().join("config.json");
                fs::rename(&config, &outside).unwrap();
                std::os::unix::fs::symlink(&outside, &config).unwrap();
            },
            action: tiny_bert_health,
            code: C::WeightsDigestMismatch,
            says: &[
                "tiny-bert/config.json",
                "outside/config.json",
                "instead of linking out of it",
            ],
        },
        Case {
            name: "lock_entry_written_for_another_model_version",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                lock_tiny_bert(fx, |entry| entry.model_version = "0.9.0".into());
            },
            action: embed_tiny_bert_locked,
            code: C::VersionDrift,
            says: &["model_version \"0.9.0\"", "\"1.0.0\"", "--lock"],
        },
        Case {
            name: "lock_entry_written_for_another_weights_pin",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                lock_tiny_bert(fx, |entry| {
                    entry.weights_digest =
                        Some(digest_bytes(DigestAlgorithm::Sha256, b"other weights"));
                });
            },
            action: embed_tiny_bert_locked,
            code: C::VersionDrift,
            says: &["weights_digest", "the spec pins", "--lock"],
        },
        Case {
            name: "config_changed_after_the_lock_through_the_task_api",
            needs: Needs::Nothing,
            setup: |fx| edit_after_the_lock(fx, "config.json", "1e-12", "1e-02"),
            action: task_tiny_bert_locked,
            code: C::VersionDrift,
            says: &[
                "changed: tiny-bert/config.json",
                "dp verify tiny-bert --lock",
            ],
        },
        Case {
            name: "tokenizer_changed_after_the_lock",
            needs: Needs::Nothing,
            setup: |fx| edit_after_the_lock(fx, "tokenizer.json", "\"cat\"", "\"cbt\""),
            action: embed_tiny_bert_locked,
            code: C::VersionDrift,
            says: &[
                "changed: tiny-bert/tokenizer.json",
                "dp verify tiny-bert --lock",
            ],
        },
    ]
}
