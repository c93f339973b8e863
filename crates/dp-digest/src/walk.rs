//! Listing the files of artifacts under a root, with the manifest rules: `/`-separated
//! relative paths, symlinks followed only while they stay inside the tree, names that
//! `sha256sum` would escape refused, ignore globs applied.
//!
//! Problems with one entry (a link leaving the tree, a FIFO, an unsupported name) are
//! collected as [`Rejected`] entries instead of aborting the walk, so that verification can
//! report each of them by path; building a manifest turns the first one into an error.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::DigestError;

/// What an artifact turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArtifactKind {
    /// A regular file (or a symlink to one).
    File,
    /// A directory (or a symlink to one).
    Dir,
}

/// An entry that cannot be part of a manifest, with the reason.
#[derive(Debug)]
pub(crate) struct Rejected {
    /// Its path relative to the root.
    pub(crate) path: String,
    /// Why.
    pub(crate) error: DigestError,
}

/// The result of walking artifacts.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The artifacts, normalized (`""` for the root itself).
    pub(crate) artifacts: Vec<String>,
    /// What each artifact is; `None` when it is missing or rejected.
    pub(crate) kinds: Vec<Option<ArtifactKind>>,
    /// Relative path → path to open, sorted by the bytes of the relative path.
    pub(crate) files: BTreeMap<String, PathBuf>,
    /// Artifacts that do not exist (normalized, `.` for the root).
    pub(crate) missing: Vec<String>,
    /// Entries refused by the manifest rules.
    pub(crate) rejected: Vec<Rejected>,
}

/// Turns an artifact string into its normalized relative form (`""` for the root).
pub(crate) fn normalize_artifact(artifact: &str) -> Result<String, DigestError> {
    let invalid = |reason| DigestError::InvalidArtifactPath {
        artifact: artifact.to_owned(),
        reason,
    };
    if artifact.is_empty() {
        return Err(invalid("is empty"));
    }
    if artifact.starts_with('/') {
        return Err(invalid("is absolute"));
    }
    if let Some(reason) = unsupported_name_reason(artifact) {
        return Err(invalid(reason));
    }
    let mut segments = Vec::new();
    for segment in artifact.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(invalid("contains a `..` segment")),
            other => segments.push(other),
        }
    }
    Ok(segments.join("/"))
}

/// Why a name cannot appear in a manifest line, if it cannot. `sha256sum` (coreutils 9)
/// escapes names containing a backslash, a newline or a carriage return.
fn unsupported_name_reason(name: &str) -> Option<&'static str> {
    if name.contains('\n') {
        Some("contains a newline")
    } else if name.contains('\r') {
        Some("contains a carriage return")
    } else if name.contains('\\') {
        Some("contains a backslash")
    } else {
        None
    }
}

/// How `rel` appears in messages: the root itself is `.`.
fn shown(rel: &str) -> String {
    if rel.is_empty() {
        ".".to_owned()
    } else {
        rel.to_owned()
    }
}

/// `parent/name`, or `name` at the top.
fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// A directory still to be listed.
struct PendingDir {
    /// The path to list (through any symlinks, as reached).
    path: PathBuf,
    /// Its path relative to the root.
    rel: String,
    /// The canonical paths of it and its ancestors along the walk, to detect loops.
    chain: Vec<PathBuf>,
}

/// The walk's fixed context.
struct Walker<'a> {
    /// The root as given, for messages.
    root: &'a Path,
    /// The root's canonical path: nothing outside it may be hashed.
    boundary: PathBuf,
    ignore: &'a GlobSet,
    walk: Walk,
}

/// Lists the files of `artifacts` (paths relative to `root`).
///
/// Fails only on invalid artifact strings and on I/O errors; missing artifacts and refused
/// entries are reported in the [`Walk`].
pub(crate) fn walk_artifacts(
    root: &Path,
    artifacts: &[String],
    ignore: &GlobSet,
) -> Result<Walk, DigestError> {
    let normalized = artifacts
        .iter()
        .map(|a| normalize_artifact(a))
        .collect::<Result<Vec<_>, _>>()?;
    let read_error = |source| DigestError::Read {
        path: root.to_owned(),
        source,
    };
    let boundary = match fs::canonicalize(root) {
        Ok(boundary) => boundary,
        Err(e) if is_absent(&e) => {
            return Ok(Walk {
                kinds: vec![None; normalized.len()],
                missing: normalized.iter().map(|a| shown(a)).collect(),
                artifacts: normalized,
                ..Walk::default()
            });
        }
        Err(e) => return Err(read_error(e)),
    };
    let root_abs = std::path::absolute(root).map_err(read_error)?;
    let mut walker = Walker {
        root,
        boundary,
        ignore,
        walk: Walk::default(),
    };
    for artifact in &normalized {
        let kind = walker.artifact(&root_abs, artifact)?;
        walker.walk.kinds.push(kind);
    }
    walker.walk.artifacts = normalized;
    Ok(walker.walk)
}

