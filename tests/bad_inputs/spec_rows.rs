//! Rows of the bad-input table for spec reading: `--set` key paths nested past the spec
//! limit, control characters that diagnostics would print raw, artifact paths that pin the
//! whole models root, and Triton endpoints the client cannot use.

use super::*;

/// The tiny BERT's committed spec (it has a `preprocess_params` map, which takes any
/// nesting, so only the depth limit can refuse a deep override there).
fn tiny_bert_spec_only(fx: &Fixture) {
    fx.spec_json(&Fixture::tiny_bert_spec());
}

/// `tiny-bert.preprocess_params.a.a.…=1`, setting a field `levels` deep in the spec.
fn deep_override(levels: usize) -> String {
    // `preprocess_params` is level 1; each `.a` adds one.
    format!("tiny-bert.preprocess_params{}=1", ".a".repeat(levels - 1))
}

/// Loads the catalog, then applies `assignments` as `--set` overrides.
fn resolve_overrides(fx: &Fixture, assignments: &[String]) -> Outcome {
    let catalog = fx.catalog()?;
    let layer = dp_spec::Layer::from_overrides(assignments).map_err(|d| Refusal::from(vec![d]))?;
    dp_spec::resolve(&catalog, &[layer])
        .map(drop)
        .map_err(Refusal::from)
}

/// The tiny BERT's spec with `local_artifacts` set to `[artifact]`.
fn tiny_bert_with_artifact(fx: &Fixture, artifact: &str) {
    let mut spec = Fixture::tiny_bert_spec();
    spec["local_artifacts"] = json!([artifact]);
    fx.spec_json(&spec);
}

/// The fake-Triton spec with its endpoint replaced by `endpoint`.
fn triton_with_endpoint(fx: &Fixture, endpoint: &str) {
    fake_triton_spec(fx, 8000);
    let path = fx.catalog_dir().join("regression/remote-affine.json");
    let mut spec: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    spec["triton"]["endpoint"] = endpoint.into();
    fs::write(path, serde_json::to_string_pretty(&spec).unwrap()).unwrap();
}

#[allow(clippy::too_many_lines, reason = "the table is one list of rows")]
pub(crate) fn rows() -> Vec<Case> {
    use ErrorCode as C;
    vec![
        // ---- Overrides ----------------------------------------------------------------
        Case {
            // Was accepted: a layered spec nested 100 levels, past the 64 a file may have.
            name: "override_key_path_deeper_than_the_spec_limit",
            needs: Needs::Nothing,
            setup: tiny_bert_spec_only,
            action: |fx| resolve_overrides(fx, &[deep_override(100)]),
            code: C::InvalidSpec,
            says: &[
                "<overrides>",
                "100 levels deep",
                "more than the 64",
                "flatten",
            ],
        },
        Case {
            // Was a stack overflow (SIGABRT), which no `catch_unwind` can stop.
            name: "override_key_path_5000_levels_deep",
            needs: Needs::Nothing,
            setup: tiny_bert_spec_only,
            action: |fx| resolve_overrides(fx, &[deep_override(5_000)]),
            code: C::InvalidSpec,
            says: &[
                "5000 levels deep",
                "more than the 64",
                "tiny-bert.preprocess_params.a",
            ],
        },
        // ---- Control characters in what diagnostics print -----------------------------
        Case {
            // The field name reached the terminal raw through the diagnostic's pointer.
            name: "escape_sequence_in_an_unknown_field_name",
            needs: Needs::Nothing,
            setup: |fx| {
                let mut spec = Fixture::tiny_bert_spec();
                spec["\u{1b}[2J\u{1b}]0;owned\u{7}"] = json!(1);
                fx.spec_json(&spec);
            },
            action: |fx| {
                let refusal = fx.catalog().map(drop);
                // `says` checks what is there; this checks what must not be.
                match refusal {
                    Err(r) if r.text.contains(['\u{1b}', '\u{7}']) => Err(Refusal {
                        codes: vec![],
                        text: format!("a raw control character is printed: {:?}", r.text),
                    }),
                    other => other,
                }
            },
            code: C::InvalidSpec,
            says: &[
                "at /\\u{1b}[2J\\u{1b}]0;owned\\u{7}: unknown field",
                "check its spelling",
            ],
        },
        // ---- Artifact paths that designate the models root ----------------------------
        Case {
            // Was accepted: it pins every model under the root, other models included.
            name: "artifact_is_the_models_root_itself",
            needs: Needs::Nothing,
            setup: |fx| tiny_bert_with_artifact(fx, "."),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &[
                "/local_artifacts/0",
                "\".\"",
                "models root itself",
                "list the model's own folder or files",
            ],
        },
        Case {
            name: "artifact_is_the_models_root_through_dot_segments",
            needs: Needs::Nothing,
            setup: |fx| tiny_bert_with_artifact(fx, ".//./"),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["\".//./\"", "models root itself", "model's own folder"],
        },
        Case {
            // Already refused before (a `..` segment); kept so it stays refused.
            name: "artifact_climbs_back_to_the_models_root",
            needs: Needs::Nothing,
            setup: |fx| tiny_bert_with_artifact(fx, "tiny-bert/.."),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["\"tiny-bert/..\"", "`..`", "relative to DP_MODELS_ROOT"],
        },
        // ---- Triton endpoints the client cannot use -----------------------------------
        Case {
            // Was accepted by validation, then `triton_unavailable` at the first request.
            name: "triton_endpoint_with_user_info",
            needs: Needs::Nothing,
            setup: |fx| triton_with_endpoint(fx, "http://user:pw@127.0.0.1:8000"),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/triton/endpoint", "user info", "remove"],
        },
        Case {
            name: "triton_endpoint_port_out_of_range",
            needs: Needs::Nothing,
            setup: |fx| triton_with_endpoint(fx, "http://127.0.0.1:99999"),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/triton/endpoint", "99999", "from 1 to 65535"],
        },
        Case {
            name: "triton_endpoint_port_zero",
            needs: Needs::Nothing,
            setup: |fx| triton_with_endpoint(fx, "http://127.0.0.1:0"),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/triton/endpoint", "port 0", "from 1 to 65535"],
        },
        Case {
            name: "triton_endpoint_https",
            needs: Needs::Nothing,
            setup: |fx| triton_with_endpoint(fx, "https://127.0.0.1:8000"),
            action: load_catalog,
            code: C::InvalidSpec,
            says: &["/triton/endpoint", "no TLS", "http://"],
        },
    ]
}
