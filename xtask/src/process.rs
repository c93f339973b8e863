//! Running child processes with errors that say what failed and how to fix it.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The cargo that runs xtask (`$CARGO`), so children use the same toolchain; `cargo` from
/// `PATH` when xtask was started some other way.
pub(crate) fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A `cargo` command with the given arguments, to be run at `root`.
pub(crate) fn cargo_command(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(cargo());
    cmd.args(args).current_dir(root);
    cmd
}

/// The command line of `cmd`, for messages.
pub(crate) fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdin, stdout and stderr, and fails unless it exits with
/// status 0. `hint` says how to fix a failure; it ends the error message.
pub(crate) fn run(cmd: &mut Command, hint: &str) -> Result<()> {
    let line = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{line}`: is it installed and on PATH?"))?;
    if !status.success() {
        bail!("`{line}` failed ({status}); {hint}");
    }
    Ok(())
}

/// Runs `cmd` with its output discarded and tells whether it exited with status 0.
///
/// For probes ("does this venv import jsonschema?"), where failure is an answer and not an
/// error.
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_joins_program_and_arguments() {
        let mut cmd = Command::new("cargo");
        cmd.args(["fmt", "--all"]);
        assert_eq!(display(&cmd), "cargo fmt --all");
    }

    #[test]
    fn run_names_the_command_and_the_hint() {
        let err = run(&mut Command::new("false"), "do something else")
            .expect_err("`false` exits with status 1");
        let msg = err.to_string();
        assert!(msg.starts_with("`false` failed"), "{msg}");
        assert!(msg.ends_with("do something else"), "{msg}");
    }

    #[test]
    fn succeeds_reports_the_exit_status() {
        assert!(succeeds(&mut Command::new("true")));
        assert!(!succeeds(&mut Command::new("false")));
        assert!(!succeeds(&mut Command::new("/nonexistent/program")));
    }
}
