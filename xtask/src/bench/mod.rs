//! `cargo xtask bench`: runs the benchmarks by group — criterion benches for in-process
//! figures, and side-by-side command timings ([`pairs`]) against the tools a user would
//! otherwise run.

mod digest;
mod embed;
mod manager;
mod pairs;
mod triton;

use std::path::Path;

use anyhow::Result;
use clap::{Args, ValueEnum};

use crate::process::{self, cargo_command};

/// Options of `bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Which benchmarks to run.
    #[arg(value_enum, default_value_t = Group::All)]
    group: Group,
    /// Arguments passed to criterion, after `--` (e.g. `-- --save-baseline main`).
    #[arg(last = true)]
    criterion_args: Vec<String>,
}

/// A benchmark group. Later groups (digest, manager, embed, triton) are added here and in
/// [`BENCHES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Group {
    /// Catalog loading and validation (dp-spec).
    Catalog,
    /// File and directory digests against sha256sum, openssl and b3sum.
    Digest,
    /// Sentence embedding (cold load, throughput) against sentence-transformers on PyTorch
    /// (side-by-side rows only, no criterion bench).
    Embed,
    /// The manager's hot path and embedding cache, with the Python manager as anchor.
    Manager,
    /// The Triton provider against Python's tritonclient, and binary vs JSON tensors, on
    /// one real tritonserver (side-by-side rows only, no criterion bench).
    Triton,
    /// Every group.
    All,
}

/// One criterion bench target.
struct Bench {
    /// The group it belongs to.
    group: Group,
    /// The package that defines it.
    package: &'static str,
    /// The `[[bench]]` name.
    target: &'static str,
}

/// Every bench target, in the order `all` runs them.
const BENCHES: &[Bench] = &[
    Bench {
        group: Group::Catalog,
        package: "dp-spec",
        target: "catalog",
    },
    Bench {
        group: Group::Digest,
        package: "dp-digest",
        target: "digest",
    },
    Bench {
        group: Group::Manager,
        package: "dp-manager",
        target: "manager",
    },
];

/// The bench targets `group` selects.
fn selected(group: Group) -> impl Iterator<Item = &'static Bench> {
    BENCHES
        .iter()
        .filter(move |bench| group == Group::All || bench.group == group)
}

/// `cargo xtask bench`: runs `cargo bench -p <package> --bench <target>` for each selected
/// target, then the side-by-side rows of the selected groups.
pub(crate) fn run(root: &Path, args: &BenchArgs) -> Result<()> {
    run_criterion(root, args)?;
    if matches!(args.group, Group::Digest | Group::All) {
        digest::run(root)?;
    }
    if matches!(args.group, Group::Embed | Group::All) {
        embed::run(root)?;
    }
    if matches!(args.group, Group::Manager | Group::All) {
        manager::run(root)?;
    }
    if matches!(args.group, Group::Triton | Group::All) {
        triton::run(root)?;
    }
    Ok(())
}

fn run_criterion(root: &Path, args: &BenchArgs) -> Result<()> {
    for bench in selected(args.group) {
        let mut cmd = cargo_command(
            root,
            &["bench", "-p", bench.package, "--bench", bench.target],
        );
        if !args.criterion_args.is_empty() {
            cmd.arg("--").args(&args.criterion_args);
        }
        process::run(
            &mut cmd,
            &format!(
                "fix the `{}` bench of {} (see the output above)",
                bench.target, bench.package
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_has_a_bench_and_all_selects_them_all() {
        // Triton and Embed have side-by-side rows only.
        for group in Group::value_variants()
            .iter()
            .filter(|g| !matches!(**g, Group::Triton | Group::Embed))
        {
            assert!(selected(*group).next().is_some(), "{group:?}");
        }
        assert_eq!(selected(Group::All).count(), BENCHES.len());
    }
}
