//! Rows of the bad-input table for the files a caller names: FIFOs given as a lock file, a
//! profile or a file to hash (a reader must never block on them), a lock file that names a
//! model twice, and a verification cache placed where a writer of the models folder could
//! forge it.

use super::*;

/// How long an action may take before the row calls it blocked.
const FIFO_DEADLINE: Duration = Duration::from_secs(5);

/// Makes a FIFO at `relative` under the temporary tree.
fn mkfifo(fx: &Fixture, relative: &str) {
    let path = fx.root().join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs `action`; if it is still running after [`FIFO_DEADLINE`], it is blocked on the FIFO
/// at `fifo`: the row releases it (opening the FIFO for writing, then closing it, gives the
/// blocked reader an end of file) and panics, which the table reports.
fn within_deadline(fx: &Fixture, fifo: &str, action: fn(&Fixture) -> Outcome) -> Outcome {
    let (sender, receiver) = std::sync::mpsc::channel();
    thread::scope(|scope| {
        scope.spawn(move || {
            let _ = sender.send(action(fx));
        });
        match receiver.recv_timeout(FIFO_DEADLINE) {
            Ok(outcome) => outcome,
            // The action panicked: the scope reports that panic.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Ok(()),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                use std::os::unix::fs::OpenOptionsExt as _;
                // O_NONBLOCK (Linux): fails instead of waiting if nobody reads after all.
                let writer = fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(0o4000)
                    .open(fx.root().join(fifo));
                drop(writer);
                panic!("blocked for {FIFO_DEADLINE:?} on the FIFO {fifo}");
            }
        }
    })
}

/// A lock file whose `models` object names model `m` twice (two consistent entries, so
/// only the duplicate is wrong).
fn lock_with_a_duplicate_key(fx: &Fixture) {
    fx.write("models/m/model.bin", b"weights");
    let manifest = dp_digest::manifest_of_artifacts(
        &fx.models(),
        &["m/model.bin".to_owned()],
        &dp_digest::ManifestOptions::default(),
    )
    .unwrap();
    let entry = |version: &str| {
        let entry = dp_digest::LockEntry::new(version, None, manifest.clone(), SystemTime::now());
        serde_json::to_string_pretty(&entry).unwrap()
    };
    fx.write(
        "catalog/catalog.lock",
        format!(
            "{{\n  \"version\": 1,\n  \"models\": {{\n    \"m\": {},\n    \"m\": {}\n  }}\n}}\n",
            entry("1.0.0"),
            entry("2.0.0")
        ),
    );
}

fn read_lock(fx: &Fixture) -> Outcome {
    LockFile::read(&fx.catalog_dir().join("catalog.lock"))
        .map(drop)
        .map_err(|e| ModelError::from(e).into())
}

fn update_lock(fx: &Fixture) -> Outcome {
    LockFile::update(&fx.catalog_dir().join("catalog.lock"), |_| {
        Ok::<_, dp_digest::DigestError>(())
    })
    .map_err(|e| ModelError::from(e).into())
}

/// `VerificationCache::check_location` of `cache` for the fixture's models root.
fn check_cache(fx: &Fixture, cache: &Path) -> Outcome {
    dp_digest::VerificationCache::check_location(cache, &fx.models())
        .map_err(|e| ModelError::from(e).into())
}

pub(crate) fn rows() -> Vec<Case> {
    use ErrorCode as C;
    vec![
        Case {
            name: "lock_file_with_a_duplicate_model_key",
            needs: Needs::Nothing,
            setup: lock_with_a_duplicate_key,
            action: read_lock,
            code: C::InvalidInput,
            says: &[
                "catalog.lock",
                "\"m\"",
                "more than once",
                "restore it from version control",
            ],
        },
        Case {
            name: "lock_file_update_with_a_duplicate_model_key",
            needs: Needs::Nothing,
            setup: |fx| {
                lock_with_a_duplicate_key(fx);
                // The sidecar an earlier update left, so the row can check nothing changed.
                fx.write("catalog/catalog.lock.lck", b"");
            },
            action: update_lock,
            code: C::InvalidInput,
            says: &["catalog.lock", "\"m\"", "more than once"],
        },
        Case {
            name: "lock_file_is_a_fifo",
            needs: Needs::Nothing,
            setup: |fx| mkfifo(fx, "catalog/catalog.lock"),
            action: |fx| within_deadline(fx, "catalog/catalog.lock", read_lock),
            code: C::InvalidInput,
            says: &["catalog.lock", "FIFO", "must be a regular file"],
        },
        Case {
            name: "lock_file_update_on_a_fifo",
            needs: Needs::Nothing,
            setup: |fx| mkfifo(fx, "catalog/catalog.lock"),
            // Refused before the sidecar lock is created: nothing appears in the tree.
            action: |fx| within_deadline(fx, "catalog/catalog.lock", update_lock),
            code: C::InvalidInput,
            says: &["catalog.lock", "FIFO", "must be a regular file"],
        },
        Case {
            name: "lock_file_sidecar_is_a_fifo",
            needs: Needs::Nothing,
            setup: |fx| mkfifo(fx, "catalog/catalog.lock.lck"),
            action: |fx| within_deadline(fx, "catalog/catalog.lock.lck", update_lock),
            code: C::InvalidInput,
            says: &["catalog.lock.lck", "FIFO", "must be a regular file"],
        },
        Case {
            name: "verification_cache_inside_the_models_root",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| check_cache(fx, &fx.models().join("state/verify-cache.json")),
            code: C::InvalidInput,
            says: &[
                "state/verify-cache.json",
                "inside the models root",
                "forge",
                "outside the models root",
            ],
        },
        Case {
            name: "verification_cache_linked_into_the_models_root",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.tiny_bert();
                std::os::unix::fs::symlink(fx.model_file(TINY_BERT), fx.outside().join("state"))
                    .unwrap();
            },
            // The path looks outside; the folder it would be written in is not.
            action: |fx| check_cache(fx, &fx.outside().join("state/verify-cache.json")),
            code: C::InvalidInput,
            says: &["outside/state/verify-cache.json", "inside the models root"],
        },
        Case {
            name: "verification_cache_is_a_fifo",
            needs: Needs::Nothing,
            setup: |fx| mkfifo(fx, "outside/verify-cache.json"),
            action: |fx| check_cache(fx, &fx.outside().join("verify-cache.json")),
            code: C::InvalidInput,
            says: &["verify-cache.json", "FIFO", "must be a regular file"],
        },
        Case {
            name: "profile_file_is_a_fifo",
            needs: Needs::Nothing,
            setup: |fx| mkfifo(fx, "outside/profile.yaml"),
            action: |fx| {
                within_deadline(fx, "outside/profile.yaml", |fx| {
                    dp_spec::Layer::read_profile(&fx.outside().join("profile.yaml"))
                        .map(drop)
                        .map_err(Refusal::from)
                })
            },
            code: C::InvalidSpec,
            says: &["profile.yaml", "FIFO", "must be a regular file"],
        },
        Case {
            name: "file_to_hash_is_a_fifo",
            needs: Needs::Nothing,
            setup: |fx| mkfifo(fx, "outside/weights.bin"),
            action: |fx| {
                within_deadline(fx, "outside/weights.bin", |fx| {
                    dp_digest::digest_file(
                        &fx.outside().join("weights.bin"),
                        DigestAlgorithm::Sha256,
                        &dp_digest::NoProgress,
                    )
                    .map(drop)
                    .map_err(|e| ModelError::from(e).into())
                })
            },
            code: C::InvalidInput,
            says: &["weights.bin", "FIFO", "must be a regular file"],
        },
    ]
}
