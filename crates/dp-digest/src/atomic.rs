//! Crash-safe file replacement: write a uniquely named temp file in the target's directory,
//! fsync it, rename it over the target, fsync the directory.
//!
//! `rename(2)` within one file system is atomic, so a reader (or a process restarted after
//! SIGKILL or a power cut) sees either the previous complete file or the new complete
//! file, never a truncated one. Temp files left by killed writers have random names and are
//! never read.

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::error::DigestError;

/// Suffix of every temp file written here.
const TEMP_SUFFIX: &str = ".tmp";

/// Who may read the file once written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Visibility {
    /// Readable according to the umask, like any file the user creates (lock files are
    /// meant to be committed and shared).
    Shared,
    /// Readable and writable by the owner only (the verification cache).
    Private,
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// The temp-file name prefix for `path`: `.<file name>.`; the random part and
/// [`TEMP_SUFFIX`] follow.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or(OsStr::new("file"));
    format!(".{}.", name.to_string_lossy())
}

/// Writes `bytes` to `path` atomically and durably: a uniquely named temp file in the same
/// folder, fsynced, renamed over `path`, then the folder fsynced, so a reader (or a process
/// restarted after a crash) sees the old complete file or the new one, never a mix.
///
/// A file that is replaced keeps its permissions; a new file gets the mode the umask gives
/// (`0644` under umask `022`), like any file the user creates.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("spec.yaml");
/// dp_digest::write_file_atomically(&path, b"model_name: a\n")?;
/// assert_eq!(std::fs::read(&path)?, b"model_name: a\n");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`DigestError::Write`] when the folder or the file cannot be written, synced or renamed.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), DigestError> {
    write_atomically(path, bytes, Visibility::Shared)
}

/// Replaces the contents of `path` by `bytes`, atomically and durably. An existing file
/// keeps its permissions; `visibility` sets those of a new one.
pub(crate) fn write_atomically(
    path: &Path,
    bytes: &[u8],
    visibility: Visibility,
) -> Result<(), DigestError> {
    let write_error = |path: &Path| {
        let path = path.to_owned();
        move |source| DigestError::Write { path, source }
    };
    let dir = parent_dir(path);
    let prefix = temp_prefix(path);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(TEMP_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // The mode passes through the umask, exactly like `File::create`.
        let mode = match visibility {
            Visibility::Shared => 0o666,
            Visibility::Private => 0o600,
        };
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = visibility;
    // The permissions of the file being replaced (symlinks followed): the rename must not
    // swap them for the temp file's (a shared spec or lock file turning owner-only).
    let existing = fs::metadata(path)
        .ok()
        .filter(fs::Metadata::is_file)
        .map(|meta| meta.permissions());
    let mut temp = builder.tempfile_in(dir).map_err(write_error(dir))?;
    temp.write_all(bytes).map_err(write_error(temp.path()))?;
    if let Some(permissions) = existing {
        // On the handle (`fchmod`), so the umask does not narrow them.
        temp.as_file()
            .set_permissions(permissions)
            .map_err(write_error(temp.path()))?;
    }
    // Data must be on disk before the rename makes it visible, or a crash could leave the
    // new name pointing at an empty file.
    temp.as_file()
        .sync_all()
        .map_err(write_error(temp.path()))?;
    temp.persist(path).map_err(|e| write_error(path)(e.error))?;
    sync_dir(dir).map_err(write_error(dir))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    // Other systems cannot open a directory as a file; their rename is already as durable
    // as it gets.
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// Removes temp files that [`write_atomically`] left for `path` when its writer was
/// killed. Only call this while holding the lock that every writer of `path` holds, or a
/// live writer's temp file could be removed. Best effort: failures are ignored, since a
/// leftover temp file is harmless.
pub(crate) fn remove_stale_temp_files(path: &Path) {
    let prefix = temp_prefix(path);
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // `.<name>.<random>.tmp` where the random part has no dot: this keeps the temp
        // files of `<name>.other` out of reach.
        let is_ours = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
            .is_some_and(|random| !random.is_empty() && !random.contains('.'));
        if is_ours {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The temp files currently present for `path` (for tests).
#[cfg(test)]
pub(crate) fn temp_files_of(path: &Path) -> Vec<std::path::PathBuf> {
    let prefix = temp_prefix(path);
    fs::read_dir(parent_dir(path))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(TEMP_SUFFIX))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        write_atomically(&path, b"old\n", Visibility::Private).expect("first write");
        write_atomically(&path, b"new\n", Visibility::Private).expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"new\n");
        assert!(temp_files_of(&path).is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o077, 0, "private file readable by others: {mode:o}");
        }
    }

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt as _;
        fs::metadata(path).expect("stat").permissions().mode() & 0o7777
    }

    #[cfg(unix)]
    #[test]
    fn replacing_a_file_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, visibility) in [
            ("shared", Visibility::Shared),
            ("private", Visibility::Private),
        ] {
            let path = dir.path().join(name);
            write_atomically(&path, b"old\n", visibility).expect("first write");
            // A mode no umask gives, so keeping it cannot be a coincidence.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
            write_atomically(&path, b"new\n", visibility).expect("replace");
            assert_eq!(fs::read(&path).expect("read"), b"new\n");
            assert_eq!(mode_of(&path), 0o640, "{name}: the mode was not kept");
        }
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_mode_their_umask_gives() {
        use std::os::unix::fs::OpenOptionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        // Reference files created the ordinary way, under the same umask.
        let shared_reference = dir.path().join("reference-shared");
        fs::File::create(&shared_reference).expect("create");
        let private_reference = dir.path().join("reference-private");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&private_reference)
            .expect("create");
        let shared = dir.path().join("shared");
        write_atomically(&shared, b"x", Visibility::Shared).expect("write");
        assert_eq!(mode_of(&shared), mode_of(&shared_reference));
        let private = dir.path().join("private");
        write_atomically(&private, b"x", Visibility::Private).expect("write");
        assert_eq!(mode_of(&private), mode_of(&private_reference));
    }

    #[test]
    fn stale_temp_files_are_removed_but_not_other_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock.json");
        let stale = dir.path().join(".lock.json.AbC123.tmp");
        let other = dir.path().join(".lock.json.x.AbC123.tmp");
        fs::write(&stale, b"{ trunc").expect("write");
        fs::write(&other, b"keep").expect("write");
        remove_stale_temp_files(&path);
        assert!(!stale.exists());
        assert!(other.exists());
    }

    #[test]
    fn unwritable_directory_is_a_write_error() {
        let err = write_atomically(
            Path::new("/nonexistent-dir/x.json"),
            b"{}",
            Visibility::Shared,
        )
        .unwrap_err();
        assert!(matches!(err, DigestError::Write { .. }), "{err:?}");
        assert!(err.to_string().contains("/nonexistent-dir"), "{err}");
    }
}
