//! `dp verify` end to end on a real catalog and models root: each kind of drift reported
//! precisely, `version_drift` for locked models, exit codes, a lock file that survives
//! `SIGKILL` at any moment, and concurrent `--lock` runs that take turns.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use dp_digest::{LockFile, ManifestOptions, WeightsDigest, manifest_of_artifacts};
use serde_json::Value;

/// A catalog with one model `tiny` whose pin covers `tiny/model.onnx` and whose second
/// artifact is the directory `tiny/assets`.
struct Fixture {
    dir: tempfile::TempDir,
}

const ARTIFACTS: [&str; 2] = ["tiny/model.onnx", "tiny/assets"];

impl Fixture {
    fn new(asset_files: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Self { dir };
        let models = fixture.models();
        std::fs::create_dir_all(models.join("tiny/assets/sub")).expect("mkdir");
        std::fs::write(models.join("tiny/model.onnx"), b"weights").expect("write");
        std::fs::write(models.join("tiny/assets/vocab.txt"), b"hello\nworld\n").expect("write");
        std::fs::write(models.join("tiny/assets/sub/config.json"), b"{}").expect("write");
        for i in 0..asset_files {
            let path = models.join(format!(
                "tiny/assets/many/shard-{:02}/file-{i:04}.bin",
                i % 16
            ));
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, format!("file {i}").repeat(i % 7 + 1)).expect("write");
        }
        let pin = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Sha256, b"weights");
        let spec = format!(
            "model_name: tiny\nmodel_version: \"1.0.0\"\nrole: text_embedding\nruntime: inprocess\n\
             engine: onnx\nlocal_artifacts:\n  - {}\n  - {}\nweights_digest: {pin}\n",
            ARTIFACTS[0], ARTIFACTS[1]
        );
        let spec_dir = fixture.catalog().join("text_embedding");
        std::fs::create_dir_all(&spec_dir).expect("mkdir");
        std::fs::write(spec_dir.join("tiny.yaml"), spec).expect("write");
        fixture
    }

    fn catalog(&self) -> PathBuf {
        self.dir.path().join("specs/catalog")
    }

    fn models(&self) -> PathBuf {
        self.dir.path().join("models")
    }

    /// The default lock file: beside the catalog.
    fn lock_file(&self) -> PathBuf {
        self.dir.path().join("specs/catalog.lock")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dp"));
        cmd.env_remove("DP_CATALOG")
            .env_remove("DP_MODELS_ROOT")
            .env(
                "DP_VERIFY_CACHE",
                self.dir.path().join("state/verify-cache.json"),
            )
            .arg("--catalog")
            .arg(self.catalog())
            .arg("--models-root")
            .arg(self.models())
            .args(args);
        cmd
    }

    fn dp(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("dp runs")
    }

    /// `dp verify --json ARGS`: the exit code and the report of model `tiny`.
    fn verify(&self, args: &[&str]) -> (Option<i32>, Value) {
        let mut all = vec!["verify", "--json"];
        all.extend_from_slice(args);
        let out = self.dp(&all);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let model = json["models"]
            .as_array()
            .and_then(|m| m.first())
            .cloned()
            .unwrap_or(json);
        (out.status.code(), model)
    }

    fn lock(&self) {
        let (code, model) = self.verify(&["--lock"]);
        assert_eq!(code, Some(0), "{model:#}");
        assert_eq!(model["lock_written"], true);
    }

    /// The aggregate of the model's artifacts as they are now.
    fn aggregate(&self) -> WeightsDigest {
        let artifacts: Vec<String> = ARTIFACTS.iter().map(|a| (*a).to_owned()).collect();
        manifest_of_artifacts(&self.models(), &artifacts, &ManifestOptions::default())
            .expect("manifest")
            .aggregate
    }
}

fn drift(model: &Value) -> (Vec<String>, Vec<String>, Vec<String>) {
    let list = |key: &str| -> Vec<String> {
        model["drift"][key]
            .as_array()
            .unwrap_or_else(|| panic!("no drift.{key} in {model:#}"))
            .iter()
            .map(|v| v.as_str().expect("path").to_owned())
            .collect()
    };
    (list("added"), list("removed"), list("changed"))
}

fn assert_version_drift(code: Option<i32>, model: &Value) {
    assert_eq!(code, Some(3), "{model:#}");
    assert_eq!(model["status"], "drift");
    assert_eq!(model["error"]["error_code"], "version_drift");
}

