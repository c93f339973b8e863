//! `dp embed`: embeds texts (`--input`) or images (`--image`, CLIP models) with a model's
//! preset.
//!
//! The input is bounded (`--max-input-bytes`, `--max-texts`) and refused with
//! `invalid_input` before it is read whole, so a huge or endless input (`/dev/zero`) costs
//! at most the limit; the output is written as it is produced, never held as one document.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use dp_manager::{EmbeddingOutput, ModelManager};
use dp_spec::{ErrorCode, ModelError};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Serialize, Serializer};

use crate::Cli;
use crate::output::report_model_error;
use crate::providers::manager;

/// Default of `--max-input-bytes`: 64 MiB.
pub(crate) const DEFAULT_MAX_INPUT_BYTES: u64 = 64 << 20;

/// Default of `--max-texts`: at 384 dimensions, about 150 MB of vectors.
pub(crate) const DEFAULT_MAX_TEXTS: usize = 100_000;

/// Options of `dp embed`.
#[derive(Debug, Args)]
pub(crate) struct EmbedArgs {
    /// The model, by name or alias.
    #[arg(long)]
    model: String,
    #[command(flatten)]
    inputs: EmbedInputArgs,
    /// Verification cache file, so unchanged weights are not re-hashed on every run (as for
    /// `dp verify`; default: `$XDG_CACHE_HOME/dp-models/verify-cache.json`, else
    /// `~/.cache/dp-models/…`).
    #[arg(long, value_name = "FILE", env = "DP_VERIFY_CACHE")]
    cache: Option<PathBuf>,
}

/// What a command embeds (`dp embed`, `dp parity`): texts or images, bounded.
#[derive(Debug, Args)]
pub(crate) struct EmbedInputArgs {
    /// The texts: a JSON array of strings, or one text per line (empty lines skipped).
    /// `-` (the default) reads stdin.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    input: PathBuf,
    /// An image file (JPEG, PNG, WebP, GIF, BMP) to embed instead of texts, with a model
    /// whose preset takes images (`image_clip`); repeat for several.
    #[arg(long = "image", value_name = "FILE", conflicts_with = "input")]
    images: Vec<PathBuf>,
    /// The largest input accepted, in bytes (all images together with `--image`); a
    /// larger one is refused before it is read whole.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = DEFAULT_MAX_INPUT_BYTES,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    max_input_bytes: u64,
    /// The most texts accepted in one input.
    #[arg(
        long,
        value_name = "N",
        default_value_t = DEFAULT_MAX_TEXTS,
        value_parser = parse_max_texts
    )]
    max_texts: usize,
    /// The model's named prompt to prepend to every text (e.g. `query` or `passage` for
    /// E5); without it, the model's default prompt, if it has one. `dp list --json` shows
    /// a model's `preprocess_params`.
    #[arg(long = "prompt", value_name = "NAME", conflicts_with = "images")]
    prompt_name: Option<String>,
}

impl EmbedInputArgs {
    /// Reads the texts of `--input` or the images of `--image`, within the bounds.
    pub(crate) fn read(&self) -> Result<Inputs, ModelError> {
        if self.images.is_empty() {
            read_texts(&self.input, self.max_input_bytes, self.max_texts).map(|texts| {
                Inputs::Texts {
                    texts,
                    prompt_name: self.prompt_name.clone(),
                }
            })
        } else {
            crate::images::read_images(&self.images, self.max_input_bytes).map(Inputs::Images)
        }
    }
}

/// `--max-texts`: a whole number of at least 1.
fn parse_max_texts(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(err) => Err(err.to_string()),
    }
}

/// `invalid_input`: what the user gave is refused.
fn invalid(message: String) -> ModelError {
    ModelError::new(ErrorCode::InvalidInput, message)
}

/// The input of more than `max` texts.
fn too_many_texts(max: usize) -> ModelError {
    invalid(format!(
        "the input holds more than {max} texts (--max-texts); raise --max-texts or split the \
         input into several runs"
    ))
    .with_detail("max_texts", max)
}

