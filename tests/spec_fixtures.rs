//! Spec validation against the fixtures in `tests/data`: the sample catalog is valid, and
//! every invalid file yields exactly the expected error code, pointer and line:column.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use dp_spec::{Catalog, ErrorCode, Layer, ParseLimits, SourceDocument, resolve, validate_document};
use dp_tests::{data_dir, sample_catalog, workspace_root};
use serde::Deserialize;

#[derive(Debug, Deserialize, PartialEq)]
struct Expected {
    error_code: ErrorCode,
    pointer: String,
    line: Option<usize>,
    column: Option<usize>,
}

fn validate_file(path: &Path) -> Result<dp_spec::ModelSpec, Vec<dp_spec::Diagnostic>> {
    let doc = SourceDocument::read(path, ParseLimits::default()).map_err(|e| vec![e.into()])?;
    validate_document(&doc)
}

#[test]
fn sample_catalog_is_valid_and_covers_the_inventory() {
    let catalog = Catalog::load(&sample_catalog()).unwrap_or_else(|d| panic!("{d:#?}"));
    assert!(catalog.len() >= 18, "catalog has {} models", catalog.len());
    for role in [
        "text_embedding",
        "image_embedding",
        "depth_estimation",
        "optical_flow",
        "object_detection",
        "scene_classification",
        "speech_recognition",
        "speaker_diarization",
        "emotion_diarization",
        "source_separation",
        "audio_embedding",
    ] {
        assert!(
            catalog.with_role(role).next().is_some(),
            "no model for role {role}"
        );
    }
    let minilm = catalog.get("minilm").expect("alias resolves");
    assert_eq!(minilm.spec.model_name, "all-minilm-l6-v2");
    assert_eq!(
        minilm.spec.weights_digest.map(|d| d.to_string()).as_deref(),
        Some("sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
    );
    assert!(catalog.get("all-minilm-l6-v2-onnx").is_some());
    assert!(catalog.get("no-such-model").is_none());
}

#[test]
fn every_invalid_fixture_yields_its_expected_diagnostic() {
    let expected: BTreeMap<String, Vec<Expected>> = serde_json::from_str(
        &fs::read_to_string(data_dir().join("invalid-specs.expected.json")).expect("readable"),
    )
    .expect("valid expectations");
    let dir = data_dir().join("invalid-specs");
    let mut files: Vec<String> = fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        expected.keys().cloned().collect::<Vec<_>>(),
        "every fixture has an expectation and vice versa"
    );
    assert!(files.len() >= 30);
    for name in files {
        let diagnostics = validate_file(&dir.join(&name)).expect_err(&name);
        let got: Vec<Expected> = diagnostics
            .iter()
            .map(|d| Expected {
                error_code: d.error_code,
                pointer: d.pointer.clone(),
                line: d.line,
                column: d.column,
            })
            .collect();
        assert_eq!(got, expected[&name], "{name}: {diagnostics:#?}");
        for d in &diagnostics {
            assert!(
                d.message.len() > 20,
                "{name}: message too terse: {}",
                d.message
            );
            assert!(d.file.ends_with(&name));
        }
    }
}

/// File name, a phrase its message contains, and its (line, column).
type UnreadableCase = (&'static str, &'static str, Option<(usize, usize)>);

#[test]
fn unreadable_files_fail_at_parse_level_with_position() {
    let dir = data_dir().join("unreadable-specs");
    let cases: &[UnreadableCase] = &[
        ("alias-bomb.yaml", "alias bomb", Some((6, 10))),
        ("custom-tag.yaml", "unsupported YAML tag", Some((9, 12))),
        ("deep-nesting.json", "recursion limit", Some((1, 159))),
        ("deep-nesting.yaml", "deeper than 64", Some((23, 68))),
        (
            "duplicate-key.yaml",
            "duplicate key \"precision\"",
            Some((10, 1)),
        ),
        ("infinite-number.yaml", "not a finite number", Some((22, 7))),
        ("invalid-yaml.yaml", "invalid YAML", Some((10, 14))),
        ("not-utf8.yaml", "not valid UTF-8", None),
        ("trailing-comma.json", "trailing comma", Some((3, 1))),
        ("two-documents.yaml", "exactly one document", Some((22, 1))),
    ];
    let mut on_disk: Vec<String> = fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, cases.iter().map(|c| c.0).collect::<Vec<_>>());
    for (name, needle, position) in cases {
        let started = std::time::Instant::now();
        let diagnostics = validate_file(&dir.join(name)).expect_err(name);
        assert!(
            started.elapsed().as_secs() < 2,
            "{name} took {:?}",
            started.elapsed()
        );
        assert_eq!(diagnostics.len(), 1, "{name}: {diagnostics:#?}");
        let d = &diagnostics[0];
        assert_eq!(d.error_code, ErrorCode::InvalidSpec, "{name}");
        assert!(d.message.contains(needle), "{name}: {}", d.message);
        assert_eq!(d.line.zip(d.column), *position, "{name}");
    }
}

/// Writes a catalog of `(relative path, text)` files into a temp dir.
fn temp_catalog(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, text).expect("write");
    }
    dir
}

fn minimal_spec(name: &str, role: &str, extra: &str) -> String {
    format!(
        "model_name: {name}\nmodel_version: \"1\"\nrole: {role}\nruntime: triton\nengine: onnx\n\
         triton:\n  endpoint: http://127.0.0.1:8000\n  model_name: {name}\n{extra}"
    )
}

