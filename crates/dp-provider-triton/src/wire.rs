//! The KServe v2 inference wire format: JSON tensors and Triton's binary tensor data
//! extension (`Inference-Header-Content-Length`).
//!
//! Both directions are pure functions of bytes, so they are unit-tested and fuzzed without a
//! server. The decoder trusts nothing in a response: every size is checked against the
//! bytes actually received before anything is allocated.

use std::fmt::Write as _;

use dp_spec::{NamedTensors, Tensor, TensorDType, TensorData};
use serde::Serialize;
use serde_json::Value;
use ureq::http::HeaderMap;

/// The header that splits a binary-extension body into its JSON part and its tensor bytes.
pub const INFERENCE_HEADER: &str = "Inference-Header-Content-Length";

/// How tensors travel in inference requests and responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorEncoding {
    /// Inputs of at least this many bytes travel as binary data, smaller ones as JSON;
    /// outputs always come back as binary data (exact and cheap to decode).
    Auto {
        /// The threshold, in bytes of raw tensor data.
        binary_from_bytes: usize,
    },
    /// Everything as JSON, except what JSON cannot carry exactly (FP16/BF16, non-finite
    /// floats, non-UTF-8 byte strings), which still travels as binary data.
    Json,
    /// Everything as binary data.
    Binary,
}

impl Default for TensorEncoding {
    fn default() -> Self {
        // Below ~1 KiB the JSON text is about as small as the binary data and saves the
        // second body part; above it, binary wins on size and on parse time.
        Self::Auto {
            binary_from_bytes: 1024,
        }
    }
}

/// An encoded inference request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedRequest {
    /// The whole body.
    pub body: Vec<u8>,
    /// Length of its JSON part when binary data follows it (the value of
    /// [`INFERENCE_HEADER`]); `None` for a pure JSON body.
    pub json_len: Option<usize>,
}

/// An output to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    /// The output's name.
    pub name: String,
    /// Whether JSON can carry it (FP16/BF16 cannot); when not, it is asked for as binary
    /// data even in [`TensorEncoding::Json`].
    pub json_ok: bool,
}

impl OutputRequest {
    /// An output of Triton datatype `datatype` (as the model metadata names it).
    #[must_use]
    pub fn new(name: &str, datatype: &str) -> Self {
        Self {
            name: name.to_owned(),
            json_ok: !matches!(datatype, "FP16" | "BF16"),
        }
    }
}

/// The Triton datatype name of a tensor element type.
#[must_use]
pub const fn triton_datatype(dtype: TensorDType) -> &'static str {
    match dtype {
        TensorDType::Fp32 => "FP32",
        TensorDType::Fp16 => "FP16",
        TensorDType::Bf16 => "BF16",
        TensorDType::Int64 => "INT64",
        TensorDType::Int32 => "INT32",
        TensorDType::Int8 => "INT8",
        TensorDType::Uint8 => "UINT8",
        TensorDType::Bool => "BOOL",
        TensorDType::Bytes => "BYTES",
    }
}

/// The element type of a Triton datatype name, if this crate can carry it.
#[must_use]
pub fn dtype_from_triton(name: &str) -> Option<TensorDType> {
    Some(match name {
        "FP32" => TensorDType::Fp32,
        "FP16" => TensorDType::Fp16,
        "BF16" => TensorDType::Bf16,
        "INT64" => TensorDType::Int64,
        "INT32" => TensorDType::Int32,
        "INT8" => TensorDType::Int8,
        "UINT8" => TensorDType::Uint8,
        "BOOL" => TensorDType::Bool,
        "BYTES" => TensorDType::Bytes,
        _ => return None,
    })
}

/// Raw little-endian byte size of a tensor's data (BYTES: with 4-byte length prefixes).
fn raw_len(data: &TensorData) -> usize {
    match data {
        TensorData::Fp32(v) => v.len() * 4,
        TensorData::Fp16(v) | TensorData::Bf16(v) => v.len() * 2,
        TensorData::Int64(v) => v.len() * 8,
        TensorData::Int32(v) => v.len() * 4,
        TensorData::Int8(v) => v.len(),
        TensorData::Uint8(v) => v.len(),
        TensorData::Bool(v) => v.len(),
        TensorData::Bytes(v) => v.iter().map(|b| 4 + b.len()).sum(),
    }
}

