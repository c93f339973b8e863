//! `dp embed`: embeds texts with a `sentence_embedding` model.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use dp_spec::{ErrorCode, ModelError};

use crate::Cli;
use crate::providers::{manager, report_model_error};

/// Options of `dp embed`.
#[derive(Debug, Args)]
pub(crate) struct EmbedArgs {
    /// The model, by name or alias.
    #[arg(long)]
    model: String,
    /// The texts: a JSON array of strings, or one text per line (empty lines skipped).
    /// `-` (the default) reads stdin.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    input: PathBuf,
    /// Verification cache file, so unchanged weights are not re-hashed on every run (as for
    /// `dp verify`; default: `$XDG_CACHE_HOME/dp-models/verify-cache.json`, else
    /// `~/.cache/dp-models/…`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

/// Reads the texts: a JSON array of strings when the input starts with `[`, else lines.
fn parse_texts(input: &str) -> Result<Vec<String>, ModelError> {
    if input.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<String>>(input).map_err(|err| {
            ModelError::new(
                ErrorCode::InvalidInput,
                format!("the input starts with `[` but is not a JSON array of strings: {err}"),
            )
        })
    } else {
        Ok(input
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect())
    }
}

pub(crate) fn run(cli: &Cli, args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    let read = if args.input.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut input).map(|_| ())
    } else {
        std::fs::read_to_string(&args.input).map(|text| input = text)
    };
    if let Err(err) = read {
        let err = ModelError::new(
            ErrorCode::InvalidInput,
            format!("cannot read {}: {err}", args.input.display()),
        );
        return Ok(report_model_error(cli, &err));
    }
    let texts = match parse_texts(&input) {
        Ok(texts) => texts,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    let cache = args
        .cache
        .clone()
        .or_else(crate::verify::default_cache_path);
    let manager = match manager(cli, cache) {
        Ok(manager) => manager,
        Err(code) => return Ok(code),
    };
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let output = match manager.embed(&args.model, &texts) {
        Ok(output) => output,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    if cli.json {
        println!(
            "{}",
            serde_json::json!({
                "models_used": output.models_used,
                "model_signature": output.model_signature,
                "embeddings": output.embeddings,
            })
        );
    } else {
        // One JSON array per line (JSON Lines), in input order.
        for vector in &output.embeddings {
            println!("{}", serde_json::to_string(vector)?);
        }
        eprintln!(
            "dp: {} text(s) embedded by {} ({})",
            output.embeddings.len(),
            output
                .models_used
                .first()
                .map_or("?", |m| m.model_name.as_str()),
            output
                .models_used
                .first()
                .map_or("?", |m| m.model_signature_short.as_str()),
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_a_json_array_or_lines() {
        assert_eq!(
            parse_texts(r#" ["a b", "c\nd"]"#).expect("json"),
            ["a b", "c\nd"]
        );
        assert_eq!(
            parse_texts("one\n\ntwo\r\n").expect("lines"),
            ["one", "two"]
        );
        let err = parse_texts("[1, 2]").expect_err("not strings");
        assert_eq!(err.error_code, ErrorCode::InvalidInput);
    }
}