#[test]
fn unlocked_then_locked_model_verifies_ok_and_the_lock_file_is_written() {
    let f = Fixture::new(0);
    let (code, model) = f.verify(&[]);
    assert_eq!(code, Some(0), "{model:#}");
    assert_eq!(model["status"], "ok");
    assert_eq!(model["locked"], false);
    assert!(
        !f.lock_file().exists(),
        "plain verify never writes the lock"
    );

    f.lock();
    let lock = LockFile::read(&f.lock_file()).expect("lock parses");
    let entry = &lock.models["tiny"];
    assert_eq!(entry.aggregate, f.aggregate());
    assert_eq!(entry.model_version, "1.0.0");
    let paths: Vec<&str> = entry.files.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "tiny/assets/sub/config.json",
            "tiny/assets/vocab.txt",
            "tiny/model.onnx"
        ]
    );

    let (code, model) = f.verify(&[]);
    assert_eq!(code, Some(0), "{model:#}");
    assert_eq!(model["locked"], true);
    assert_eq!(drift(&model), (vec![], vec![], vec![]));
    // The second run read nothing: every digest came from the verification cache.
    assert_eq!(model["hashed_files"], 0);
    assert_eq!(model["cached_files"], 3);
    let (_, strict) = f.verify(&["--strict"]);
    assert_eq!(strict["hashed_files"], 3);

    let text = f.dp(&["verify"]);
    assert_eq!(text.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&text.stdout).starts_with("ok "));
}

#[test]
fn one_changed_byte_is_reported_as_changed() {
    let f = Fixture::new(0);
    f.lock();
    // Same size, one byte different.
    std::fs::write(f.models().join("tiny/assets/vocab.txt"), b"hello\nworle\n").expect("write");
    let (code, model) = f.verify(&[]);
    assert_version_drift(code, &model);
    assert_eq!(
        drift(&model),
        (vec![], vec![], vec!["tiny/assets/vocab.txt".to_owned()])
    );
}

#[test]
fn an_added_file_is_reported_as_added() {
    let f = Fixture::new(0);
    f.lock();
    std::fs::write(f.models().join("tiny/assets/sub/extra.bin"), b"new").expect("write");
    let (code, model) = f.verify(&[]);
    assert_version_drift(code, &model);
    assert_eq!(
        drift(&model),
        (vec!["tiny/assets/sub/extra.bin".to_owned()], vec![], vec![])
    );
}

#[test]
fn a_removed_file_is_reported_as_removed() {
    let f = Fixture::new(0);
    f.lock();
    std::fs::remove_file(f.models().join("tiny/assets/sub/config.json")).expect("rm");
    let (code, model) = f.verify(&[]);
    assert_version_drift(code, &model);
    assert_eq!(
        drift(&model),
        (
            vec![],
            vec!["tiny/assets/sub/config.json".to_owned()],
            vec![]
        )
    );
}

#[test]
fn a_file_replaced_by_a_symlink_leaving_the_tree_is_reported_as_changed() {
    let f = Fixture::new(0);
    f.lock();
    let outside = f.dir.path().join("outside.txt");
    // Same bytes as the file it replaces: only the link itself is wrong.
    std::fs::write(&outside, b"hello\nworld\n").expect("write");
    let link = f.models().join("tiny/assets/vocab.txt");
    std::fs::remove_file(&link).expect("rm");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink");
    let (code, model) = f.verify(&[]);
    assert_version_drift(code, &model);
    assert_eq!(
        drift(&model),
        (vec![], vec![], vec!["tiny/assets/vocab.txt".to_owned()])
    );
    let rejected = &model["rejected"][0];
    assert_eq!(rejected["path"], "tiny/assets/vocab.txt");
    assert!(
        rejected["problem"]
            .as_str()
            .is_some_and(|p| p.contains(&outside.display().to_string())),
        "the problem names the link's target: {rejected:#}"
    );
    // Such a tree cannot be locked: the lock keeps the previous state.
    let before = std::fs::read(f.lock_file()).expect("read");
    let (code, model) = f.verify(&["--lock"]);
    assert_eq!(code, Some(3), "{model:#}");
    assert_eq!(model["lock_written"], false);
    assert_eq!(std::fs::read(f.lock_file()).expect("read"), before);
}

#[test]
fn the_pin_takes_precedence_and_missing_artifacts_are_weights_missing() {
    let f = Fixture::new(0);
    f.lock();
    std::fs::write(f.models().join("tiny/model.onnx"), b"weightz").expect("write");
    let (code, model) = f.verify(&[]);
    assert_eq!(code, Some(3));
    assert_eq!(model["status"], "digest_mismatch");
    assert_eq!(model["error"]["error_code"], "weights_digest_mismatch");
    assert_eq!(model["pin"]["artifact"], "tiny/model.onnx");

    std::fs::remove_file(f.models().join("tiny/model.onnx")).expect("rm");
    let (code, model) = f.verify(&[]);
    assert_eq!(code, Some(3));
    assert_eq!(model["error"]["error_code"], "weights_missing");
    assert_eq!(model["missing"], serde_json::json!(["tiny/model.onnx"]));
}