/// Whether JSON can carry the data exactly.
fn json_can_carry(data: &TensorData) -> bool {
    match data {
        TensorData::Fp16(_) | TensorData::Bf16(_) => false,
        TensorData::Fp32(v) => v.iter().all(|x| x.is_finite()),
        TensorData::Bytes(v) => v.iter().all(|b| std::str::from_utf8(b).is_ok()),
        _ => true,
    }
}

/// Appends the little-endian bytes of `data` to `out`.
fn append_raw(data: &TensorData, out: &mut Vec<u8>) {
    match data {
        TensorData::Fp32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Fp16(v) | TensorData::Bf16(v) => {
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        TensorData::Int64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Int32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Int8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Bytes(v) => {
            for item in v {
                // A single element over 4 GiB cannot be framed; the caller's size cap stops
                // such requests long before (see `encode_infer_request`).
                let len = u32::try_from(item.len()).unwrap_or(u32::MAX);
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(item);
            }
        }
    }
}

/// The JSON `data` array of a tensor.
struct JsonData<'a>(&'a TensorData);

impl Serialize for JsonData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Fp32(v) => v.serialize(s),
            TensorData::Int64(v) => v.serialize(s),
            TensorData::Int32(v) => v.serialize(s),
            TensorData::Int8(v) => v.serialize(s),
            TensorData::Uint8(v) => s.collect_seq(v.iter()),
            TensorData::Bool(v) => v.serialize(s),
            TensorData::Bytes(v) => {
                s.collect_seq(v.iter().map(|b| std::str::from_utf8(b).unwrap_or_default()))
            }
            // Never chosen for JSON (see `json_can_carry`); bit patterns as numbers.
            TensorData::Fp16(v) | TensorData::Bf16(v) => v.serialize(s),
        }
    }
}

#[derive(Serialize)]
struct InputHeader<'a> {
    name: &'a str,
    shape: &'a [usize],
    datatype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    parameters: BinaryWanted,
}

#[derive(Serialize)]
struct BinaryWanted {
    binary_data: bool,
}

#[derive(Serialize)]
struct RequestHeader<'a> {
    inputs: Vec<InputHeader<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<OutputHeader<'a>>,
}

/// Encodes an inference request for `inputs`, asking for `outputs` (all of the model's
/// outputs when empty).
///
/// ```
/// use dp_provider_triton::{TensorEncoding, encode_infer_request};
/// use dp_spec::{NamedTensors, Tensor, TensorData};
///
/// let mut inputs = NamedTensors::new();
/// inputs.insert("x".into(), Tensor::new(vec![1, 2], TensorData::Fp32(vec![1.0, 2.0]))?);
/// let json = encode_infer_request(&inputs, &[], TensorEncoding::Json);
/// assert_eq!(json.json_len, None);
/// let binary = encode_infer_request(&inputs, &[], TensorEncoding::Binary);
/// assert_eq!(binary.body.len(), binary.json_len.unwrap() + 8);
/// # Ok::<(), dp_spec::ModelError>(())
/// ```
#[must_use]
pub fn encode_infer_request(
    inputs: &NamedTensors,
    outputs: &[OutputRequest],
    encoding: TensorEncoding,
) -> EncodedRequest {
    let mut binary_parts: Vec<&TensorData> = Vec::new();
    let mut headers = Vec::with_capacity(inputs.len());
    for (name, tensor) in inputs {
        let data = tensor.data();
        let binary = !json_can_carry(data)
            || match encoding {
                TensorEncoding::Binary => true,
                TensorEncoding::Json => false,
                TensorEncoding::Auto { binary_from_bytes } => raw_len(data) >= binary_from_bytes,
            };
        if binary {
            binary_parts.push(data);
        }
        headers.push(InputHeader {
            name,
            shape: tensor.shape(),
            datatype: triton_datatype(tensor.dtype()),
            parameters: binary.then(|| BinarySize {
                binary_data_size: raw_len(data),
            }),
            data: (!binary).then_some(JsonData(data)),
        });
    }
    let header = RequestHeader {
        inputs: headers,
        outputs: outputs
            .iter()
            .map(|o| OutputHeader {
                name: &o.name,
                parameters: BinaryWanted {
                    binary_data: encoding != TensorEncoding::Json || !o.json_ok,
                },
            })
            .collect(),
    };
    let raw_total: usize = binary_parts.iter().map(|d| raw_len(d)).sum();
    let mut body = Vec::with_capacity(256 + raw_total);
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    if let Err(err) = serde_json::to_writer(&mut body, &header) {
        tracing::error!(%err, "serializing an inference header failed");
    }
    if binary_parts.is_empty() {
        return EncodedRequest {
            body,
            json_len: None,
        };
    }
    let json_len = body.len();
    for data in binary_parts {
        append_raw(data, &mut body);
    }
    EncodedRequest {
        body,
        json_len: Some(json_len),
    }
}

