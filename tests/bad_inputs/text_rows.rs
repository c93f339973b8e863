//! Rows of the `text_rows` area: prompts, reranking and text-model architectures (issue
//! 15). The tiny text models of `cargo xtask setup` are copied into the fixture's models
//! root with their catalog specs; the demo tiny BERT stands for a model with no prompts
//! and no classification head.

use dp_manager::preset::PresetInputs;

use super::*;

/// The setup's model `name` (role folder `role`), copied with its catalog spec.
fn copy_model(fx: &Fixture, role: &str, name: &str) {
    let from = dp_tests::workspace_root()
        .join(".dp-assets/models")
        .join(name);
    dp_tests::copy_dir(&from, &fx.model_file(name)).unwrap();
    let spec = dp_tests::sample_catalog().join(format!("{role}/{name}.yaml"));
    fx.spec_file(
        role,
        &format!("{name}.yaml"),
        &fs::read_to_string(spec).unwrap(),
    );
}

fn tiny_xlmr_e5(fx: &Fixture) {
    copy_model(fx, "text_embedding", "tiny-xlmr-e5");
}

fn tiny_reranker(fx: &Fixture) {
    copy_model(fx, "reranking", "tiny-reranker");
}

/// A rerank request of `query` and `documents` through the task API.
fn rerank_task(model: &str, query: &str, documents: &[&str]) -> TaskRequest {
    TaskRequest::new(
        TaskType::Rerank,
        model,
        Some(TaskData::QueryWithDocuments {
            query: query.to_owned(),
            documents: documents.iter().map(|d| (*d).to_owned()).collect(),
        }),
    )
}

#[allow(clippy::too_many_lines, reason = "the table is one list of rows")]
pub(super) fn rows() -> Vec<Case> {
    use ErrorCode as C;
    vec![
        Case {
            name: "unknown_prompt_name",
            needs: Needs::TinyText,
            setup: tiny_xlmr_e5,
            action: |fx| {
                fx.manager()?
                    .embed_with_prompt("tiny-xlmr-e5", &["a text"], Some("question"))
                    .map(drop)
                    .map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &[
                "\"question\"",
                "passage, query",
                "preprocess_params.prompts",
            ],
        },
        Case {
            name: "prompt_for_a_model_without_prompts",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| {
                let mut task = TaskRequest::new(
                    TaskType::Embedding,
                    TINY_BERT,
                    Some(TaskData::Texts(vec!["a".to_owned()])),
                );
                task.options
                    .insert("prompt_name".to_owned(), json!("query"));
                fx.manager()?.task(task).map(drop).map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["\"query\"", "defines none"],
        },
        Case {
            name: "spec_prompt_contradicting_the_models_file",
            needs: Needs::TinyText,
            setup: |fx| {
                tiny_xlmr_e5(fx);
                let path = fx.root().join("catalog/text_embedding/tiny-xlmr-e5.yaml");
                let text = fs::read_to_string(&path).unwrap().replace(
                    "preprocess_preset: sentence_embedding",
                    "preprocess_preset: sentence_embedding\npreprocess_params:\n  prompts:\n    query: \"Query: \"",
                );
                fs::write(path, text).unwrap();
            },
            action: |fx| {
                fx.manager()?
                    .embed("tiny-xlmr-e5", &["a text"])
                    .map(drop)
                    .map_err(Refusal::from)
            },
            code: C::InvalidSpec,
            says: &[
                "prompts.query",
                "config_sentence_transformers.json",
                "make them agree",
            ],
        },
        Case {
            name: "rerank_without_a_query",
            needs: Needs::TinyText,
            setup: tiny_reranker,
            action: |fx| {
                let task = rerank_task("tiny-reranker", " ", &["a document"]);
                fx.manager()?.task(task).map(drop).map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["needs a query"],
        },
        Case {
            name: "rerank_without_documents",
            needs: Needs::TinyText,
            setup: tiny_reranker,
            action: |fx| {
                let task = rerank_task("tiny-reranker", "a query", &[]);
                fx.manager()?.task(task).map(drop).map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["at least one document"],
        },
        Case {
            name: "rerank_with_an_embedding_model",
            needs: Needs::Nothing,
            setup: Fixture::tiny_bert,
            action: |fx| {
                let task = rerank_task(TINY_BERT, "a query", &["a document"]);
                fx.manager()?.task(task).map(drop).map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["sentence_embedding", "does not take a query with documents"],
        },
        Case {
            name: "cross_encoder_preset_on_a_model_without_a_classification_head",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                let mut spec = Fixture::tiny_bert_spec();
                spec["role"] = "reranking".into();
                spec["preprocess_preset"] = "cross_encoder".into();
                spec["preprocess_params"] = json!({});
                spec["output_schema"] = json!([]);
                fx.spec_json(&spec);
            },
            action: |fx| {
                fx.manager()?
                    .rerank(TINY_BERT, "a query", &["a document"])
                    .map(drop)
                    .map_err(Refusal::from)
            },
            code: C::InvalidSpec,
            says: &[
                "config.json",
                "classification head",
                "sentence_embedding preset",
            ],
        },
        Case {
            name: "top_k_of_zero",
            needs: Needs::TinyText,
            setup: tiny_reranker,
            action: |fx| {
                let mut task = rerank_task("tiny-reranker", "a query", &["a document"]);
                task.options.insert("top_k".to_owned(), json!(0));
                fx.manager()?.task(task).map(drop).map_err(Refusal::from)
            },
            code: C::InvalidInput,
            says: &["top_k must be a positive integer"],
        },
        Case {
            name: "config_json_with_an_unknown_model_type",
            needs: Needs::Nothing,
            setup: |fx| {
                fx.copy_tiny_bert();
                let path = fx.model_file("tiny-bert/config.json");
                let mut config: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
                config["model_type"] = "mamba".into();
                fs::write(&path, config.to_string()).unwrap();
                fx.pin_tiny_bert_as_is();
            },
            action: |fx| {
                fx.manager()?
                    .run_preset(TINY_BERT, PresetInputs::Texts(&["a"]))
                    .map(drop)
                    .map_err(Refusal::from)
            },
            code: C::InvalidSpec,
            says: &["config.json", "'mamba'", "xlm-roberta", "engine onnx"],
        },
    ]
}
