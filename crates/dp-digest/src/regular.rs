//! Reading a file the caller named without ever blocking on it.
//!
//! Opening a FIFO for reading waits until a writer appears, forever if none does, and a
//! character device can stream without end. A path the caller gives as a lock file, a
//! verification cache, a spec, a profile or a file to hash is therefore `stat`ed first and
//! refused unless it is a regular file (symlinks followed); the open itself is
//! non-blocking and checked again on the open handle, so a FIFO swapped in between the two
//! steps is refused too instead of hanging the process.

use std::fs::{self, File};
use std::io::{self, Read as _};
use std::path::Path;

use crate::error::DigestError;

/// What a file type is, in words, for messages about something that is not a regular file.
pub(crate) fn describe(file_type: fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if file_type.is_fifo() {
            return "FIFO (named pipe)";
        }
        if file_type.is_socket() {
            return "socket";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "device";
        }
    }
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// The refusal of `path`, whose type is `file_type`, as the caller's `role`.
fn not_regular(path: &Path, role: &'static str, file_type: fs::FileType) -> DigestError {
    DigestError::NotARegularFile {
        path: path.to_owned(),
        role,
        found: describe(file_type),
    }
}

/// Checks that `path`, if it exists, is a regular file (symlinks followed) without opening
/// it; `role` names it in the error (`"lock file"`, `"verification cache"`…).
///
/// Returns whether it exists.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let file = dir.path().join("catalog.lock");
/// assert!(!dp_digest::check_regular_file(&file, "lock file")?);
/// std::fs::write(&file, b"{}")?;
/// assert!(dp_digest::check_regular_file(&file, "lock file")?);
/// let err = dp_digest::check_regular_file(dir.path(), "lock file").unwrap_err();
/// assert!(err.to_string().contains("must be a regular file"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`DigestError::NotARegularFile`] for a directory, FIFO, socket or device;
/// [`DigestError::Read`] when `path` cannot be `stat`ed for another reason than being
/// absent.
pub fn check_regular_file(path: &Path, role: &'static str) -> Result<bool, DigestError> {
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(meta) => Err(not_regular(path, role, meta.file_type())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(DigestError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether opening a path follows a symbolic link in its last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastLink {
    /// Follow it, as `File::open` does.
    Follow,
    /// Refuse it (`ELOOP`): for paths already resolved, where a link can only have been
    /// swapped in since.
    Refuse,
}

/// Opens `path` for reading without waiting for a FIFO's writer (`O_NONBLOCK`; it changes
/// nothing for a regular file). The caller checks what it opened.
pub(crate) fn open_nonblocking(path: &Path) -> io::Result<File> {
    open_for_reading(path, LastLink::Follow)
}

/// [`open_nonblocking`], choosing whether a final symbolic link is followed.
pub(crate) fn open_for_reading(path: &Path, last_link: LastLink) -> io::Result<File> {
    #[cfg(unix)]
    {
        use rustix::fs::{Mode, OFlags};
        let mut flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC;
        if last_link == LastLink::Refuse {
            flags |= OFlags::NOFOLLOW;
        }
        let fd = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(File::from(fd))
    }
    #[cfg(not(unix))]
    {
        let _ = last_link;
        File::open(path)
    }
}

/// Opens `path` for writing, creating it if needed, without waiting for a FIFO's reader
/// (`O_NONBLOCK`). The caller checks what it opened.
pub(crate) fn open_or_create_nonblocking(path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    {
        use rustix::fs::{Mode, OFlags};
        let fd = rustix::fs::open(
            path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::NONBLOCK | OFlags::CLOEXEC,
            // Narrowed by the umask, like `File::create`.
            Mode::from_bits_truncate(0o666),
        )?;
        Ok(File::from(fd))
    }
    #[cfg(not(unix))]
    {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
    }
}

/// Refuses `file`, opened from `path`, unless it is a regular file.
pub(crate) fn ensure_opened_regular(
    file: &File,
    path: &Path,
    role: &'static str,
) -> Result<(), DigestError> {
    let meta = file.metadata().map_err(|source| DigestError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.is_file() {
        Ok(())
    } else {
        Err(not_regular(path, role, meta.file_type()))
    }
}

/// Reads the whole of `path`, which must be a regular file (symlinks followed); `role`
/// names it in the error. Never blocks on a FIFO, even one swapped in while it is opened.
///
/// # Errors
///
/// [`DigestError::NotARegularFile`] for anything but a regular file; [`DigestError::Read`]
/// when it cannot be read (its `source` is `NotFound` when it does not exist).
pub fn read_regular_file(path: &Path, role: &'static str) -> Result<Vec<u8>, DigestError> {
    let read_error = |source| DigestError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(read_error)?;
    if !meta.is_file() {
        return Err(not_regular(path, role, meta.file_type()));
    }
    let mut file = open_nonblocking(path).map_err(read_error)?;
    // Checked again on the handle: the path may have been replaced since the `stat`.
    ensure_opened_regular(&file, path, role)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_error)?;
    Ok(bytes)
}

/// Whether `err` says the file does not exist.
pub(crate) fn is_not_found(err: &DigestError) -> bool {
    matches!(err, DigestError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let status = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .expect("mkfifo runs");
        assert!(status.success());
    }

    #[test]
    fn regular_files_are_read_and_missing_ones_said_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a.json");
        fs::write(&file, b"{}").expect("write");
        assert_eq!(read_regular_file(&file, "file").expect("read"), b"{}");
        let err = read_regular_file(&dir.path().join("none"), "file").unwrap_err();
        assert!(is_not_found(&err), "{err:?}");
        assert!(!check_regular_file(&dir.path().join("none"), "file").expect("stat"));
    }

    #[cfg(unix)]
    #[test]
    fn fifos_and_directories_are_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("pipe");
        mkfifo(&fifo);
        for err in [
            read_regular_file(&fifo, "lock file").unwrap_err(),
            check_regular_file(&fifo, "lock file").unwrap_err(),
        ] {
            assert!(
                matches!(err, DigestError::NotARegularFile { .. }),
                "{err:?}"
            );
            let message = err.to_string();
            assert!(message.contains("lock file"), "{message}");
            assert!(message.contains(&fifo.display().to_string()), "{message}");
            assert!(message.contains("FIFO"), "{message}");
            assert!(message.contains("must be a regular file"), "{message}");
        }
        let err = read_regular_file(dir.path(), "profile").unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
        // The non-blocking open itself returns at once on a FIFO.
        let opened = open_nonblocking(&fifo).expect("opens without a writer");
        assert!(!opened.metadata().expect("fstat").is_file());
    }
}