/// Reads at most `max` bytes of `reader` as UTF-8 text: one byte more than `max` is read
/// only to tell that the input is larger, so an endless input costs `max` bytes at most.
fn read_bounded(reader: impl Read, max: u64, source: &Path) -> Result<String, ModelError> {
    let too_large = || {
        invalid(format!(
            "{} is larger than {max} bytes (--max-input-bytes); raise --max-input-bytes or split \
             the input into several runs",
            source.display()
        ))
        .with_detail("max_input_bytes", max)
    };
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| invalid(format!("cannot read {}: {err}", source.display())))?;
    if u64::try_from(bytes.len()).map_or(true, |len| len > max) {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|err| {
        invalid(format!(
            "cannot read {}: it is not UTF-8 text (invalid byte at offset {}); convert it to \
             UTF-8",
            source.display(),
            err.utf8_error().valid_up_to()
        ))
    })
}

/// What `dp embed` and `dp parity` embed.
pub(crate) enum Inputs {
    Texts {
        texts: Vec<String>,
        /// `--prompt`.
        prompt_name: Option<String>,
    },
    Images(Vec<dp_manager::preset::ImageInput>),
}

impl Inputs {
    /// Embeds the inputs with `model`, one vector each, in input order.
    pub(crate) fn embed(
        &self,
        manager: &ModelManager,
        model: &str,
    ) -> Result<EmbeddingOutput, ModelError> {
        match self {
            Self::Texts { texts, prompt_name } => {
                let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
                manager.embed_with_prompt(model, &texts, prompt_name.as_deref())
            }
            Self::Images(images) => manager.embed_images(model, images),
        }
    }

    /// What the inputs are, for messages (`text(s)`, `image(s)`).
    pub(crate) const fn noun(&self) -> &'static str {
        match self {
            Self::Texts { .. } => "text(s)",
            Self::Images(_) => "image(s)",
        }
    }
}

/// Reads the input named by `--input`, bounded by `max` bytes.
fn read_input(path: &Path, max: u64) -> Result<String, ModelError> {
    if path.as_os_str() == "-" {
        return read_bounded(std::io::stdin().lock(), max, Path::new("stdin"));
    }
    let file = File::open(path)
        .map_err(|err| invalid(format!("cannot read {}: {err}", path.display())))?;
    // A regular file's size is known: refuse a large one without reading a byte of it.
    if let Ok(meta) = file.metadata()
        && meta.is_file()
        && meta.len() > max
    {
        return Err(invalid(format!(
            "{} is {} bytes, larger than {max} bytes (--max-input-bytes); raise \
             --max-input-bytes or split the input into several runs",
            path.display(),
            meta.len()
        ))
        .with_detail("max_input_bytes", max));
    }
    read_bounded(file, max, path)
}

/// A JSON array of strings, refused (with `too_many` set) past `max` elements while it is
/// parsed, so no more than `max` strings are ever built.
struct BoundedTexts<'a> {
    max: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BoundedTexts<'_> {
    type Value = Vec<String>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for BoundedTexts<'_> {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut texts = Vec::new();
        while let Some(text) = seq.next_element::<String>()? {
            if texts.len() == self.max {
                self.too_many.set(true);
                return Err(de::Error::custom("too many texts"));
            }
            texts.push(text);
        }
        Ok(texts)
    }
}

/// Reads the texts: a JSON array of strings when the input starts with `[`, else lines; at
/// most `max_texts` of them.
fn parse_texts(input: &str, max_texts: usize) -> Result<Vec<String>, ModelError> {
    if input.trim_start().starts_with('[') {
        let too_many = Cell::new(false);
        let mut deserializer = serde_json::Deserializer::from_str(input);
        let texts = BoundedTexts {
            max: max_texts,
            too_many: &too_many,
        }
        .deserialize(&mut deserializer)
        .and_then(|texts| deserializer.end().map(|()| texts));
        texts.map_err(|err| {
            if too_many.get() {
                too_many_texts(max_texts)
            } else {
                invalid(format!(
                    "the input starts with `[` but is not a JSON array of strings: {err}"
                ))
            }
        })
    } else {
        let mut texts = Vec::new();
        for line in input.lines().filter(|l| !l.trim().is_empty()) {
            if texts.len() == max_texts {
                return Err(too_many_texts(max_texts));
            }
            texts.push(line.to_owned());
        }
        Ok(texts)
    }
}

