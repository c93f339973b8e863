//! Directory manifests on arbitrary trees (names, contents, symlinks): never a panic; when
//! a manifest is produced, every entry's digest is the digest of the file's bytes and the
//! aggregate is the digest of the `sha256sum` lines, as docs/digests.md promises.
#![no_main]

use std::path::Path;

use arbitrary::Arbitrary;
use dp_digest::{DigestAlgorithm, ManifestOptions, digest_bytes, manifest_of_dir};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
enum Node {
    File { name: Vec<u8>, contents: Vec<u8> },
    Dir { name: Vec<u8> },
    Link { name: Vec<u8>, target: Vec<u8> },
}

#[derive(Debug, Arbitrary)]
struct Tree {
    blake3: bool,
    nodes: Vec<Node>,
}

fn path_of(root: &Path, name: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::OsStr::from_bytes(name);
    let rel = Path::new(name);
    // Keep the fuzzer's writes inside its temporary directory.
    if name.is_empty()
        || rel.is_absolute()
        || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return None;
    }
    Some(root.join(rel))
}

fuzz_target!(|tree: Tree| {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("root");
    std::fs::create_dir(&root).expect("root");
    for node in tree.nodes.iter().take(32) {
        match node {
            Node::File { name, contents } => {
                if let Some(p) = path_of(&root, name) {
                    let _ = std::fs::write(p, contents);
                }
            }
            Node::Dir { name } => {
                if let Some(p) = path_of(&root, name) {
                    let _ = std::fs::create_dir_all(p);
                }
            }
            Node::Link { name, target } => {
                if let Some(p) = path_of(&root, name) {
                    use std::os::unix::ffi::OsStrExt;
                    let _ = std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), p);
                }
            }
        }
    }
    let algorithm = if tree.blake3 { DigestAlgorithm::Blake3 } else { DigestAlgorithm::Sha256 };
    let options = ManifestOptions { algorithm, ..ManifestOptions::default() };
    let Ok(manifest) = manifest_of_dir(&root, &options) else {
        return;
    };
    for entry in &manifest.files {
        let bytes = std::fs::read(root.join(&entry.path)).expect("listed file is readable");
        assert_eq!(entry.size, bytes.len() as u64);
        assert_eq!(entry.digest, digest_bytes(algorithm, &bytes));
        assert!(!entry.path.starts_with("./") && !entry.path.contains('\\'));
    }
    assert!(manifest.files.windows(2).all(|w| w[0].path.as_bytes() < w[1].path.as_bytes()));
    assert_eq!(manifest.aggregate, digest_bytes(algorithm, manifest.sha256sum_lines().as_bytes()));
});
