//! The files `dp` is given on its command line: FIFOs and other special files refused
//! before they are opened (never a hang), the mode of a replaced file kept, and one rule
//! for the models root and the verification cache in every command (never a cache inside
//! the models root, a relative `XDG_CACHE_HOME` ignored, an empty `DP_MODELS_ROOT` named).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a `dp` run may take before the test calls it blocked.
const DEADLINE: Duration = Duration::from_secs(20);

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What one `dp` run gave.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// `dp` with a clean environment: no catalog, models root, cache or log settings inherited.
fn dp_command(cwd: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dp"));
    cmd.current_dir(cwd)
        .env_remove("DP_CATALOG")
        .env_remove("DP_MODELS_ROOT")
        .env_remove("DP_VERIFY_CACHE")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` and fails the test (after killing it) if it has not exited by [`DEADLINE`]:
/// a `dp` blocked on a FIFO must not hang the test suite.
fn run(mut cmd: Command) -> Run {
    let mut child = cmd.spawn().expect("dp starts");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reaped");
            panic!(
                "dp {:?} was still running after {DEADLINE:?} (blocked?); killed it. stderr: {}",
                cmd.get_args().collect::<Vec<_>>(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo runs");
    assert!(status.success(), "mkfifo {}", path.display());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// A folder with a catalog holding one model `tiny` (one small artifact, pinned) and its
/// models root `models/`.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fixture = Self { dir };
        fixture.write_model(&fixture.models());
        let pin = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Sha256, b"weights");
        let spec = format!(
            "model_name: tiny\nmodel_version: \"1.0.0\"\nrole: text_embedding\n\
             runtime: inprocess\nengine: onnx\nlocal_artifacts:\n  - tiny/model.onnx\n\
             weights_digest: {pin}\n"
        );
        let spec_dir = fixture.catalog().join("text_embedding");
        std::fs::create_dir_all(&spec_dir).expect("mkdir");
        std::fs::write(spec_dir.join("tiny.yaml"), spec).expect("write");
        fixture
    }

    /// Puts the model's one artifact under `root`.
    fn write_model(&self, root: &Path) {
        std::fs::create_dir_all(root.join("tiny")).expect("mkdir");
        std::fs::write(root.join("tiny/model.onnx"), b"weights").expect("write");
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn catalog(&self) -> PathBuf {
        self.path().join("specs/catalog")
    }

    fn models(&self) -> PathBuf {
        self.path().join("models")
    }

    /// `dp --catalog <catalog> ARGS`, run in the fixture's folder with `HOME` in it (so
    /// the default verification cache never touches the real one).
    fn dp(&self, args: &[&str]) -> Command {
        let mut cmd = dp_command(self.path());
        cmd.env("HOME", self.path().join("home"))
            .arg("--catalog")
            .arg(self.catalog())
            .args(args);
        cmd
    }
}

/// Asserts that `dp` refused `path` as not a regular file: exit 2, the path named, and
/// what it must be.
fn assert_refused_as_not_regular(what: &str, out: &Run, path: &Path) {
    assert_eq!(
        out.code,
        Some(2),
        "{what}: stdout {} stderr {}",
        out.stdout,
        out.stderr
    );
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(&path.display().to_string()),
        "{what}: the path is not named: {all}"
    );
    assert!(
        all.contains("must be a regular file"),
        "{what}: does not say what the path must be: {all}"
    );
    assert!(
        all.contains("FIFO"),
        "{what}: does not say what it is: {all}"
    );
}

#[test]
fn fifos_given_as_paths_are_refused_without_blocking() {
    let fx = Fixture::new();
    let fifo = fx.path().join("pipe.yaml");
    mkfifo(&fifo);
    let fifo_s = fifo.to_str().expect("UTF-8");
    let models_s = fx.models().to_str().expect("UTF-8").to_owned();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("dp digest FIFO", vec!["digest", fifo_s]),
        ("dp digest --json FIFO", vec!["--json", "digest", fifo_s]),
        ("dp validate FIFO", vec!["validate", fifo_s]),
        ("dp --profile FIFO list", vec!["--profile", fifo_s, "list"]),
        (
            "dp verify --lock-file FIFO",
            vec!["--models-root", &models_s, "verify", "--lock-file", fifo_s],
        ),
        (
            "dp verify --cache FIFO",
            vec!["--models-root", &models_s, "verify", "--cache", fifo_s],
        ),
        (
            "dp health --cache FIFO",
            vec!["--models-root", &models_s, "health", "--cache", fifo_s],
        ),
        ("dp sync-downloader FIFO", vec!["sync-downloader", fifo_s]),
    ];
    for (what, args) in cases {
        let out = run(fx.dp(&args));
        assert_refused_as_not_regular(what, &out, &fifo);
        if args.contains(&"--json") {
            let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
            assert_eq!(doc["errors"][0]["error_code"], "invalid_input", "{what}");
        }
    }
    // The default lock file (beside the catalog) is checked the same way.
    let default_lock = fx.path().join("specs/catalog.lock");
    mkfifo(&default_lock);
    let out = run(fx.dp(&["--models-root", &models_s, "verify"]));
    assert_refused_as_not_regular("dp verify (default lock file a FIFO)", &out, &default_lock);
    // So is `DP_VERIFY_CACHE`.
    std::fs::remove_file(&default_lock).expect("rm");
    let mut cmd = fx.dp(&["--models-root", &models_s, "verify"]);
    cmd.env("DP_VERIFY_CACHE", &fifo);
    assert_refused_as_not_regular("DP_VERIFY_CACHE=FIFO dp verify", &run(cmd), &fifo);
}

#[test]
fn a_directory_is_still_digested_as_a_manifest() {
    let fx = Fixture::new();
    let out = run(fx.dp(&["digest", fx.models().to_str().expect("UTF-8")]));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let weights = dp_digest::digest_bytes(dp_digest::DigestAlgorithm::Sha256, b"weights");
    let line = format!("{}  tiny/model.onnx", weights.hex());
    assert!(out.stdout.lines().any(|l| l == line), "{}", out.stdout);
}

#[test]
fn sync_downloader_keeps_the_mode_of_a_spec_it_updates() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let catalog = scratch.path().join("catalog");
    copy_dir_with_mode_0644(&workspace_root().join("specs/catalog"), &catalog);
    let manifest = workspace_root().join("tests/data/downloader/manifest.json");
    // Which files the import creates and updates.
    let mut plan = dp_command(scratch.path());
    plan.arg("--json")
        .arg("--catalog")
        .arg(&catalog)
        .arg("sync-downloader")
        .arg(&manifest)
        .arg("--dry-run");
    let plan = run(plan);
    assert_eq!(plan.code, Some(0), "{}", plan.stderr);
    let plan: Value = serde_json::from_str(&plan.stdout).expect("JSON");
    let file_of = |action: &str| -> PathBuf {
        plan["actions"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["action"] == action))
            .and_then(|x| x["file"].as_str())
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {action} action: {plan:#}"))
    };
    let (updated, created) = (file_of("update"), file_of("create"));
    // A mode no umask produces, so keeping it cannot be a coincidence.
    std::fs::set_permissions(&updated, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let before = std::fs::read(&updated).expect("read");

    // Under umask 022, whatever the test runner's umask is.
    let mut sh = Command::new("sh");
    sh.current_dir(scratch.path())
        .env_remove("DP_CATALOG")
        .env_remove("DP_MODELS_ROOT")
        .env("DP", env!("CARGO_BIN_EXE_dp"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .arg("-c")
        .arg("umask 022 && exec \"$DP\" \"$@\"")
        .arg("dp")
        .arg("--catalog")
        .arg(&catalog)
        .arg("sync-downloader")
        .arg(&manifest);
    let out = run(sh);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert_ne!(
        std::fs::read(&updated).expect("read"),
        before,
        "the spec was updated"
    );
    assert_eq!(
        mode(&updated),
        0o640,
        "the updated spec keeps its mode: {}",
        updated.display()
    );
    assert_eq!(
        mode(&created),
        0o644,
        "a new spec gets the umask's mode: {}",
        created.display()
    );
}

/// Copies a model folder with every file at mode 0644, whatever the checkout gave them: the
/// tests compare modes.
fn copy_dir_with_mode_0644(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir_with_mode_0644(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644))
                .expect("chmod");
        }
    }
}

#[test]
fn a_verification_cache_inside_the_models_root_is_refused() {
    let fx = Fixture::new();
    let models = fx.models();
    let models_s = models.to_str().expect("UTF-8");
    let inside = models.join("state/verify-cache.json");
    // Through a symlink that points into the models root.
    let link = fx.path().join("innocent");
    std::os::unix::fs::symlink(&models, &link).expect("symlink");
    let through_link = link.join("verify-cache.json");
    for (what, cache, command) in [
        ("dp verify --cache", &inside, "verify"),
        ("dp health --cache", &inside, "health"),
        ("dp verify --cache (symlinked)", &through_link, "verify"),
    ] {
        let out = run(fx.dp(&[
            "--models-root",
            models_s,
            command,
            "--cache",
            cache.to_str().expect("UTF-8"),
        ]));
        assert_eq!(out.code, Some(2), "{what}: {}{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains("inside the models root"),
            "{what}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&cache.display().to_string()),
            "{what}: the cache is not named: {}",
            out.stderr
        );
        assert!(out.stderr.contains("--cache"), "{what}: {}", out.stderr);
    }
    // Through the environment, with the models root from the environment too.
    let mut cmd = fx.dp(&["verify"]);
    cmd.env("DP_MODELS_ROOT", &models)
        .env("DP_VERIFY_CACHE", &inside);
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("inside the models root"),
        "{}",
        out.stderr
    );
    // The default location (XDG cache) inside the models root.
    let mut cmd = fx.dp(&["--models-root", models_s, "verify"]);
    cmd.env("XDG_CACHE_HOME", models.join("cache"));
    let out = run(cmd);
    assert_eq!(out.code, Some(2), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("inside the models root"),
        "{}",
        out.stderr
    );
    assert!(
        !models.join("state").exists() && !models.join("cache").exists(),
        "nothing was written under the models root"
    );
}

#[test]
fn a_relative_xdg_cache_home_is_ignored() {
    let fx = Fixture::new();
    let home = fx.path().join("home");
    std::fs::create_dir_all(&home).expect("mkdir");
    let mut cmd = fx.dp(&[
        "--models-root",
        fx.models().to_str().expect("UTF-8"),
        "verify",
    ]);
    cmd.env("HOME", &home)
        .env("XDG_CACHE_HOME", "relative-cache");
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        home.join(".cache/dp-models/verify-cache.json").is_file(),
        "the cache goes to $HOME/.cache when XDG_CACHE_HOME is relative"
    );
    assert!(
        !fx.path().join("relative-cache").exists(),
        "a relative XDG_CACHE_HOME was used"
    );
}

#[test]
fn an_empty_dp_models_root_is_named_as_the_environment_variable() {
    let fx = Fixture::new();
    for command in [&["verify"][..], &["health"], &["resolve", "tiny"]] {
        let mut cmd = fx.dp(command);
        cmd.env("DP_MODELS_ROOT", "");
        let out = run(cmd);
        assert_eq!(
            out.code,
            Some(2),
            "{command:?}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(
            out.stderr.contains("DP_MODELS_ROOT") && out.stderr.contains("empty"),
            "{command:?}: {}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("--models-root <"),
            "{command:?}: blames a flag that was not passed: {}",
            out.stderr
        );
    }
}

#[test]
fn every_command_falls_back_to_the_same_default_models_root() {
    let fx = Fixture::new();
    // No flag, no DP_MODELS_ROOT: `.dp-assets/models` in the current folder.
    fx.write_model(&fx.path().join(".dp-assets/models"));
    let home = fx.path().join("home");
    let mut cmd = fx.dp(&["--json", "verify"]);
    cmd.env("HOME", &home);
    let out = run(cmd);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(doc["models"][0]["status"], "ok", "{doc:#}");
    let mut cmd = fx.dp(&["--json", "health"]);
    cmd.env("HOME", &home);
    let out = run(cmd);
    let doc: Value = serde_json::from_str(&out.stdout).expect("JSON");
    let tiny = &doc["models"][0];
    assert_eq!(tiny["model_name"], "tiny", "{doc:#}");
    assert_eq!(tiny["digest"], "verified", "{doc:#}");
}
