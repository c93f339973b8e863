//! `docs/benchmarks.md`: the report's Markdown spliced between two markers, so the
//! hand-written sections around them (the causes of misses) survive a new run.

use std::path::Path;

use anyhow::{Context, Result, ensure};

use super::report::{PLOT_FILE, Report, markdown_path};
use crate::fsutil::write_atomic;

/// The markers around the generated part of `docs/benchmarks.md`.
const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

/// The document's skeleton when it does not exist yet.
const SKELETON: &str = "# Benchmarks\n\n`cargo xtask bench [catalog|digest|manager|embed|text|clip|generate|audio|whisper|triton|all]` \
measures each figure side by side with the tool a user would otherwise run, and rewrites the \
part of this page between the markers.\n\n<!-- bench:begin -->\n<!-- bench:end -->\n\n\
## Misses and their causes\n\n(Profile each row below its target and write the measured cause \
here.)\n";

/// `existing` with the text between the markers replaced by `generated` (the skeleton when
/// `existing` is `None`). Everything outside the markers is kept.
pub(crate) fn splice(existing: Option<&str>, generated: &str) -> Result<String> {
    let text = existing.unwrap_or(SKELETON);
    let begin = text
        .find(BEGIN)
        .context("docs/benchmarks.md lacks the `<!-- bench:begin -->` marker")?;
    let end = text
        .find(END)
        .context("docs/benchmarks.md lacks the `<!-- bench:end -->` marker")?;
    ensure!(
        begin < end,
        "docs/benchmarks.md: `<!-- bench:end -->` comes before `<!-- bench:begin -->`"
    );
    Ok(format!(
        "{}{BEGIN}\n{generated}{}",
        &text[..begin],
        &text[end..]
    ))
}

/// Rewrites the generated part of `docs/benchmarks.md` from `report`.
pub(crate) fn write_markdown(root: &Path, report: &Report) -> Result<()> {
    let path = markdown_path(root);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let with_plot = path.with_file_name(PLOT_FILE).is_file();
    let text = splice(existing.as_deref(), &report.markdown(with_plot))?;
    write_atomic(&path, text.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    #[test]
    fn splice_replaces_only_the_generated_part() {
        let doc =
            "# T\n\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\n\n## Misses\nmine\n";
        let out = splice(Some(doc), "new\n").unwrap();
        assert_eq!(
            out,
            "# T\n\nintro\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\n\n## Misses\nmine\n"
        );
        assert!(
            splice(None, "x\n")
                .unwrap()
                .contains("## Misses and their causes")
        );
        assert!(splice(Some("no markers"), "x").is_err());
    }
}
