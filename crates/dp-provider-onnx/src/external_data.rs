//! The external-data references of an ONNX file, read from its protobuf bytes before ONNX
//! Runtime sees it, so that a model cannot make the runtime read files outside its own
//! folder (`location: ../../etc/passwd`) or any file that was not verified: every data file
//! is handed to the runtime from the model's verified artifacts.
//!
//! Only the few fields on the path to a tensor's `external_data` are decoded; everything
//! else is skipped by its wire length, so a 100 MB model is walked without copying.

use std::path::{Component, Path};

use dp_spec::{ArtifactBytes, VerifiedArtifacts};

use crate::error::OnnxError;

/// Nesting allowed for subgraphs (If/Loop bodies): deep enough for real models, shallow
/// enough that a crafted file cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// One tensor stored outside the model file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExternalRef {
    /// The tensor's name.
    pub(crate) tensor: String,
    /// Its `location`, relative to the model's folder.
    pub(crate) location: String,
}

/// One external-data file of a model: its `location` as the model names it, and its
/// verified bytes.
pub(crate) struct ExternalFile {
    pub(crate) location: String,
    pub(crate) bytes: ArtifactBytes,
}

/// The external-data files of `model` (a verified `.onnx` file at `model_rel`, relative to
/// the models root), each checked: a plain relative path inside the model's folder, and one
/// of the model's verified files. ONNX Runtime is then given these bytes and never opens a
/// data file itself, so it can neither read a file outside the model nor one that changed
/// since it was verified.
pub(crate) fn external_files(
    model_rel: &str,
    bytes: &[u8],
    artifacts: &VerifiedArtifacts,
) -> Result<Vec<ExternalFile>, OnnxError> {
    let shown = artifacts.display_path(model_rel);
    let refs = external_refs(bytes).map_err(|why| {
        OnnxError::InvalidSpec(format!(
            "{} is not a valid ONNX model ({why}); replace it with the file the spec pins",
            shown.display()
        ))
    })?;
    let dir = model_rel.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut files: Vec<ExternalFile> = Vec::new();
    for r in refs {
        let location = Path::new(&r.location);
        let plain = !r.location.is_empty()
            && location
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !plain {
            return Err(OnnxError::InvalidSpec(format!(
                "{}: tensor '{}' keeps its data at {:?}, outside the model's folder; external \
                 data must be a relative path inside {}",
                shown.display(),
                r.tensor,
                r.location,
                artifacts.display_path(dir).display()
            )));
        }
        if files.iter().any(|f| f.location == r.location) {
            continue;
        }
        let normalized: Vec<&str> = r
            .location
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect();
        let rel = if dir.is_empty() {
            normalized.join("/")
        } else {
            format!("{dir}/{}", normalized.join("/"))
        };
        let file = artifacts.get(&rel).ok_or_else(|| {
            OnnxError::InvalidSpec(format!(
                "{}: tensor '{}' keeps its data in {:?}, which is not among the model's \
                 verified files ({} was not listed in local_artifacts, is missing, or leaves \
                 the models root through a link); list the data file, or the model's folder, \
                 in local_artifacts",
                shown.display(),
                r.tensor,
                r.location,
                artifacts.display_path(&rel).display()
            ))
        })?;
        files.push(ExternalFile {
            location: r.location.clone(),
            bytes: file.bytes().clone(),
        });
    }
    Ok(files)
}

/// Every tensor with external data in a serialized `ModelProto`.
pub(crate) fn external_refs(model: &[u8]) -> Result<Vec<ExternalRef>, String> {
    let mut out = Vec::new();
    for field in Fields::new(model) {
        // ModelProto.graph = 7.
        if let (7, Value::Bytes(graph)) = field? {
            visit_graph(graph, 0, &mut out)?;
        }
    }
    Ok(out)
}