#[test]
fn catalog_rejects_duplicate_names_alias_clashes_and_misplaced_files() {
    let dir = temp_catalog(&[
        ("a/one.yaml", minimal_spec("one", "a", "aliases: [uno, two]\n")),
        ("b/two.yaml", minimal_spec("two", "b", "")),
        ("b/one.json", r#"{"model_name":"one","model_version":"1","role":"b","runtime":"triton","engine":"onnx","triton":{"endpoint":"http://127.0.0.1:8000","model_name":"x"}}"#.to_owned()),
        ("c/three.yaml", minimal_spec("three", "c", "aliases: [uno]\n")),
        ("d/four.yaml", minimal_spec("four", "elsewhere", "")),
        ("d/five.yaml", minimal_spec("not-five", "d", "")),
        ("loose.yaml", minimal_spec("loose", "a", "")),
    ]);
    let diagnostics = Catalog::load(dir.path()).expect_err("invalid catalog");
    let summary: Vec<(String, String, Option<usize>)> = diagnostics
        .iter()
        .map(|d| {
            let file = d
                .file
                .strip_prefix(dir.path())
                .expect("inside")
                .display()
                .to_string();
            (file, d.pointer.clone(), d.line)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            // `one` is declared in a/one.yaml first (byte order), so b/one.json is the duplicate.
            ("a/one.yaml".to_owned(), "/aliases/1".to_owned(), Some(9)),
            ("b/one.json".to_owned(), "/model_name".to_owned(), Some(1)),
            ("c/three.yaml".to_owned(), "/aliases/0".to_owned(), Some(9)),
            ("d/five.yaml".to_owned(), "/model_name".to_owned(), Some(1)),
            ("d/four.yaml".to_owned(), "/role".to_owned(), Some(3)),
            ("loose.yaml".to_owned(), String::new(), None),
        ],
        "{diagnostics:#?}"
    );
    assert!(
        diagnostics
            .iter()
            .all(|d| d.error_code == ErrorCode::InvalidSpec)
    );
    assert!(
        diagnostics[0]
            .message
            .contains("clashes with model \"two\"")
    );
}

#[test]
fn layers_apply_in_order_and_blame_the_layer_that_broke_a_spec() {
    let dir = temp_catalog(&[
        ("a/one.yaml", minimal_spec("one", "a", "tier: 2\n")),
        ("a/two.yaml", minimal_spec("two", "a", "aliases: [deux]\n")),
    ]);
    let catalog = Catalog::load(dir.path()).expect("valid");
    let profile_path = dir.path().join("profile.yaml");
    fs::write(
        &profile_path,
        "profile: test\nmodels:\n  one:\n    tier: 1\n    precision: fp16\n  deux:\n    tier: 0\n",
    )
    .expect("write");
    let profile = Layer::read_profile(&profile_path).expect("valid profile");
    let overrides = Layer::from_overrides(&["one.tier=0"]).expect("valid overrides");
    let resolved = resolve(&catalog, &[profile.clone(), overrides]).expect("valid layers");
    let one = &resolved.catalog.get("one").expect("one").spec;
    assert_eq!(one.tier, 0, "explicit override beats the profile");
    assert_eq!(
        one.precision,
        dp_spec::Precision::Fp16,
        "profile beats the catalog"
    );
    assert_eq!(
        resolved.catalog.get("two").expect("two").spec.tier,
        0,
        "alias keys apply"
    );
    assert_eq!(
        resolved.provenance["one"],
        vec!["profile test".to_owned(), "overrides".to_owned()]
    );

    // A profile that breaks a spec is blamed at its own line.
    fs::write(
        &profile_path,
        "profile: bad\nmodels:\n  one:\n    engine: candle\n  ghost:\n    tier: 1\n",
    )
    .expect("write");
    let bad = Layer::read_profile(&profile_path).expect("schema-valid profile");
    let diagnostics = resolve(&catalog, &[bad]).expect_err("breaks the spec");
    let got: Vec<(ErrorCode, String, Option<usize>)> = diagnostics
        .iter()
        .map(|d| (d.error_code, d.pointer.clone(), d.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (ErrorCode::UnsupportedEngine, "/engine".to_owned(), Some(4)),
            (
                ErrorCode::ModelNotFound,
                "/models/ghost".to_owned(),
                Some(5)
            ),
        ],
        "{diagnostics:#?}"
    );
    assert!(diagnostics.iter().all(|d| d.file == profile_path));

    // A profile may not rename a model, nor name a field specs do not have.
    fs::write(
        &profile_path,
        "profile: bad\nmodels:\n  one:\n    model_name: x\n    colour: red\n",
    )
    .expect("write");
    let diagnostics = Layer::read_profile(&profile_path).expect_err("invalid profile");
    assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
    assert!(diagnostics.iter().all(|d| d.line.is_some()));
}

#[test]
fn sample_profiles_layer_cleanly() {
    let catalog = Catalog::load(&sample_catalog()).expect("valid");
    let profiles = workspace_root().join("specs").join("profiles");
    let mut layers = Vec::new();
    for name in ["gpu.yaml", "cpu-only.yaml"] {
        layers.push(Layer::read_profile(&profiles.join(name)).unwrap_or_else(|d| panic!("{d:#?}")));
    }
    let resolved = resolve(&catalog, &layers).unwrap_or_else(|d| panic!("{d:#?}"));
    let minilm = &resolved
        .catalog
        .get("all-minilm-l6-v2")
        .expect("present")
        .spec;
    assert_eq!(
        minilm.device_policy,
        dp_spec::DevicePolicy::Cpu,
        "cpu-only is applied last"
    );
}