/// Why a response could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed inference response: {0}")]
pub struct DecodeError(pub String);

fn fail<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// Decodes an inference response: its headers (for [`INFERENCE_HEADER`]) and its body.
///
/// Pure: no I/O, no allocation beyond what the body's own bytes justify, never panics on
/// any input (it is fuzzed).
///
/// ```
/// use dp_provider_triton::decode_infer_response;
/// use dp_spec::TensorData;
/// use ureq::http::HeaderMap;
///
/// let body = br#"{"outputs":[{"name":"y","datatype":"INT32","shape":[2],"data":[1,2]}]}"#;
/// let out = decode_infer_response(&HeaderMap::new(), body)?;
/// assert_eq!(out["y"].data(), &TensorData::Int32(vec![1, 2]));
/// # Ok::<(), dp_provider_triton::DecodeError>(())
/// ```
///
/// # Errors
/// [`DecodeError`] for anything that is not a well-formed response.
pub fn decode_infer_response(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<NamedTensors, DecodeError> {
    let json_len = match headers.get(INFERENCE_HEADER) {
        None => body.len(),
        Some(v) => {
            let Some(n) = v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) else {
                return fail(format!("{INFERENCE_HEADER} is not a number"));
            };
            if n > body.len() {
                return fail(format!(
                    "{INFERENCE_HEADER} is {n} but the body has {} bytes",
                    body.len()
                ));
            }
            n
        }
    };
    let (json, mut binary) = body.split_at(json_len);
    let header: Value = serde_json::from_slice(json)
        .or_else(|err| fail(format!("the JSON part does not parse: {err}")))?;
    let Some(outputs) = header.get("outputs").and_then(Value::as_array) else {
        return fail("no `outputs` array");
    };
    let mut result = NamedTensors::new();
    for output in outputs {
        let Some(name) = output.get("name").and_then(Value::as_str) else {
            return fail("an output has no name");
        };
        let ctx = |msg: &str| DecodeError(format!("output {name:?}: {msg}"));
        let datatype = output
            .get("datatype")
            .and_then(Value::as_str)
            .ok_or_else(|| ctx("no datatype"))?;
        let dtype = dtype_from_triton(datatype)
            .ok_or_else(|| ctx(&format!("unsupported datatype {datatype}")))?;
        let shape = output
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| ctx("no shape"))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| ctx("shape dimensions must be non-negative integers"))?;
        let count = shape
            .iter()
            .try_fold(1_usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| ctx("shape overflows"))?;
        let binary_size = output
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"));
        let data = if let Some(size) = binary_size {
            let size = size
                .as_u64()
                .and_then(|s| usize::try_from(s).ok())
                .ok_or_else(|| ctx("binary_data_size is not a size"))?;
            if size > binary.len() {
                return Err(ctx(&format!(
                    "binary_data_size {size} exceeds the {} bytes left",
                    binary.len()
                )));
            }
            let (bytes, rest) = binary.split_at(size);
            binary = rest;
            decode_raw(dtype, count, bytes).map_err(|m| ctx(&m))?
        } else {
            let items = output
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| ctx("neither data nor binary_data_size"))?;
            if items.len() != count {
                return Err(ctx(&format!(
                    "shape {shape:?} needs {count} elements but data has {}",
                    items.len()
                )));
            }
            decode_json(dtype, items).map_err(|m| ctx(&m))?
        };
        let tensor = Tensor::new(shape, data).map_err(|e| ctx(&e.message))?;
        if result.insert(name.to_owned(), tensor).is_some() {
            return Err(ctx("appears twice"));
        }
    }
    if !binary.is_empty() {
        return fail(format!(
            "{} trailing bytes after the last output",
            binary.len()
        ));
    }
    Ok(result)
}