/// Whether an error means "nothing there" (including a path through a regular file).
/// `ELOOP`: too many levels of symbolic links (a link pointing at itself, or a cycle).
fn is_loop(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

impl Walker<'_> {
    fn reject(&mut self, path: &str, error: DigestError) {
        self.walk.rejected.push(Rejected {
            path: shown(path),
            error,
        });
    }

    /// Adds one artifact; returns what it is, `None` when missing or rejected.
    fn artifact(
        &mut self,
        root_abs: &Path,
        rel: &str,
    ) -> Result<Option<ArtifactKind>, DigestError> {
        let path = if rel.is_empty() {
            root_abs.to_owned()
        } else {
            root_abs.join(rel)
        };
        let canonical = match fs::canonicalize(&path) {
            Ok(canonical) => canonical,
            // A dangling link as the artifact itself: the weights are not there.
            Err(e) if is_absent(&e) => {
                self.walk.missing.push(shown(rel));
                return Ok(None);
            }
            // A symlink loop as the artifact itself: its bytes cannot be identified. Refused
            // like any other unverifiable entry, so verification goes on with other models.
            Err(source) if is_loop(&source) => {
                let target = fs::read_link(&path).unwrap_or_else(|_| path.clone());
                let error = DigestError::BrokenSymlink {
                    link: shown(rel),
                    target,
                    root: self.root.to_owned(),
                    source,
                };
                self.reject(rel, error);
                return Ok(None);
            }
            Err(source) => return Err(DigestError::Read { path, source }),
        };
        if !canonical.starts_with(&self.boundary) {
            let error = DigestError::ArtifactEscapesRoot {
                artifact: shown(rel),
                resolved: canonical,
                root: self.root.to_owned(),
            };
            self.reject(rel, error);
            return Ok(None);
        }
        let meta = fs::metadata(&canonical).map_err(|source| DigestError::Read {
            path: path.clone(),
            source,
        })?;
        if meta.is_file() && rel.is_empty() {
            // The root itself must be a directory: a file has no relative path to list.
            Err(DigestError::Read {
                path,
                source: io::ErrorKind::NotADirectory.into(),
            })
        } else if meta.is_file() {
            self.walk.files.insert(rel.to_owned(), canonical);
            Ok(Some(ArtifactKind::File))
        } else if meta.is_dir() {
            self.directory(PendingDir {
                path,
                rel: rel.to_owned(),
                chain: vec![canonical],
            })?;
            Ok(Some(ArtifactKind::Dir))
        } else {
            let error = DigestError::SpecialFile {
                path: shown(rel),
                root: self.root.to_owned(),
            };
            self.reject(rel, error);
            Ok(None)
        }
    }

    /// Lists a directory and everything below it.
    fn directory(&mut self, top: PendingDir) -> Result<(), DigestError> {
        // An explicit stack rather than recursion: deep trees cannot overflow the stack.
        let mut pending = vec![top];
        while let Some(dir) = pending.pop() {
            let read_error = |source| DigestError::Read {
                path: dir.path.clone(),
                source,
            };
            for entry in fs::read_dir(&dir.path).map_err(read_error)? {
                let entry = entry.map_err(read_error)?;
                if let Some(subdir) = self.entry(&dir, &entry)? {
                    pending.push(subdir);
                }
            }
        }
        Ok(())
    }

    /// Handles one directory entry; returns it when it is a directory to descend into.
    fn entry(
        &mut self,
        dir: &PendingDir,
        entry: &fs::DirEntry,
    ) -> Result<Option<PendingDir>, DigestError> {
        let name = entry.file_name();
        // Ignore patterns see the raw path, so that even a badly named file can be ignored.
        if self.ignore.is_match(Path::new(&dir.rel).join(&name)) {
            return Ok(None);
        }
        let Some(rel) = self.checked_name(&dir.rel, &name) else {
            return Ok(None);
        };
        let path = entry.path();
        let read_error = |source| DigestError::Read {
            path: path.clone(),
            source,
        };
        let file_type = entry.file_type().map_err(read_error)?;
        let is_link = file_type.is_symlink();
        let parent_canonical = dir.chain.last().map_or_else(PathBuf::new, Clone::clone);
        // The entry's real type: the link target's for a symlink, else the type the
        // directory listing gave (no `stat` needed for plain files and directories).
        let (canonical, file_type) = if file_type.is_symlink() {
            let target = fs::read_link(&path).map_err(read_error)?;
            let canonical = match fs::canonicalize(&path) {
                Ok(canonical) => canonical,
                Err(source) => {
                    let error = DigestError::BrokenSymlink {
                        link: rel.clone(),
                        target,
                        root: self.root.to_owned(),
                        source,
                    };
                    self.reject(&rel, error);
                    return Ok(None);
                }
            };
            if !canonical.starts_with(&self.boundary) {
                let error = DigestError::SymlinkEscapesTree {
                    link: rel.clone(),
                    target,
                    root: self.root.to_owned(),
                };
                self.reject(&rel, error);
                return Ok(None);
            }
            let meta = fs::metadata(&canonical).map_err(read_error)?;
            // Symlinks are opened through their resolved path: the one just checked.
            (canonical, meta.file_type())
        } else {
            // Not a link: its canonical path is its parent's plus its name.
            (parent_canonical.join(&name), file_type)
        };
        if file_type.is_file() {
            let open = if is_link { canonical } else { path };
            self.walk.files.insert(rel, open);
            Ok(None)
        } else if file_type.is_dir() {
            if dir.chain.contains(&canonical) {
                let error = DigestError::SymlinkLoop {
                    path: rel.clone(),
                    target: canonical,
                    root: self.root.to_owned(),
                };
                self.reject(&rel, error);
                return Ok(None);
            }
            let mut chain = dir.chain.clone();
            chain.push(canonical);
            Ok(Some(PendingDir { path, rel, chain }))
        } else {
            let error = DigestError::SpecialFile {
                path: rel.clone(),
                root: self.root.to_owned(),
            };
            self.reject(&rel, error);
            Ok(None)
        }
    }

    /// `parent/name` when `name` may appear in a manifest; otherwise records the rejection.
    fn checked_name(&mut self, parent: &str, name: &OsStr) -> Option<String> {
        let Some(text) = name.to_str() else {
            let rel = join(parent, &name.to_string_lossy());
            let error = DigestError::UnsupportedFileName {
                path: rel.clone(),
                root: self.root.to_owned(),
                reason: "is not valid UTF-8",
            };
            self.reject(&rel, error);
            return None;
        };
        let rel = join(parent, text);
        if let Some(reason) = unsupported_name_reason(text) {
            let error = DigestError::UnsupportedFileName {
                path: rel.clone(),
                root: self.root.to_owned(),
                reason,
            };
            self.reject(&rel, error);
            return None;
        }
        Some(rel)
    }
}

/// Compiles ignore patterns; `*` does not match `/`, like in `.gitignore`.
pub(crate) fn build_ignore(patterns: &[String]) -> Result<GlobSet, DigestError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|source| DigestError::InvalidIgnorePattern {
                pattern: pattern.clone(),
                source,
            })?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|source| DigestError::InvalidIgnorePattern {
            pattern: patterns.join(" "),
            source,
        })
}

/// Lists artifacts without ignoring anything (verification hashes every byte a pin covers).
pub(crate) fn walk_all(root: &Path, artifacts: &[String]) -> Result<Walk, DigestError> {
    walk_artifacts(root, artifacts, &GlobSet::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_artifact_paths() {
        for (given, expected) in [
            ("a/b.bin", "a/b.bin"),
            ("./a//b/", "a/b"),
            (".", ""),
            ("model", "model"),
        ] {
            assert_eq!(normalize_artifact(given).expect(given), expected);
        }
        for bad in ["", "/abs", "a/../b", "..", "a\\b", "a\nb"] {
            let err = normalize_artifact(bad).unwrap_err();
            assert!(
                matches!(err, DigestError::InvalidArtifactPath { .. }),
                "{bad:?}"
            );
        }
    }
}
