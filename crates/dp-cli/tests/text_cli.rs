//! `dp rerank`, `dp embed --prompt` and `dp health` on the tiny text models that
//! `cargo xtask setup` makes, checked against the sentence-transformers references in
//! `tests/data/reference/text/`; plus the errors a user meets (an unknown prompt, an
//! embedding model asked to rerank, a `config.json` with an unknown `model_type`).

#![allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]

use std::path::{Path, PathBuf};
use std::process::Output;

use dp_tests::cli::{assert_exit, json};
use serde_json::Value;

fn workspace_root() -> PathBuf {
    dp_tests::workspace_root()
}

/// Runs `dp` with `catalog` and `models`, a private verify cache.
fn dp_in(catalog: &Path, models: &Path, args: &[&str]) -> Output {
    let scratch = tempfile::tempdir().unwrap();
    dp_tests::cli::command(env!("CARGO_BIN_EXE_dp"), catalog, models, scratch.path())
        .args(args)
        .output()
        .unwrap()
}

/// Runs `dp` on the real catalog and the setup's models.
fn dp(args: &[&str]) -> Output {
    dp_in(
        &workspace_root().join("specs/catalog"),
        &workspace_root().join(".dp-assets/models"),
        args,
    )
}

fn reference(name: &str) -> Value {
    let path = dp_tests::data_dir().join(format!("reference/text/{name}.json"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The setup's model folder `name`, or `None` (a failure under CI=true) without it.
fn model_dir(name: &str, test: &str) -> Option<PathBuf> {
    dp_tests::asset(&format!("models/{name}"), test)
}

#[test]
fn dp_rerank_scores_documents_as_cross_encoder_does() {
    let test = "dp_rerank_scores_documents_as_cross_encoder_does";
    if model_dir("tiny-reranker", test).is_none() {
        return;
    }
    let reference = reference("tiny-reranker");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("documents.json");
    std::fs::write(&input, reference["documents"].to_string()).unwrap();
    let query = reference["query"].as_str().unwrap();
    let out = dp(&[
        "--json",
        "rerank",
        "--model",
        "tiny-reranker",
        "--query",
        query,
        "--input",
        input.to_str().unwrap(),
        "--top-k",
        "3",
    ]);
    assert_exit(&out, 0);
    let doc = json(&out);
    assert_eq!(doc["models_used"][0]["model_name"], "tiny-reranker");
    assert_eq!(doc["models_used"][0]["preprocess_preset"], "cross_encoder");
    assert!(doc["model_signature"].as_str().unwrap().starts_with("dp2:"));
    let scores = floats(&doc["scores"]);
    let want = floats(&reference["scores"]);
    assert_eq!(scores.len(), want.len());
    for (got, want) in scores.iter().zip(&want) {
        assert!((got - want).abs() <= 1e-4, "{got} vs {want}");
    }
    let ranking: Vec<u64> = doc["ranking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = reference["rank"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["corpus_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ranking, expected);

    // Plain output: best first, `score<TAB>index<TAB>document`.
    let out = dp(&[
        "rerank",
        "--model",
        "tiny-reranker",
        "--query",
        query,
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    let fields: Vec<&str> = first.split('\t').collect();
    assert_eq!(fields[1], expected[0].to_string(), "{first}");
    assert_eq!(text.lines().count(), want.len());
    // The long document was truncated as CrossEncoder truncates it: said so on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("truncated"), "{stderr}");
}

#[test]
fn dp_rerank_refuses_what_it_cannot_score() {
    let test = "dp_rerank_refuses_what_it_cannot_score";
    if model_dir("tiny-reranker", test).is_none() || model_dir("tiny-xlmr-e5", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("documents.txt");
    std::fs::write(&input, "one document\n").unwrap();
    let input = input.to_str().unwrap();
    let reason = |args: &[&str]| {
        let out = dp(args);
        assert_exit(&out, 2);
        let err = json(&out)["errors"][0].clone();
        (
            err["error_code"].as_str().unwrap().to_owned(),
            err["details"]["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            err["message"].as_str().unwrap().to_owned(),
        )
    };
    let (code, why, _) = reason(&[
        "--json",
        "rerank",
        "--model",
        "tiny-xlmr-e5",
        "--query",
        "q",
        "--input",
        input,
    ]);
    assert_eq!(
        (code.as_str(), why.as_str()),
        ("invalid_input", "rerank_unsupported")
    );
    let (_, why, _) = reason(&[
        "--json",
        "rerank",
        "--model",
        "tiny-reranker",
        "--query",
        "",
        "--input",
        input,
    ]);
    assert_eq!(why, "query_missing");
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "\n\n").unwrap();
    let (_, why, message) = reason(&[
        "--json",
        "rerank",
        "--model",
        "tiny-reranker",
        "--query",
        "q",
        "--input",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(why, "documents_missing", "{message}");
}

#[test]
fn dp_embed_prompt_prepends_the_models_named_prompt() {
    let test = "dp_embed_prompt_prepends_the_models_named_prompt";
    if model_dir("tiny-xlmr-e5", test).is_none() {
        return;
    }
    let reference = reference("tiny-xlmr-e5");
    let texts: Vec<Value> = reference["texts"].as_array().unwrap()[..4].to_vec();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("texts.json");
    std::fs::write(&input, Value::Array(texts).to_string()).unwrap();
    let input = input.to_str().unwrap();
    let mut signatures = Vec::new();
    for prompt in ["query", "passage"] {
        let out = dp(&[
            "--json",
            "embed",
            "--model",
            "tiny-xlmr-e5",
            "--prompt",
            prompt,
            "--input",
            input,
        ]);
        assert_exit(&out, 0);
        let doc = json(&out);
        assert_eq!(doc["models_used"][0]["prompt_name"], prompt);
        signatures.push(doc["models_used"][0]["preprocess_signature"].clone());
        for (got, want) in doc["embeddings"].as_array().unwrap().iter().zip(
            reference["outputs"][prompt]["embeddings"]
                .as_array()
                .unwrap(),
        ) {
            let (got, want) = (floats(got), floats(want));
            let d = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(d <= 1e-4, "{prompt}: max abs {d}");
        }
    }
    assert_ne!(signatures[0], signatures[1]);
    // Without --prompt: no prompt named, the reference's "none" vectors.
    let out = dp(&[
        "--json",
        "embed",
        "--model",
        "tiny-xlmr-e5",
        "--input",
        input,
    ]);
    assert_exit(&out, 0);
    assert!(json(&out)["models_used"][0].get("prompt_name").is_none());

    let out = dp(&[
        "--json",
        "embed",
        "--model",
        "tiny-xlmr-e5",
        "--prompt",
        "question",
        "--input",
        input,
    ]);
    assert_exit(&out, 2);
    let err = json(&out)["errors"][0].clone();
    assert_eq!(err["error_code"], "invalid_input");
    assert_eq!(err["details"]["reason"], "unknown_prompt");
    assert!(
        err["message"].as_str().unwrap().contains("passage, query"),
        "{err}"
    );
}

#[test]
fn dp_health_names_an_unknown_model_type_before_any_request() {
    let test = "dp_health_names_an_unknown_model_type_before_any_request";
    let Some(source) = model_dir("tiny-xlmr-e5", test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    dp_tests::copy_dir(&source, &models.join("tiny-xlmr-e5")).unwrap();
    let config = models.join("tiny-xlmr-e5/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\"xlm-roberta\"", "\"mystery-lm\"")).unwrap();
    // The catalog's spec without its all-files pin (which would catch the edit first).
    let catalog = dir.path().join("catalog/text_embedding");
    std::fs::create_dir_all(&catalog).unwrap();
    let spec = std::fs::read_to_string(
        workspace_root().join("specs/catalog/text_embedding/tiny-xlmr-e5.yaml"),
    )
    .unwrap();
    let spec: String = spec
        .lines()
        .filter(|l| !l.starts_with("artifacts_digest"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(catalog.join("tiny-xlmr-e5.yaml"), spec).unwrap();

    let out = dp_in(&dir.path().join("catalog"), &models, &["--json", "health"]);
    let report = json(&out);
    let model = &report["models"][0];
    assert_eq!(model["ready"], false, "{report}");
    assert_eq!(model["digest"], "verified");
    let problem = &model["problems"][0];
    assert_eq!(problem["error_code"], "invalid_spec");
    assert_eq!(problem["details"]["model_type"], "mystery-lm");
    let message = problem["message"].as_str().unwrap();
    assert!(message.contains("xlm-roberta"), "{message}");
    assert!(message.contains("engine onnx"), "{message}");
}
