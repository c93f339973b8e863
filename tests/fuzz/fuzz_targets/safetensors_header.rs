//! Safetensors handling in the candle provider: whatever bytes sit in `model.safetensors`
//! (headers claiming huge lengths, overlapping or out-of-range offsets, wrong dtypes or
//! shapes, truncation), loading never panics and never over-allocates; it either loads a
//! model that then runs, or fails with a structured error.
//!
//! The rest of the model directory is the tiny BERT that `dp demo` ships, so a well-formed
//! file (the seed in `seeds/safetensors_header/`) loads and every mutation of it probes one
//! more corner of the header and tensor checks.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use dp_provider_candle::CandleProvider;
use dp_spec::{
    ErrorCode, LoadRequest, ModelProvider, ModelSpec, NamedTensors, Precision, ResolvedDevice,
    SourceDocument, SourceFormat, Tensor, TensorData,
};
use libfuzzer_sys::fuzz_target;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../crates/dp-cli/demo");

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    spec: ModelSpec,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        copy_tree(
            &Path::new(DEMO).join("models/tiny-bert"),
            &root.join("tiny-bert"),
        );
        let spec_path = Path::new(DEMO).join("catalog/text_embedding/tiny-bert.yaml");
        let text = std::fs::read_to_string(&spec_path).unwrap();
        let doc = SourceDocument::parse_str("tiny-bert.yaml", &text, SourceFormat::Yaml).unwrap();
        let spec = dp_spec::validate_document(&doc).unwrap();
        Fixture {
            _dir: dir,
            root,
            spec,
        }
    })
}

fn ids(values: Vec<i64>) -> Tensor {
    Tensor::new(vec![1, values.len()], TensorData::Int64(values)).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    std::fs::write(fixture.root.join("tiny-bert/model.safetensors"), data).unwrap();
    let loaded = CandleProvider::new().load(&LoadRequest {
        spec: &fixture.spec,
        models_root: &fixture.root,
        device: ResolvedDevice::Cpu,
        precision: Precision::Fp32,
    });
    match loaded {
        Ok(model) => {
            // A model that loads must also run: its tensors were checked against the config.
            let mut inputs = NamedTensors::new();
            inputs.insert("input_ids".into(), ids(vec![1, 5, 2]));
            inputs.insert("attention_mask".into(), ids(vec![1, 1, 1]));
            inputs.insert("token_type_ids".into(), ids(vec![0, 0, 0]));
            let out = model.infer(&inputs).expect("a loaded model runs");
            let hidden = &out["last_hidden_state"];
            assert_eq!(hidden.shape()[..2], [1, 3]);
        }
        Err(err) => {
            // Every failure is a structured, actionable error about the weights file.
            assert!(
                matches!(
                    err.error_code,
                    ErrorCode::InvalidSpec | ErrorCode::Io | ErrorCode::WeightsMissing
                ),
                "unexpected error code {:?}: {err}",
                err.error_code
            );
            assert!(!err.message.is_empty());
        }
    }
});
