//! Replays, on stable Rust and in every test run, each input the fuzzers keep: the seeds
//! (`tests/fuzz/seeds/<target>/`) and every input that once broke a property
//! (`tests/fuzz/regressions/<target>/`), through the same checks `cargo fuzz` runs.

#[path = "fuzz/checks.rs"]
#[allow(
    dead_code,
    reason = "shared with the fuzz crate, which uses every check"
)]
mod checks;

use std::path::Path;

fn inputs(kind: &str, target: &str) -> Vec<std::path::PathBuf> {
    let dir = dp_tests::workspace_root()
        .join("tests/fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(path: &Path, check: fn(&[u8])) {
    let data = std::fs::read(path).expect("input");
    if let Err(panic) = std::panic::catch_unwind(|| check(&data)) {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(non-string panic)");
        panic!("{} breaks its property again: {why}", path.display());
    }
}

#[test]
fn every_kept_fuzz_input_still_holds_its_property() {
    let mut replayed = 0;
    for (target, check) in checks::TARGETS {
        let seeds = inputs("seeds", target);
        let regressions = inputs("regressions", target);
        for path in seeds.iter().chain(&regressions) {
            replay(path, *check);
            replayed += 1;
        }
    }
    // The seeds alone are several per target; an empty run would mean the paths moved.
    assert!(
        replayed >= 4,
        "only {replayed} inputs found under tests/fuzz"
    );
}

#[test]
fn the_fuzz_crate_has_a_target_for_every_check() {
    let dir = dp_tests::workspace_root().join("tests/fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz_targets")
        .map(|e| {
            let p = e.expect("entry").path();
            p.file_stem().expect("stem").to_string_lossy().into_owned()
        })
        .collect();
    on_disk.sort();
    let mut checked: Vec<String> = checks::TARGETS
        .iter()
        .map(|(n, _)| (*n).to_owned())
        .collect();
    checked.sort();
    assert_eq!(on_disk, checked);
}