/// A vector written as `serde_json::Value` writes it: each `f32` widened to `f64` (the
/// `--json` output has always carried that form, so it stays byte for byte the same).
struct WideFloats<'a>(&'a [f32]);

impl Serialize for WideFloats<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|&x| f64::from(x)))
    }
}

/// Writes `{"models_used":…,"model_signature":…,"embeddings":[…]}` and a newline, one
/// vector at a time: the document is never built in memory (for 100,000 texts it took
/// gigabytes as a `serde_json::Value`).
fn write_json(out: &mut impl Write, output: &EmbeddingOutput) -> anyhow::Result<()> {
    out.write_all(b"{\"models_used\":")?;
    // Through a `Value`, as before, so the records' bytes cannot drift; they are small.
    serde_json::to_writer(&mut *out, &serde_json::to_value(&output.models_used)?)?;
    out.write_all(b",\"model_signature\":")?;
    serde_json::to_writer(&mut *out, &output.model_signature)?;
    out.write_all(b",\"embeddings\":[")?;
    for (i, vector) in output.embeddings.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, &WideFloats(vector))?;
    }
    out.write_all(b"]}\n")?;
    Ok(())
}

/// Writes one JSON array per line (JSON Lines), in input order.
fn write_lines(out: &mut impl Write, output: &EmbeddingOutput) -> anyhow::Result<()> {
    for vector in &output.embeddings {
        serde_json::to_writer(&mut *out, vector)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The texts of `--input`: bounded by `max_bytes` and `max_texts`.
pub(crate) fn read_texts(
    path: &Path,
    max_bytes: u64,
    max_texts: usize,
) -> Result<Vec<String>, ModelError> {
    read_input(path, max_bytes).and_then(|input| parse_texts(&input, max_texts))
}

pub(crate) fn run(cli: &Cli, args: &EmbedArgs) -> anyhow::Result<ExitCode> {
    let inputs = match args.inputs.read() {
        Ok(inputs) => inputs,
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
    let output = match inputs.embed(&manager, &args.model) {
        Ok(output) => output,
        Err(err) => return Ok(report_model_error(cli, &err)),
    };
    crate::output::with_stdout(|out| {
        if cli.json {
            write_json(out, &output)
        } else {
            write_lines(out, &output)
        }
    })?;
    if !cli.json {
        crate::output::stderr(&format!(
            "dp: {} {} embedded by {} ({})",
            output.embeddings.len(),
            inputs.noun(),
            output
                .models_used
                .first()
                .map_or("?", |m| m.model_name.as_str()),
            output
                .models_used
                .first()
                .map_or("?", |m| m.model_signature_short.as_str()),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_a_json_array_or_lines() {
        assert_eq!(
            parse_texts(r#" ["a b", "c\nd"]"#, 10).expect("json"),
            ["a b", "c\nd"]
        );
        assert_eq!(
            parse_texts("one\n\ntwo\r\n", 10).expect("lines"),
            ["one", "two"]
        );
        let err = parse_texts("[1, 2]", 10).expect_err("not strings");
        assert_eq!(err.error_code, ErrorCode::InvalidInput);
        assert!(err.message.contains("not a JSON array of strings"), "{err}");
        let err = parse_texts(r#"["a"] x"#, 10).expect_err("trailing characters");
        assert!(err.message.contains("trailing characters"), "{err}");
    }

    #[test]
    fn more_texts_than_the_limit_are_refused_while_parsing() {
        assert_eq!(
            parse_texts(r#"["a","b","c"]"#, 3)
                .expect("at the limit")
                .len(),
            3
        );
        assert_eq!(
            parse_texts("a\nb\n\nc\n", 3).expect("at the limit").len(),
            3
        );
        for input in [
            r#"["a","b","c","d"]"#,
            "a\nb\nc\nd",
            r#"["a","b","c","d", 5]"#,
        ] {
            let err = parse_texts(input, 3).expect_err(input);
            assert_eq!(err.error_code, ErrorCode::InvalidInput, "{input}");
            assert!(err.message.contains("more than 3 texts"), "{err}");
            assert!(err.message.contains("raise --max-texts"), "{err}");
            assert_eq!(err.details["max_texts"], 3);
        }
    }

    #[test]
    fn an_endless_input_is_refused_after_the_limit() {
        // `repeat` never ends: only the `Take` can stop the read.
        let err =
            read_bounded(std::io::repeat(b'a'), 1000, Path::new("stdin")).expect_err("endless");
        assert_eq!(err.error_code, ErrorCode::InvalidInput);
        assert!(err.message.contains("larger than 1000 bytes"), "{err}");
        assert!(err.message.contains("raise --max-input-bytes"), "{err}");
        let text = read_bounded(&b"12345"[..], 5, Path::new("stdin")).expect("at the limit");
        assert_eq!(text, "12345");
        let err = read_bounded(&b"ab\xffcd"[..], 5, Path::new("x.txt")).expect_err("not UTF-8");
        assert!(
            err.message
                .contains("not UTF-8 text (invalid byte at offset 2)"),
            "{err}"
        );
    }

    /// What `dp embed --json` printed before the output was streamed.
    fn printed_as_one_value(output: &EmbeddingOutput) -> Vec<u8> {
        format!(
            "{}\n",
            serde_json::json!({
                "models_used": output.models_used,
                "model_signature": output.model_signature,
                "embeddings": output.embeddings,
            })
        )
        .into_bytes()
    }

    fn output(embeddings: Vec<Vec<f32>>) -> EmbeddingOutput {
        // The demo model's record, as `dp demo` prints it.
        let signature = "dp1:model_name=tiny-bert;model_version=1.0.0;role=text_embedding;\
            runtime=inprocess;engine=candle;precision=fp32;device=cpu;\
            preprocess_preset=sentence_embedding;preprocess_params={\"max_length\":64,\
            \"normalize\":true,\"pooling\":\"mean\"};weights_digest=sha256:\
            adee59ea72d9c12fee1147ac0456654f60f97ca6469ad2d96371d438c068a150";
        let entry = serde_json::json!({
            "model_name": "tiny-bert",
            "model_version": "1.0.0",
            "role": "text_embedding",
            "runtime": "inprocess",
            "engine": "candle",
            "precision": "fp32",
            "device": "cpu",
            "preprocess_preset": "sentence_embedding",
            "preprocess_signature": "pp1:6165dd2b85f8c33f",
            "weights_digest":
                "sha256:adee59ea72d9c12fee1147ac0456654f60f97ca6469ad2d96371d438c068a150",
            "model_signature": signature,
            "model_signature_short": "dp1-2dcc26a690a5bf56",
            "signature_version": "dp1"
        });
        EmbeddingOutput {
            embeddings,
            model_signature: signature.to_owned(),
            models_used: vec![serde_json::from_value(entry).expect("a models_used record")],
        }
    }

    #[test]
    fn streamed_json_is_byte_for_byte_the_old_document() {
        let tricky = vec![
            0.1,
            -0.0,
            0.0,
            1.0,
            -1.5e-7,
            3.402_823_5e38,
            f32::MIN_POSITIVE,
            1.0e-45,
            0.333_333_34,
            f32::NAN,
            f32::INFINITY,
        ];
        let mut many: Vec<Vec<f32>> = (0..200_u16)
            .map(|i| {
                (0..8_u16)
                    .map(|j| (f32::from(i) * 0.37 - f32::from(j)).sin() / 7.0)
                    .collect()
            })
            .collect();
        many.push(Vec::new());
        for embeddings in [vec![], vec![vec![]], vec![tricky], many] {
            let output = output(embeddings);
            let mut streamed = Vec::new();
            write_json(&mut streamed, &output).expect("writes");
            assert_eq!(
                String::from_utf8(streamed).expect("UTF-8"),
                String::from_utf8(printed_as_one_value(&output)).expect("UTF-8")
            );
        }
    }

    #[test]
    fn lines_output_is_one_array_per_line() {
        let output = output(vec![vec![0.1, -2.0], vec![]]);
        let mut out = Vec::new();
        write_lines(&mut out, &output).expect("writes");
        assert_eq!(String::from_utf8(out).expect("UTF-8"), "[0.1,-2.0]\n[]\n");
    }
}