/// Decodes `count` little-endian elements from exactly `bytes`.
fn decode_raw(dtype: TensorDType, count: usize, bytes: &[u8]) -> Result<TensorData, String> {
    fn fixed<const N: usize, T>(
        count: usize,
        bytes: &[u8],
        from: impl Fn([u8; N]) -> T,
    ) -> Result<Vec<T>, String> {
        if count.checked_mul(N) != Some(bytes.len()) {
            return Err(format!(
                "{} bytes of binary data for {count} elements of {N} bytes",
                bytes.len()
            ));
        }
        Ok(bytes
            .chunks_exact(N)
            .map(|c| {
                let mut a = [0_u8; N];
                a.copy_from_slice(c);
                from(a)
            })
            .collect())
    }
    Ok(match dtype {
        TensorDType::Fp32 => TensorData::Fp32(fixed(count, bytes, f32::from_le_bytes)?),
        TensorDType::Fp16 => TensorData::Fp16(fixed(count, bytes, u16::from_le_bytes)?),
        TensorDType::Bf16 => TensorData::Bf16(fixed(count, bytes, u16::from_le_bytes)?),
        TensorDType::Int64 => TensorData::Int64(fixed(count, bytes, i64::from_le_bytes)?),
        TensorDType::Int32 => TensorData::Int32(fixed(count, bytes, i32::from_le_bytes)?),
        TensorDType::Int8 => TensorData::Int8(fixed(count, bytes, i8::from_le_bytes)?),
        TensorDType::Uint8 => TensorData::Uint8(fixed(count, bytes, |[b]| b)?),
        TensorDType::Bool => TensorData::Bool(fixed(count, bytes, |[b]| b != 0)?),
        TensorDType::Bytes => {
            // Each element: a u32 length, then that many bytes. The element count is checked
            // as elements are read, so a huge `count` allocates nothing up front.
            let mut items = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err("truncated BYTES length prefix".into());
                }
                let (len, tail) = rest.split_at(4);
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                if len > tail.len() {
                    return Err(format!("BYTES element of {len} bytes exceeds the data"));
                }
                let (item, tail) = tail.split_at(len);
                items.push(item.to_vec());
                rest = tail;
                if items.len() > count {
                    break;
                }
            }
            if items.len() != count {
                return Err(format!("{} BYTES elements for {count}", items.len()));
            }
            TensorData::Bytes(items)
        }
    })
}

