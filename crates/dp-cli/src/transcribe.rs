//! `dp transcribe`: one transcript per audio file with a Whisper model (preset
//! `speech_recognition`), by greedy or beam search, 30 seconds at a time.
//!
//! Without `--json`, each transcript is printed on its own line, in input order; with it,
//! one JSON document: `models_used`, `model_signature`, `texts`, and per audio its
//! `language`, `duration_seconds` and token ids.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use dp_manager::TranscriptionOptions;
use dp_manager::preset::AudioInput;
use dp_manager::preset::audio::SpeechTask;

use crate::Cli;
use crate::generate::SearchArgs;
use crate::output::report_model_error;
use crate::providers::manager;

/// The most audio bytes read by default: about an hour of 16 kHz 16-bit WAV, many hours of
/// compressed audio. Files are decoded 30 seconds at a time.
pub(crate) const DEFAULT_MAX_AUDIO_BYTES: u64 = 256 << 20;

/// `--task`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum TaskArg {
    /// Text in the spoken language.
    Transcribe,
    /// English text, whatever the spoken language.
    Translate,
}

/// Options of `dp transcribe`.
#[derive(Debug, Args)]
pub(crate) struct TranscribeArgs {
    /// The model, by name or alias (its preset must be `speech_recognition`).
    #[arg(long)]
    model: String,
    /// An audio file (WAV, FLAC, MP3, Ogg/Vorbis); repeat for several.
    #[arg(long = "audio", value_name = "FILE", required = true)]
    audio: Vec<PathBuf>,
    /// The spoken language, as a code (`en`, `de`); default: detected per file.
    #[arg(long, value_name = "CODE")]
    language: Option<String>,
    /// Transcribe, or translate into English.
    #[arg(long, value_enum, default_value = "transcribe")]
    task: TaskArg,
    #[command(flatten)]
    search: SearchArgs,
    /// The most bytes read, all audio files together.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_AUDIO_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_input_bytes: u64,
    /// Verification cache file (as for `dp embed`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

pub(crate) fn run(cli: &Cli, args: &TranscribeArgs) -> anyhow::Result<ExitCode> {
    let audio: Vec<AudioInput> =
        match crate::images::read_files(&args.audio, args.max_input_bytes, "audio") {
            Ok(files) => files.into_iter().map(AudioInput::Encoded).collect(),
            Err(err) => return Ok(report_model_error(cli, &err)),
        };
    let options = TranscriptionOptions {
        language: args.language.clone(),
        task: match args.task {
            TaskArg::Transcribe => SpeechTask::Transcribe,
            TaskArg::Translate => SpeechTask::Translate,
        },
        generation: args.search.options(),
    };
    let cache = args
        .cache
        .clone()
        .or_else(crate::verify::default_cache_path);
    let manager = match manager(cli, cache) {
        Ok(manager) => manager,
        Err(code) => return Ok(code),
    };
    let output = match manager.transcribe(&args.model, &audio, &options) {
        Ok(output) => output,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    crate::output::with_stdout(|out| {
        if cli.json {
            let texts: Vec<&str> = output.transcripts.iter().map(|t| t.text.as_str()).collect();
            let doc = serde_json::json!({
                "models_used": output.models_used,
                "model_signature": output.model_signature,
                "texts": texts,
                "transcripts": output.transcripts,
            });
            serde_json::to_writer(&mut *out, &doc)?;
            out.write_all(b"\n")?;
        } else {
            for transcript in &output.transcripts {
                writeln!(out, "{}", dp_spec::escape_controls(&transcript.text))?;
            }
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
