//! `dp preprocess`: prints what a model would be fed for some images, texts or audio (its
//! preset's tensors), without loading the model: for debugging, and for clients that send
//! tensors themselves (a Triton deployment fed by another language).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dp_manager::preset::PresetInputs;
use dp_spec::TensorData;
use serde::Serialize;

use crate::Cli;
use crate::output::report_model_error;
use crate::providers::manager;

/// Options of `dp preprocess`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("data").required(true).args(["images", "input", "audio"])))]
pub(crate) struct PreprocessArgs {
    /// The model, by name or alias.
    #[arg(long)]
    model: String,
    /// An image file; repeat for several.
    #[arg(long = "image", value_name = "FILE")]
    images: Vec<PathBuf>,
    /// Texts: a JSON array of strings, or one text per line; `-` reads stdin.
    #[arg(long, value_name = "FILE|-")]
    input: Option<PathBuf>,
    /// An audio file (WAV, FLAC, MP3, Ogg/Vorbis); repeat for several. An audio_log_mel
    /// model prints one row of features per 30-second chunk.
    #[arg(long = "audio", value_name = "FILE")]
    audio: Vec<PathBuf>,
    /// The most bytes read (all images, all audio files, or the text input).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = crate::embed::DEFAULT_MAX_INPUT_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_input_bytes: u64,
    /// Verification cache file (as for `dp embed`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

/// One tensor as printed.
#[derive(Serialize)]
struct PrintedTensor<'a> {
    dtype: &'static str,
    shape: &'a [usize],
    data: PrintedData<'a>,
}

/// A tensor's elements, as JSON numbers.
#[derive(Serialize)]
#[serde(untagged)]
enum PrintedData<'a> {
    Floats(Vec<f64>),
    Ints(&'a [i64]),
}

pub(crate) fn run(cli: &Cli, args: &PreprocessArgs) -> anyhow::Result<ExitCode> {
    let audio = match crate::images::read_files(&args.audio, args.max_input_bytes, "audio") {
        Ok(files) => files
            .into_iter()
            .map(dp_manager::preset::AudioInput::Encoded)
            .collect::<Vec<_>>(),
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let (images, texts) = if !audio.is_empty() {
        (Vec::new(), Vec::new())
    } else if let Some(input) = &args.input {
        let texts = match crate::embed::read_texts(
            input,
            args.max_input_bytes,
            crate::embed::DEFAULT_MAX_TEXTS,
        ) {
            Ok(texts) => texts,
            Err(err) => return Ok(report_model_error(cli, &err)),
        };
        (Vec::new(), texts)
    } else {
        match crate::images::read_images(&args.images, args.max_input_bytes) {
            Ok(images) => (images, Vec::new()),
            Err(err) => return Ok(report_model_error(cli, &err)),
        }
    };
    let cache = args
        .cache
        .clone()
        .or_else(crate::verify::default_cache_path);
    let manager = match manager(cli, cache) {
        Ok(manager) => manager,
        Err(code) => return Ok(code),
    };
    let text_refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let inputs = if !audio.is_empty() {
        PresetInputs::Audio(&audio)
    } else if args.input.is_some() {
        PresetInputs::Texts(&text_refs)
    } else {
        PresetInputs::Images(&images)
    };
    let made = match manager.preprocess(&args.model, inputs) {
        Ok(made) => made,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let mut tensors = serde_json::Map::new();
    for (name, tensor) in &made.tensors {
        let (dtype, data) = match tensor.data() {
            TensorData::Fp32(v) => (
                "fp32",
                PrintedData::Floats(v.iter().map(|&x| f64::from(x)).collect()),
            ),
            TensorData::Int64(v) => ("int64", PrintedData::Ints(v)),
            other => anyhow::bail!(
                "tensor {name} has dtype {:?}, which dp preprocess does not print",
                other.dtype()
            ),
        };
        let printed = PrintedTensor {
            dtype,
            shape: tensor.shape(),
            data,
        };
        tensors.insert(name.clone(), serde_json::to_value(printed)?);
    }
    let doc = serde_json::json!({
        "preprocess_preset": made.preprocess_preset,
        "preprocess_signature": made.preprocess_signature,
        "models_used": [made.models_used],
        "tensors": tensors,
    });
    crate::output::with_stdout(|out| {
        if cli.json {
            serde_json::to_writer(&mut *out, &doc)?;
        } else {
            serde_json::to_writer_pretty(&mut *out, &doc)?;
        }
        out.write_all(b"\n")?;
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