/// Decodes a JSON `data` array (already checked to hold the right number of elements).
fn decode_json(dtype: TensorDType, items: &[Value]) -> Result<TensorData, String> {
    fn each<T>(
        items: &[Value],
        f: impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<Vec<T>, String> {
        items
            .iter()
            .map(|v| f(v).ok_or_else(|| format!("element {v} is not {what}")))
            .collect()
    }
    #[allow(clippy::cast_possible_truncation)] // f64 → f32 is the intended rounding
    let as_f32 = |v: &Value| v.as_f64().map(|x| x as f32);
    Ok(match dtype {
        TensorDType::Fp32 => TensorData::Fp32(each(items, as_f32, "a number")?),
        TensorDType::Int64 => TensorData::Int64(each(items, Value::as_i64, "an INT64")?),
        TensorDType::Int32 => TensorData::Int32(each(
            items,
            |v| v.as_i64().and_then(|x| i32::try_from(x).ok()),
            "an INT32",
        )?),
        TensorDType::Int8 => TensorData::Int8(each(
            items,
            |v| v.as_i64().and_then(|x| i8::try_from(x).ok()),
            "an INT8",
        )?),
        TensorDType::Uint8 => TensorData::Uint8(each(
            items,
            |v| v.as_u64().and_then(|x| u8::try_from(x).ok()),
            "a UINT8",
        )?),
        TensorDType::Bool => TensorData::Bool(each(items, Value::as_bool, "a boolean")?),
        TensorDType::Bytes => TensorData::Bytes(each(
            items,
            |v| v.as_str().map(|s| s.as_bytes().to_vec()),
            "a string",
        )?),
        TensorDType::Fp16 | TensorDType::Bf16 => {
            return Err("FP16/BF16 must come as binary data".into());
        }
    })
}

/// A short human summary of named tensors, for error messages.
#[must_use]
pub(crate) fn describe(tensors: &NamedTensors) -> String {
    let mut s = String::new();
    for (name, t) in tensors {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{name}: {} {:?}", triton_datatype(t.dtype()), t.shape());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::http::HeaderValue;

    fn one(name: &str, shape: Vec<usize>, data: TensorData) -> NamedTensors {
        let mut m = NamedTensors::new();
        m.insert(name.into(), Tensor::new(shape, data).expect("valid"));
        m
    }

    /// Turns a request body into the response body a server would send back for the same
    /// tensors (the request's `inputs` become `outputs`), to round-trip every dtype.
    fn as_response(req: &EncodedRequest) -> (HeaderMap, Vec<u8>) {
        let json_len = req.json_len.unwrap_or(req.body.len());
        let mut header: Value = serde_json::from_slice(&req.body[..json_len]).expect("json");
        let inputs = header["inputs"].take();
        let response = serde_json::json!({ "model_name": "m", "outputs": inputs });
        let mut body = serde_json::to_vec(&response).expect("json");
        let mut headers = HeaderMap::new();
        if req.json_len.is_some() {
            headers.insert(INFERENCE_HEADER, HeaderValue::from(body.len()));
            body.extend_from_slice(&req.body[json_len..]);
        }
        (headers, body)
    }

    fn samples() -> Vec<NamedTensors> {
        vec![
            one(
                "f32",
                vec![2, 2],
                TensorData::Fp32(vec![1.5, -2.0, 0.1, 3.4e38]),
            ),
            one(
                "f16",
                vec![3],
                TensorData::Fp16(vec![0x3c00, 0xc000, 0x7c00]),
            ),
            one("i64", vec![2], TensorData::Int64(vec![i64::MIN, i64::MAX])),
            one("i32", vec![1, 3], TensorData::Int32(vec![-1, 0, i32::MAX])),
            one("u8", vec![4], TensorData::Uint8(vec![0, 1, 254, 255])),
            one("bool", vec![3], TensorData::Bool(vec![true, false, true])),
            one(
                "bytes",
                vec![3],
                TensorData::Bytes(vec![b"hello".to_vec(), Vec::new(), "é".as_bytes().to_vec()]),
            ),
            one("empty", vec![0, 4], TensorData::Fp32(Vec::new())),
        ]
    }

    #[test]
    fn every_dtype_round_trips_in_every_encoding() {
        for encoding in [
            TensorEncoding::Json,
            TensorEncoding::Binary,
            TensorEncoding::default(),
        ] {
            for tensors in samples() {
                let req = encode_infer_request(&tensors, &[], encoding);
                let (headers, body) = as_response(&req);
                let back = decode_infer_response(&headers, &body).expect("decodes");
                assert_eq!(back, tensors, "{encoding:?}");
            }
        }
    }

    #[test]
    fn auto_picks_binary_by_size_and_json_cannot_carry_fp16() {
        let small = one("x", vec![4], TensorData::Fp32(vec![0.0; 4]));
        let big = one("x", vec![1024], TensorData::Fp32(vec![0.0; 1024]));
        let auto = TensorEncoding::default();
        assert_eq!(encode_infer_request(&small, &[], auto).json_len, None);
        assert!(encode_infer_request(&big, &[], auto).json_len.is_some());
        let half = one("h", vec![1], TensorData::Fp16(vec![0x3c00]));
        assert!(
            encode_infer_request(&half, &[], TensorEncoding::Json)
                .json_len
                .is_some()
        );
        let nan = one("n", vec![1], TensorData::Fp32(vec![f32::NAN]));
        assert!(
            encode_infer_request(&nan, &[], TensorEncoding::Json)
                .json_len
                .is_some()
        );
    }

    #[test]
    fn requested_outputs_ask_for_binary_unless_json() {
        let t = one("x", vec![1], TensorData::Int32(vec![1]));
        let outs = [
            OutputRequest::new("y", "INT32"),
            OutputRequest::new("h", "FP16"),
        ];
        let req = encode_infer_request(&t, &outs, TensorEncoding::Json);
        let v: Value = serde_json::from_slice(&req.body).expect("json");
        assert_eq!(v["outputs"][0]["name"], "y");
        assert_eq!(v["outputs"][0]["parameters"]["binary_data"], false);
        assert_eq!(v["outputs"][1]["parameters"]["binary_data"], true);
        let req = encode_infer_request(&t, &outs, TensorEncoding::default());
        let v: Value = serde_json::from_slice(&req.body).expect("json");
        assert_eq!(v["outputs"][0]["parameters"]["binary_data"], true);
    }

    #[test]
    fn hostile_responses_are_errors_not_panics_or_huge_allocations() {
        let with_len = |n: &str| {
            let mut h = HeaderMap::new();
            h.insert(INFERENCE_HEADER, HeaderValue::from_str(n).expect("ascii"));
            h
        };
        let none = HeaderMap::new();
        let cases: Vec<(HeaderMap, Vec<u8>)> = vec![
            (none.clone(), b"".to_vec()),
            (none.clone(), b"{}".to_vec()),
            (none.clone(), br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1000000000000],"data":[1]}]}"#.to_vec()),
            (none.clone(), br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[4294967296,4294967296,4294967296],"data":[]}]}"#.to_vec()),
            (none.clone(), br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[-1],"data":[]}]}"#.to_vec()),
            (none.clone(), br#"{"outputs":[{"name":"y","datatype":"FP64","shape":[1],"data":[1]}]}"#.to_vec()),
            (none.clone(), br#"{"outputs":[{"name":"y","datatype":"INT32","shape":[1],"data":[1e20]}]}"#.to_vec()),
            (with_len("99"), b"{}".to_vec()),
            (with_len("x"), b"{}".to_vec()),
            (none.clone(), br#"{"outputs":[{"name":"y","datatype":"BYTES","shape":[100000000000],"parameters":{"binary_data_size":0}}]}"#.to_vec()),
        ];
        let mut cases = cases;
        // Claims 4 GB of binary data behind a 60-byte body.
        let lying = br#"{"outputs":[{"name":"y","datatype":"FP32","shape":[1000000000],"parameters":{"binary_data_size":4000000000}}]}"#;
        let mut body = lying.to_vec();
        body.extend_from_slice(&[0; 8]);
        cases.push((with_len(&lying.len().to_string()), body));
        for (headers, body) in cases {
            assert!(
                decode_infer_response(&headers, &body).is_err(),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn binary_size_mismatches_and_trailing_bytes_are_errors() {
        let header = br#"{"outputs":[{"name":"y","datatype":"INT32","shape":[2],"parameters":{"binary_data_size":8}}]}"#;
        let mut h = HeaderMap::new();
        h.insert(INFERENCE_HEADER, HeaderValue::from(header.len()));
        let mut ok = header.to_vec();
        ok.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let out = decode_infer_response(&h, &ok).expect("valid");
        assert_eq!(out["y"].data(), &TensorData::Int32(vec![1, 2]));
        let mut short = header.to_vec();
        short.extend_from_slice(&[1, 0, 0, 0]);
        assert!(decode_infer_response(&h, &short).is_err());
        let mut long = ok.clone();
        long.push(0);
        assert!(decode_infer_response(&h, &long).is_err());
    }

    /// A cheap fuzz: random mutations of valid bodies never panic.
    #[test]
    fn mutated_bodies_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for tensors in samples() {
            let (headers, body) =
                as_response(&encode_infer_request(&tensors, &[], TensorEncoding::Binary));
            for _ in 0..2000 {
                let mut b = body.clone();
                for _ in 0..(next() % 4 + 1) {
                    let len = b.len().max(1);
                    let i = usize::try_from(next()).unwrap_or(0) % len;
                    match next() % 3 {
                        0 if !b.is_empty() => b[i] = next().to_le_bytes()[0],
                        1 if !b.is_empty() => b.truncate(i),
                        _ => b.insert(i.min(b.len()), b"0123456789{}[],:\"-"[i % 18]),
                    }
                }
                let _ = decode_infer_response(&headers, &b);
            }
        }
    }
}
