//! Helpers shared by the unit tests: deterministic data and coreutils as the reference.

use std::path::Path;
use std::process::Command;

/// `len` deterministic pseudo-random bytes (xorshift64*), different per `seed`.
pub(crate) fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        bytes.extend_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Runs a shell command line and returns its standard output; panics (failing the test)
/// when it does not succeed.
pub(crate) fn shell(dir: &Path, script: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        output.status.success(),
        "`{script}` failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// The hex digest `sha256sum` prints for a file.
pub(crate) fn sha256sum(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(output.status.success(), "sha256sum failed");
    let text = String::from_utf8(output.stdout).expect("utf-8 output");
    text.split_whitespace().next().expect("a digest").to_owned()
}

/// The documented coreutils pipeline for a directory's aggregate: its hex digest.
pub(crate) fn coreutils_aggregate(dir: &Path) -> String {
    let out = shell(
        dir,
        r"find -L . -type f -print0 | sed -z 's|^\./||' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum",
    );
    out.split_whitespace().next().expect("a digest").to_owned()
}

/// What `sha256sum` prints for the files of a directory, in manifest order.
pub(crate) fn coreutils_lines(dir: &Path) -> String {
    shell(
        dir,
        r"find -L . -type f -print0 | sed -z 's|^\./||' | LC_ALL=C sort -z | xargs -0 sha256sum",
    )
}
