//! The Rust side of `cargo xtask bench triton`: sequential requests to the `affine` model
//! of a running server for a given time, through the provider, printing requests per
//! second. The Python side (`xtask/scripts/bench_tritonclient.py`) does the same with
//! `tritonclient[http]`.
//!
//! Usage: `triton_load ENDPOINT MODE SECONDS`, MODE one of `small` (a [1, 16] FP32 tensor,
//! the provider's default encoding), `large-binary` and `large-json` (a 1 MiB [1, 262144]
//! FP32 tensor in each encoding).

#![allow(clippy::print_stderr, reason = "a command-line tool")]

use std::process::ExitCode;
use std::time::{Duration, Instant};

use dp_provider_triton::{TensorEncoding, TritonProvider, TritonProviderConfig};
use dp_spec::{ModelSpec, NamedTensors, Tensor, TensorData};

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, mode, seconds] = args.as_slice() else {
        eprintln!("usage: triton_load ENDPOINT small|large-binary|large-json SECONDS");
        return ExitCode::from(2);
    };
    match run(endpoint, mode, seconds) {
        Ok(rate) => {
            println!("{rate:.3}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(endpoint: &str, mode: &str, seconds: &str) -> Result<f64, String> {
    let seconds: f64 = seconds.parse().map_err(|_| "SECONDS must be a number")?;
    let (len, encoding) = match mode {
        "small" => (16, TensorEncoding::default()),
        "large-binary" => (262_144, TensorEncoding::Binary),
        "large-json" => (262_144, TensorEncoding::Json),
        _ => return Err(format!("unknown mode {mode:?}")),
    };
    let spec: ModelSpec = serde_json::from_value(serde_json::json!({
        "model_name": "affine", "model_version": "1", "runtime": "triton", "engine": "onnx",
        "weights_digest": DIGEST,
        "triton": { "endpoint": endpoint, "model_name": "affine" }
    }))
    .map_err(|e| e.to_string())?;
    let provider = TritonProvider::new(TritonProviderConfig::default());
    let model = provider.load_spec(&spec).map_err(|e| e.to_string())?;
    #[allow(clippy::cast_precision_loss)]
    let x: Vec<f32> = (0..len).map(|i| (i % 1000) as f32 * 0.5).collect();
    let expected: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
    let mut inputs = NamedTensors::new();
    inputs.insert(
        "x".into(),
        Tensor::new(vec![1, len], TensorData::Fp32(x)).map_err(|e| e.to_string())?,
    );
    // Checked once, outside the timing: both sides must compute the same thing.
    let out = model
        .infer_with(&inputs, encoding)
        .map_err(|e| e.to_string())?;
    if out.get("y").map(Tensor::data) != Some(&TensorData::Fp32(expected)) {
        return Err("affine returned a wrong answer".into());
    }
    let budget = Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut count = 0_u64;
    while started.elapsed() < budget {
        model
            .infer_with(&inputs, encoding)
            .map_err(|e| e.to_string())?;
        count += 1;
    }
    #[allow(clippy::cast_precision_loss)]
    Ok(count as f64 / started.elapsed().as_secs_f64())
}
