//! `cargo xtask stress`: the manager's concurrency stress test (`tests/stress.rs`, ignored
//! in the default test run), for a chosen duration.
//!
//! The test build is a debug one by default: it reuses what `cargo test` already built
//! (candle's kernels are optimized even there), which is what CI wants. `--release` puts
//! more operations through each second, at the price of a release build of the workspace.

use std::path::Path;

use anyhow::Result;
use clap::Args;

use crate::process::{self, cargo_command};

/// The test `cargo xtask stress` runs.
const TEST: &str = "sixty_four_threads_on_ten_models_under_a_small_budget";

/// Options of `cargo xtask stress`.
#[derive(Debug, Args)]
pub(crate) struct StressArgs {
    /// How long the threads run, in seconds (sets `DP_STRESS_SECS`).
    #[arg(long, default_value_t = 30)]
    pub(crate) secs: u64,
    /// Build the test with optimizations: more operations per second, but a release build.
    #[arg(long)]
    pub(crate) release: bool,
}

/// The `cargo test` command that runs the stress test for `args.secs` seconds.
///
/// The debug build is the one `cargo test --workspace` makes: `--workspace --tests` selects
/// the same features, so nothing is rebuilt (`-p dp-tests --test stress` resolves features
/// for that one target and rebuilt most of the workspace: 4.5 minutes of CI). Every test
/// binary then runs, and only the stress test passes the filter.
fn command(root: &Path, args: &StressArgs) -> std::process::Command {
    let mut cmd = if args.release {
        cargo_command(
            root,
            &["test", "-p", "dp-tests", "--test", "stress", "--release"],
        )
    } else {
        cargo_command(root, &["test", "--workspace", "--tests"])
    };
    // `--nocapture`: the test's last line holds the figures (operations, ops/s, loads,
    // evictions) that docs/reliability.md quotes.
    cmd.args(["--", "--ignored", "--exact", TEST, "--nocapture"])
        .env("DP_STRESS_SECS", args.secs.to_string());
    cmd
}

/// Runs the stress test.
pub(crate) fn run(root: &Path, args: &StressArgs) -> Result<()> {
    process::run(
        &mut command(root, args),
        "the stress test failed: a deadlock dump, a panic or a broken invariant is printed \
         above",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_the_ignored_test_for_the_given_time() {
        let debug = command(
            Path::new("/ws"),
            &StressArgs {
                secs: 5,
                release: false,
            },
        );
        let line = process::display(&debug);
        assert!(
            line.ends_with(
                "test --workspace --tests -- --ignored --exact \
                 sixty_four_threads_on_ten_models_under_a_small_budget --nocapture"
            ),
            "{line}"
        );
        let args = StressArgs {
            secs: 5,
            release: true,
        };
        let cmd = command(Path::new("/ws"), &args);
        let line = process::display(&cmd);
        assert!(
            line.ends_with(
                "test -p dp-tests --test stress --release -- --ignored --exact \
                 sixty_four_threads_on_ten_models_under_a_small_budget --nocapture"
            ),
            "{line}"
        );
        let secs = cmd
            .get_envs()
            .find(|(k, _)| *k == "DP_STRESS_SECS")
            .and_then(|(_, v)| v);
        assert_eq!(secs, Some(std::ffi::OsStr::new("5")));
    }
}