#[test]
fn lock_accepts_drift_and_bad_input_exits_2() {
    let f = Fixture::new(0);
    f.lock();
    std::fs::write(f.models().join("tiny/assets/sub/extra.bin"), b"new").expect("write");
    assert_eq!(f.verify(&[]).0, Some(3));
    f.lock();
    let (code, model) = f.verify(&["tiny"]);
    assert_eq!(code, Some(0), "{model:#}");
    assert_eq!(
        LockFile::read(&f.lock_file()).expect("lock").models["tiny"].aggregate,
        f.aggregate()
    );

    let (code, json) = f.verify(&["no-such-model"]);
    assert_eq!(code, Some(2));
    assert_eq!(json["errors"][0]["error_code"], "model_not_found");

    // A malformed lock file is an error naming it, and is never replaced.
    std::fs::write(f.lock_file(), b"{ \"version\": 1, \"models\": ").expect("write");
    let (code, json) = f.verify(&["--lock"]);
    assert_eq!(code, Some(2), "{json:#}");
    assert_eq!(json["errors"][0]["error_code"], "invalid_input");
    assert_eq!(
        std::fs::read(f.lock_file()).expect("read"),
        b"{ \"version\": 1, \"models\": "
    );
}

/// xorshift64*: enough randomness for kill delays, without a dependency.
struct Delays(u64);

impl Delays {
    fn next_below(&mut self, bound: Duration) -> Duration {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let nanos = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX).max(1);
        Duration::from_nanos(r % nanos)
    }
}

#[test]
fn sigkill_at_random_moments_always_leaves_a_complete_lock_file() {
    /// Runs killed by SIGKILL before the test ends (runs that finish first don't count).
    const KILLS: usize = 100;
    /// Gives up if the kills keep arriving too late.
    const MAX_RUNS: usize = 400;
    // Enough files that the lock file (~60 KB) takes a while to render and write.
    let f = Fixture::new(400);
    let churn = f.models().join("tiny/assets/churn.txt");
    std::fs::write(&churn, b"run -1").expect("write");
    f.lock();
    // How long one complete `--lock` like those below takes (the median of three), to
    // spread the kills over its whole life.
    let mut calibration: Vec<Duration> = (0..3)
        .map(|i| {
            std::fs::write(&churn, format!("calibration {i}")).expect("write");
            let started = Instant::now();
            f.lock();
            started.elapsed()
        })
        .collect();
    calibration.sort();
    let full = calibration[1];
    let mut expected_previous = f.aggregate();
    assert_eq!(
        LockFile::read(&f.lock_file()).expect("lock").models["tiny"].aggregate,
        expected_previous
    );

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| {
            u64::try_from(d.as_nanos() & 0xffff_ffff_ffff).unwrap_or(1)
        })
        | 1;
    let mut delays = Delays(seed);
    let (mut runs, mut killed, mut completed) = (0, 0, 0);
    let (mut new_state, mut killed_after_replacing) = (0, 0);
    while killed < KILLS {
        assert!(
            runs < MAX_RUNS,
            "only {killed} of {runs} runs were killed before they ended (full run {full:?})"
        );
        let run = runs;
        runs += 1;
        // Each run locks different bytes, so "previous" and "new" are distinguishable.
        std::fs::write(&churn, format!("run {run}")).expect("write");
        let expected_new = f.aggregate();
        let mut child = f
            .command(&["verify", "--lock", "tiny"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dp starts");
        // Half the kills anywhere in the run, half in its second half, where the lock file
        // is rendered, written and renamed.
        let delay = if run % 2 == 0 {
            delays.next_below(full)
        } else {
            full / 2 + delays.next_below(full / 2)
        };
        std::thread::sleep(delay);
        // SIGKILL; a process that already exited is left as it is.
        let _ = child.kill();
        let status = child.wait().expect("wait");
        let was_killed = status.signal() == Some(9);
        if was_killed {
            killed += 1;
        } else {
            assert!(status.success(), "run {run} failed: {status}");
            completed += 1;
        }
        let lock = LockFile::read(&f.lock_file())
            .unwrap_or_else(|e| panic!("run {run} (seed {seed}) left a broken lock file: {e}"));
        let found = lock.models["tiny"].aggregate;
        assert!(
            found == expected_previous || found == expected_new,
            "run {run} (seed {seed}): the lock holds {found}, neither the previous \
             {expected_previous} nor the new {expected_new}"
        );
        if found == expected_new {
            new_state += 1;
            killed_after_replacing += usize::from(was_killed);
            expected_previous = expected_new;
        }
    }
    eprintln!(
        "{runs} runs (full run {full:?}, seed {seed}): {killed} killed ({killed_after_replacing} \
         after replacing the file), {completed} completed; {new_state} left the new state, \
         the others the previous one"
    );
    // Leftover temp files of killed writers are cleaned by the next locker.
    f.lock();
    let leftovers: Vec<_> = std::fs::read_dir(f.lock_file().parent().expect("dir"))
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "stale temp files: {leftovers:?}");
}

