//! `cargo xtask bench catalog`: loading and validating a generated catalog of 1,000 specs
//! (`crates/dp-spec/benches/catalog.rs --figures`) against what a Python user would do with
//! the same files (`catalog_anchor.py`: PyYAML, then jsonschema with the schema this
//! project generates), both timing themselves, interleaved.

use std::path::Path;

use anyhow::{Result, bail};

use super::Executables;
use super::pairs::{CommandLine, figure_rounds, series};
use super::report::{Row, Side, Target, Unit};
use crate::process;

/// The target: under 100 ms per load.
const TARGET_S: f64 = 0.100;

/// Runs the catalog row.
pub(crate) fn run(root: &Path, exes: &Executables, pairs: usize) -> Result<Vec<Row>> {
    let exe = exes.catalog.to_string_lossy().into_owned();
    let dir = root.join("target/bench/data/catalog-1000");
    let dir_s = dir.to_string_lossy().into_owned();
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    process::run(
        std::process::Command::new(&exe).args(["--write", &dir_s]),
        "the catalog runner could not write the 1,000 specs",
    )?;
    let ours = CommandLine::new("dp-spec Catalog::load", &[&exe, "--figures", &dir_s]);
    let python = root.join(crate::setup::VENV_DIR).join("bin/python");
    let anchor = CommandLine::new(
        "Python: PyYAML + jsonschema",
        &[
            &python.to_string_lossy(),
            &root
                .join("xtask/src/bench/catalog_anchor.py")
                .to_string_lossy(),
            "--schema",
            &root
                .join("specs/schema/model-spec.schema.json")
                .to_string_lossy(),
            "--catalog",
            &dir_s,
        ],
    );
    let rounds = figure_rounds(&[&ours, &anchor], pairs)?;
    let [ours_r, anchor_r] = rounds.as_slice() else {
        bail!("expected the figures of two runners");
    };
    let row = Row::new(
        "catalog.load_validate_1000",
        "catalog of 1,000 specs: load + validate",
        Unit::Seconds,
        Side::new(&ours.label, series(ours_r, "load_validate_s")?),
        Side::new(&anchor.label, series(anchor_r, "load_validate_s")?),
        vec![Target::OursAtMost { value: TARGET_S }],
    )?
    .with_note(format!(
        "Python: PyYAML {} loader, jsonschema {}, validator built once outside the timing",
        anchor_r[0].text("yaml_loader").unwrap_or_default(),
        anchor_r[0].text("jsonschema").unwrap_or_default()
    ));
    println!("{}", row.summary());
    Ok(vec![row])
}
