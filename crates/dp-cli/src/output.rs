//! Everything `dp` prints, and the exit code of every error.
//!
//! Command output goes through [`stdout`] (or [`with_stdout`] for streamed output), never
//! through `println!`: `println!` panics when stdout is a closed pipe (`dp list | head -1`),
//! whereas here a broken pipe means the reader has gone, so the command stops printing
//! quietly. Messages for the user go through [`stderr`], which never fails either.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use dp_spec::{Diagnostic, ErrorCode, ModelError};

/// Exit code for invalid input (specs, profiles, overrides, usage).
pub(crate) const EXIT_INVALID: u8 = 2;
/// Exit code when some model is not ready (weights missing, digest mismatch, version drift).
pub(crate) const EXIT_NOT_READY: u8 = 3;

/// Prints formatted text and a newline on stdout through [`stdout`]; evaluates to
/// `anyhow::Result<()>`.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::stdout(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;

/// Writes `text` to stdout as is. A closed pipe is not an error: the reader has gone.
///
/// # Errors
///
/// Any other write error (a full disk behind a redirection).
pub(crate) fn stdout(text: &str) -> anyhow::Result<()> {
    with_stdout(|out| Ok(out.write_all(text.as_bytes())?))
}

/// Prints `value` as pretty JSON and a newline on stdout (through [`stdout`]).
///
/// # Errors
///
/// The value cannot be serialized, or stdout fails other than by a closed pipe.
pub(crate) fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    stdout(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Runs `write` on a buffered, locked stdout and flushes it, for output too large to
/// build as one string; a closed pipe, seen while writing or flushing, is not an error.
///
/// # Errors
///
/// What `write` returns, or a flush error, unless it is a closed pipe.
pub(crate) fn with_stdout(
    write: impl FnOnce(&mut BufWriter<std::io::StdoutLock<'static>>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let result = write(&mut out).and_then(|()| Ok(out.flush()?));
    match result {
        Err(err) if is_broken_pipe(&err) => {
            // Dropping the writer would try to flush the rest into the closed pipe again;
            // the error is ignored there, but there is no point in trying.
            let (_, _) = out.into_parts();
            Ok(())
        }
        other => other,
    }
}

/// Whether `err` is (or wraps) a write to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(serde_json::Error::io_error_kind)
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `line` and a newline to stderr. A failure is ignored: stderr is where failures
/// would be reported, and `eprintln!` would panic instead.
pub(crate) fn stderr(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ignored = writeln!(err, "{line}");
}

/// The exit code of a model error: 2 for what the user asked or wrote (unknown model,
/// invalid spec or input, a spec needing the network), 3 for a model that is not ready on
/// this machine (weights, digest, provider, runtime, memory), 1 for the operating system.
///
/// Exhaustive on purpose (no `_` arm): a new [`ErrorCode`] must be given its class here
/// before `dp` compiles.
pub(crate) const fn exit_code_for(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::ModelNotFound
        | ErrorCode::RoleUnresolved
        | ErrorCode::InvalidSpec
        | ErrorCode::InvalidInput
        | ErrorCode::NetworkForbidden
        | ErrorCode::UnsupportedRuntime
        | ErrorCode::UnsupportedEngine => EXIT_INVALID,
        ErrorCode::Io => 1,
        ErrorCode::WeightsMissing
        | ErrorCode::WeightsDigestMismatch
        | ErrorCode::TritonUnavailable
        | ErrorCode::InsufficientGpuMemory
        | ErrorCode::InsufficientMemory
        | ErrorCode::VersionDrift
        | ErrorCode::ProviderUnavailable
        | ErrorCode::Overloaded
        | ErrorCode::Cancelled
        | ErrorCode::OutputDrift
        | ErrorCode::DeviceUnavailable => EXIT_NOT_READY,
    }
}

/// Prints one model error (`{"errors":[…]}` on stdout with `--json`, a line on stderr
/// otherwise) and returns the exit code of its class ([`exit_code_for`]).
pub(crate) fn report_model_error(cli: &crate::Cli, err: &ModelError) -> ExitCode {
    if cli.json {
        if let Err(write) = json(&serde_json::json!({ "errors": [err] })) {
            // The JSON could not be written: say it where it can still be read.
            stderr(&format!("dp: {err} (and printing it failed: {write:#})"));
        }
    } else {
        stderr(&format!("dp: {err}"));
    }
    ExitCode::from(exit_code_for(err.error_code))
}

/// Prints an error about a path the user named rather than a model (`dp digest`), like
/// [`report_model_error`], except that what would make a model not ready (a file missing,
/// a link escaping the tree) is a problem with that input: exit code 2, not 3.
pub(crate) fn report_path_error(cli: &crate::Cli, err: &ModelError) -> ExitCode {
    let exit = report_model_error(cli, err);
    if exit_code_for(err.error_code) == EXIT_NOT_READY {
        ExitCode::from(EXIT_INVALID)
    } else {
        exit
    }
}

/// Prints diagnostics (`{"errors":[…]}` on stdout with `--json`, one line each on stderr
/// otherwise) and returns exit code 2.
///
/// # Errors
///
/// The JSON cannot be written to stdout (other than to a closed pipe).
pub(crate) fn report_diagnostics(
    cli: &crate::Cli,
    diagnostics: &[Diagnostic],
) -> anyhow::Result<ExitCode> {
    if cli.json {
        json(&serde_json::json!({ "errors": diagnostics }))?;
    } else {
        for d in diagnostics {
            stderr(&d.to_string());
        }
        stderr(&format!(
            "dp: {} problem{} found",
            diagnostics.len(),
            if diagnostics.len() == 1 { "" } else { "s" }
        ));
    }
    Ok(ExitCode::from(EXIT_INVALID))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_an_exit_code_of_its_class() {
        for code in ErrorCode::ALL {
            let exit = exit_code_for(code);
            assert!(matches!(exit, 1..=3), "{code:?} -> {exit}");
        }
        assert_eq!(exit_code_for(ErrorCode::Io), 1);
        assert_eq!(exit_code_for(ErrorCode::InvalidSpec), EXIT_INVALID);
        assert_eq!(exit_code_for(ErrorCode::WeightsMissing), EXIT_NOT_READY);
    }

    #[test]
    fn a_closed_pipe_is_recognised_through_serde_and_context() {
        let pipe = || std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&anyhow::Error::from(pipe())));
        assert!(is_broken_pipe(
            &anyhow::Error::from(serde_json::Error::io(pipe())).context("writing")
        ));
        assert!(!is_broken_pipe(&anyhow::Error::from(std::io::Error::from(
            std::io::ErrorKind::Other
        ))));
    }
}