fn visit_graph(graph: &[u8], depth: usize, out: &mut Vec<ExternalRef>) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("subgraphs nested deeper than {MAX_DEPTH}"));
    }
    for field in Fields::new(graph) {
        match field? {
            // GraphProto.node = 1.
            (1, Value::Bytes(node)) => visit_node(node, depth, out)?,
            // GraphProto.initializer = 5.
            (5, Value::Bytes(tensor)) => visit_tensor(tensor, out)?,
            // GraphProto.sparse_initializer = 15.
            (15, Value::Bytes(sparse)) => visit_sparse(sparse, out)?,
            _ => {}
        }
    }
    Ok(())
}

fn visit_node(node: &[u8], depth: usize, out: &mut Vec<ExternalRef>) -> Result<(), String> {
    for field in Fields::new(node) {
        // NodeProto.attribute = 5.
        if let (5, Value::Bytes(attribute)) = field? {
            for field in Fields::new(attribute) {
                match field? {
                    // AttributeProto.t = 5, .tensors = 10.
                    (5 | 10, Value::Bytes(tensor)) => visit_tensor(tensor, out)?,
                    // AttributeProto.g = 6, .graphs = 11.
                    (6 | 11, Value::Bytes(graph)) => visit_graph(graph, depth + 1, out)?,
                    // AttributeProto.sparse_tensor = 22, .sparse_tensors = 23.
                    (22 | 23, Value::Bytes(sparse)) => visit_sparse(sparse, out)?,
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn visit_sparse(sparse: &[u8], out: &mut Vec<ExternalRef>) -> Result<(), String> {
    for field in Fields::new(sparse) {
        // SparseTensorProto.values = 1, .indices = 2.
        if let (1 | 2, Value::Bytes(tensor)) = field? {
            visit_tensor(tensor, out)?;
        }
    }
    Ok(())
}

fn visit_tensor(tensor: &[u8], out: &mut Vec<ExternalRef>) -> Result<(), String> {
    let mut name = String::new();
    let mut locations = Vec::new();
    for field in Fields::new(tensor) {
        match field? {
            // TensorProto.name = 8.
            (8, Value::Bytes(n)) => name = String::from_utf8_lossy(n).into_owned(),
            // TensorProto.external_data = 13: StringStringEntryProto {key = 1, value = 2}.
            (13, Value::Bytes(entry)) => {
                let (mut key, mut value) = (&[][..], &[][..]);
                for field in Fields::new(entry) {
                    match field? {
                        (1, Value::Bytes(k)) => key = k,
                        (2, Value::Bytes(v)) => value = v,
                        _ => {}
                    }
                }
                if key == b"location" {
                    locations.push(String::from_utf8_lossy(value).into_owned());
                }
            }
            _ => {}
        }
    }
    out.extend(locations.into_iter().map(|location| ExternalRef {
        tensor: name.clone(),
        location,
    }));
    Ok(())
}

/// A decoded field value: only length-delimited payloads matter here.
enum Value<'a> {
    Bytes(&'a [u8]),
    Scalar,
}

/// The fields of one protobuf message, in order.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    const fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            failed: false,
        }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0_u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.rest.split_first().ok_or("truncated varint")?;
            self.rest = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "length overflows")?;
        if n > self.rest.len() {
            return Err("field runs past the end of its message".into());
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<(u64, Value<'a>), String> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => self.varint().map(|_| Value::Scalar)?,
            1 => self.take(8).map(|_| Value::Scalar)?,
            2 => {
                let len = self.varint()?;
                Value::Bytes(self.take(len)?)
            }
            5 => self.take(4).map(|_| Value::Scalar)?,
            other => return Err(format!("unsupported wire type {other}")),
        };
        Ok((key >> 3, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let item = self.next_field();
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use super::*;

    /// Appends a length-delimited field.
    fn field(out: &mut Vec<u8>, number: u8, payload: &[u8]) {
        out.push((number << 3) | 2);
        out.push(u8::try_from(payload.len()).unwrap());
        out.extend_from_slice(payload);
    }

    fn tensor_with_location(name: &str, location: &str) -> Vec<u8> {
        let mut entry = Vec::new();
        field(&mut entry, 1, b"location");
        field(&mut entry, 2, location.as_bytes());
        let mut tensor = Vec::new();
        field(&mut tensor, 8, name.as_bytes());
        tensor.extend_from_slice(&[(1 << 3), 1]); // dims = 1, a varint field that is skipped
        field(&mut tensor, 13, &entry);
        tensor
    }

    fn model_with(tensor: &[u8], in_subgraph: bool) -> Vec<u8> {
        let mut graph = Vec::new();
        if in_subgraph {
            let mut inner = Vec::new();
            field(&mut inner, 5, tensor);
            let mut attribute = Vec::new();
            field(&mut attribute, 6, &inner);
            let mut node = Vec::new();
            field(&mut node, 5, &attribute);
            field(&mut graph, 1, &node);
        } else {
            field(&mut graph, 5, tensor);
        }
        let mut model = vec![1 << 3, 8]; // ir_version = 8
        field(&mut model, 7, &graph);
        model
    }

    #[test]
    fn finds_locations_in_initializers_and_subgraphs() {
        for nested in [false, true] {
            let model = model_with(&tensor_with_location("w", "weights.bin"), nested);
            assert_eq!(
                external_refs(&model).unwrap(),
                [ExternalRef {
                    tensor: "w".into(),
                    location: "weights.bin".into()
                }]
            );
        }
    }

    /// The verified files under `root` (unpinned: these tests are about locations).
    fn verified(root: &Path, artifacts: &[&str]) -> VerifiedArtifacts {
        let artifacts: Vec<String> = artifacts.iter().map(|a| (*a).to_owned()).collect();
        dp_digest::open_verified(
            root,
            &artifacts,
            &dp_digest::ArtifactPins::default(),
            &dp_digest::VerifyOptions::default(),
        )
        .unwrap()
        .artifacts
        .unwrap()
    }

    #[test]
    fn refuses_locations_leaving_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("m/data")).unwrap();
        std::fs::write(dir.path().join("m/model.onnx"), b"x").unwrap();
        std::fs::write(dir.path().join("m/data/w.bin"), b"w").unwrap();
        let artifacts = verified(dir.path(), &["m"]);
        for bad in ["../secret.bin", "/etc/passwd", "a/../../b", ""] {
            let model = model_with(&tensor_with_location("w", bad), true);
            let Err(err) = external_files("m/model.onnx", &model, &artifacts) else {
                panic!("{bad}: accepted");
            };
            assert!(
                matches!(&err, OnnxError::InvalidSpec(m) if m.contains("'w'")),
                "{bad}: {err}"
            );
        }
        let good = model_with(&tensor_with_location("w", "data/w.bin"), false);
        let files = external_files("m/model.onnx", &good, &artifacts).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(&*files[0].bytes, b"w");
    }

    #[test]
    fn refuses_data_that_is_not_among_the_verified_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("m")).unwrap();
        std::fs::write(dir.path().join("m/model.onnx"), b"x").unwrap();
        // Present on disk, but not listed: never read.
        std::fs::write(dir.path().join("m/w.bin"), b"w").unwrap();
        let artifacts = verified(dir.path(), &["m/model.onnx"]);
        let model = model_with(&tensor_with_location("w", "w.bin"), false);
        let Err(err) = external_files("m/model.onnx", &model, &artifacts) else {
            panic!("accepted");
        };
        assert!(
            matches!(&err, OnnxError::InvalidSpec(m) if m.contains("not among the model's verified files")),
            "{err}"
        );
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let model = model_with(&tensor_with_location("w", "w.bin"), true);
        for cut in 1..model.len() {
            let _ = external_refs(&model[..cut]);
        }
        assert!(external_refs(&[0x3a, 0x7f]).is_err());
    }
}