#[test]
fn default_lock_file_is_beside_the_catalog() {
    let f = Fixture::new(0);
    f.lock();
    assert!(f.lock_file().exists());
    let custom = f.dir.path().join("elsewhere.lock");
    let out = f.dp(&[
        "verify",
        "--lock",
        "--lock-file",
        custom.to_str().expect("UTF-8"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        LockFile::read(&custom)
            .expect("lock")
            .models
            .contains_key("tiny")
    );
}

/// One `dp verify --lock MODEL` run with debug logs of the lock file's lock, as JSON lines.
struct LockRun {
    child: std::process::Child,
    log: PathBuf,
}

impl LockRun {
    fn start(f: &Fixture, model: &str) -> Self {
        let log = f.dir.path().join(format!("{model}.log"));
        let child = f
            .command(&["--log-format", "json", "verify", "--lock", model])
            .env("RUST_LOG", "dp_digest::lock=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("dp starts");
        Self { child, log }
    }

    /// The `timestamp` of the log event `event` (RFC 3339, UTC, fixed width: comparable as
    /// strings), if it was logged.
    fn logged(&self, event: &str) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|json| json["fields"]["event"] == event)
            .map(|json| {
                let at = json["timestamp"].as_str().expect("timestamp").to_owned();
                assert!(at.ends_with('Z') && at.len() >= 27, "timestamp {at:?}");
                at
            })
    }
}

#[test]
fn concurrent_lock_runs_take_turns() {
    let f = Fixture::new(0);
    // A second model, so that each run writes its own entry: a run that did not re-read
    // the file under the lock would drop the other's.
    std::fs::create_dir_all(f.models().join("other")).expect("mkdir");
    std::fs::write(f.models().join("other/model.onnx"), b"weights").expect("write");
    let pin = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Sha256, b"weights");
    std::fs::write(
        f.catalog().join("text_embedding/other.yaml"),
        format!(
            "model_name: other\nmodel_version: \"2.0.0\"\nrole: text_embedding\n\
             runtime: inprocess\nengine: onnx\nlocal_artifacts: [other/model.onnx]\n\
             weights_digest: {pin}\n"
        ),
    )
    .expect("write spec");

    // Hold the lock ourselves (the same flock `dp` takes), so both runs reach it together.
    let sidecar = f.dir.path().join("specs/catalog.lock.lck");
    let ours = std::fs::File::create(&sidecar).expect("sidecar");
    ours.lock().expect("lock");
    let mut runs = [LockRun::start(&f, "tiny"), LockRun::start(&f, "other")];
    let deadline = Instant::now() + Duration::from_secs(60);
    while !runs.iter().all(|r| r.logged("lock_file_wait").is_some()) {
        assert!(
            Instant::now() < deadline,
            "the runs never waited for the lock"
        );
        for run in &mut runs {
            assert!(
                run.child.try_wait().expect("wait").is_none(),
                "a run ended while the lock was held: {}",
                std::fs::read_to_string(&run.log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !f.lock_file().exists(),
        "a run wrote the lock file without holding its lock"
    );
    drop(ours);

    let mut spans = Vec::new();
    for run in &mut runs {
        let status = run.child.wait().expect("wait");
        let log = std::fs::read_to_string(&run.log).unwrap_or_default();
        assert!(status.success(), "{status}: {log}");
        let acquired = run.logged("lock_file_acquired").expect(&log);
        let released = run.logged("lock_file_released").expect(&log);
        assert!(acquired <= released, "{log}");
        spans.push((acquired, released));
    }
    // Their critical sections did not overlap: one released before the other acquired.
    let [(a_in, a_out), (b_in, b_out)] = [&spans[0], &spans[1]];
    assert!(
        a_out <= b_in || b_out <= a_in,
        "overlapping critical sections: tiny {a_in}..{a_out}, other {b_in}..{b_out}"
    );
    eprintln!("lock held by tiny {a_in}..{a_out}, by other {b_in}..{b_out}");
    // Neither lost the other's entry, and the file is complete.
    let lock = LockFile::read(&f.lock_file()).expect("a valid lock file");
    let names: Vec<&str> = lock.models.keys().map(String::as_str).collect();
    assert_eq!(names, ["other", "tiny"]);
    assert_eq!(lock.models["tiny"].aggregate, f.aggregate());
    assert_eq!(lock.models["other"].model_version, "2.0.0");
}
