//! Reading `--image FILE` (and `--audio FILE`) arguments: each file read whole (images and
//! audio are decoded from memory), bounded by `--max-input-bytes` over all of them, and
//! refused before it is read when it is not a regular file or is larger than what is left
//! of the bound.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use dp_manager::preset::ImageInput;
use dp_spec::{ErrorCode, ModelError};

fn invalid(message: String) -> ModelError {
    ModelError::new(ErrorCode::InvalidInput, message)
}

/// The images named by `paths`, at most `max_bytes` in all.
///
/// # Errors
/// `invalid_input` for a file that cannot be read, is not a regular file, or does not fit
/// the bound (the message says which flag to raise).
pub(crate) fn read_images(
    paths: &[PathBuf],
    max_bytes: u64,
) -> Result<Vec<ImageInput>, ModelError> {
    Ok(read_files(paths, max_bytes, "image")?
        .into_iter()
        .map(ImageInput::Encoded)
        .collect())
}

/// The bytes of the files named by `paths` (`kind`: `image` or `audio`, for messages), at
/// most `max_bytes` in all.
///
/// # Errors
/// As [`read_images`].
pub(crate) fn read_files(
    paths: &[PathBuf],
    max_bytes: u64,
    kind: &'static str,
) -> Result<Vec<Vec<u8>>, ModelError> {
    let mut left = max_bytes;
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        crate::refuse_special_file(path, kind)?;
        let bytes = read_one(path, left, max_bytes, kind)?;
        left -= bytes.len() as u64;
        files.push(bytes);
    }
    Ok(files)
}

fn read_one(path: &Path, left: u64, max_bytes: u64, kind: &str) -> Result<Vec<u8>, ModelError> {
    let too_large = || {
        invalid(format!(
            "{} does not fit in --max-input-bytes ({max_bytes} bytes for all {kind} files); \
             raise --max-input-bytes or give fewer files per run",
            path.display()
        ))
        .with_detail("max_input_bytes", max_bytes)
        .with_detail("path", path.display().to_string())
    };
    let file = File::open(path).map_err(|err| {
        invalid(format!("cannot read {kind} {}: {err}", path.display()))
            .with_detail("path", path.display().to_string())
    })?;
    if file.metadata().is_ok_and(|m| m.len() > left) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(left.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|err| invalid(format!("cannot read {kind} {}: {err}", path.display())))?;
    if bytes.len() as u64 > left {
        return Err(too_large());
    }
    Ok(bytes)
}
