//! Conversions between Python objects and the Rust types: JSON values (records, reports,
//! options), NumPy arrays (from one contiguous buffer: `numpy.frombuffer` over a
//! `bytearray`, never one Python object per element) and named tensors.

use dp_spec::{NamedTensors, Tensor, TensorData};
use pyo3::IntoPyObjectExt as _;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use serde::Serialize;

use crate::error::Error;

/// A JSON value as Python objects: `None`, `bool`, `int`, `float`, `str`, `list`, `dict`
/// (keys in the value's order).
pub(crate) fn json_to_py<'py>(
    py: Python<'py>,
    value: &serde_json::Value,
) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    match value {
        Value::Null => Ok(py.None().into_bound(py)),
        Value::Bool(b) => b.into_bound_py_any(py),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_bound_py_any(py)
            } else if let Some(u) = n.as_u64() {
                u.into_bound_py_any(py)
            } else {
                n.as_f64().unwrap_or(f64::NAN).into_bound_py_any(py)
            }
        }
        Value::String(s) => s.into_bound_py_any(py),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            Ok(list.into_any())
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, json_to_py(py, item)?)?;
            }
            Ok(dict.into_any())
        }
    }
}

/// Anything serializable (a report, a record) as Python objects, through its JSON form: the
/// same fields and values `dp … --json` prints.
pub(crate) fn to_py<'py, T: Serialize + ?Sized>(
    py: Python<'py>,
    value: &T,
) -> Result<Bound<'py, PyAny>, Error> {
    let json = serde_json::to_value(value).map_err(|err| {
        Error::Model(dp_spec::ModelError::new(
            dp_spec::ErrorCode::Io,
            format!("cannot serialize the result: {err}"),
        ))
    })?;
    Ok(json_to_py(py, &json)?)
}

/// A Python value (`None`, `bool`, `int`, `float`, `str`, list/tuple, dict with str keys) as
/// JSON, for task options and overrides.
pub(crate) fn py_to_json(value: &Bound<'_, PyAny>) -> Result<serde_json::Value, Error> {
    use serde_json::Value;
    if value.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if value.cast::<PyInt>().is_ok() {
        if let Ok(i) = value.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = value.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(Error::invalid(format!(
            "integer {value} does not fit in 64 bits"
        )));
    }
    if let Ok(f) = value.cast::<PyFloat>() {
        return serde_json::Number::from_f64(f.value())
            .map(Value::Number)
            .ok_or_else(|| Error::invalid(format!("{value} is not a finite number")));
    }
    if let Ok(s) = value.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        let mut map = serde_json::Map::new();
        for (key, item) in dict.iter() {
            let key: String = key
                .extract()
                .map_err(|_| Error::invalid(format!("dict key {key} is not a str")))?;
            map.insert(key, py_to_json(&item)?);
        }
        return Ok(Value::Object(map));
    }
    if value.cast::<PyList>().is_ok() || value.cast::<PyTuple>().is_ok() {
        let items = value
            .try_iter()?
            .map(|item| py_to_json(&item?))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Value::Array(items));
    }
    Err(Error::invalid(format!(
        "a value of type {} cannot be passed to dp-models (use None, bool, int, float, str, \
         list or dict)",
        value.get_type().name()?
    )))
}

/// A list of `str` (a `str` itself is refused: it would be read as its characters).
pub(crate) fn texts(value: &Bound<'_, PyAny>, what: &str) -> Result<Vec<String>, Error> {
    if value.cast::<PyString>().is_ok() {
        return Err(Error::invalid(format!(
            "{what} must be a list of str, not one str (wrap it: [text])"
        )));
    }
    let iter = value
        .try_iter()
        .map_err(|_| Error::invalid(format!("{what} must be a list of str")))?;
    iter.map(|item| {
        let item = item?;
        item.cast::<PyString>()
            .map_err(|_| {
                Error::invalid(format!(
                    "{what} must hold only str, got {}",
                    item.get_type()
                        .name()
                        .map_or_else(|_| "?".to_owned(), |n| n.to_string())
                ))
            })?
            .to_cow()
            .map(std::borrow::Cow::into_owned)
            .map_err(Error::from)
    })
    .collect()
}

/// A list of encoded files (`bytes`, `bytearray` or `memoryview`), one copy each; `kind`
/// names them in messages (`image`, `audio`).
fn encoded_files(value: &Bound<'_, PyAny>, what: &str, kind: &str) -> Result<Vec<Vec<u8>>, Error> {
    if value.cast::<PyBytes>().is_ok() || value.cast::<PyByteArray>().is_ok() {
        return Err(Error::invalid(format!(
            "{what} must be a list of encoded {kind} files, not one (wrap it: [{kind}_bytes])"
        )));
    }
    let iter = value
        .try_iter()
        .map_err(|_| Error::invalid(format!("{what} must be a list of bytes")))?;
    iter.map(|item| {
        let item = item?;
        if let Ok(b) = item.cast::<PyBytes>() {
            Ok(b.as_bytes().to_vec())
        } else if let Ok(b) = item.cast::<PyByteArray>() {
            Ok(b.to_vec())
        } else if item.hasattr("tobytes")? {
            Ok(item
                .call_method0("tobytes")?
                .cast::<PyBytes>()
                .map_err(PyErr::from)?
                .as_bytes()
                .to_vec())
        } else {
            Err(Error::invalid(format!(
                "{what} must hold encoded {kind} files as bytes, got {}",
                item.get_type().name()?
            )))
        }
    })
    .collect()
}

/// A list of encoded images (`bytes`, `bytearray` or `memoryview`), one copy each.
pub(crate) fn images(
    value: &Bound<'_, PyAny>,
    what: &str,
) -> Result<Vec<dp_manager::preset::ImageInput>, Error> {
    Ok(encoded_files(value, what, "image")?
        .into_iter()
        .map(dp_manager::preset::ImageInput::Encoded)
        .collect())
}

/// A list of encoded audio files (WAV, FLAC, MP3, Ogg/Vorbis as `bytes`, `bytearray` or
/// `memoryview`), one copy each.
pub(crate) fn audio(
    value: &Bound<'_, PyAny>,
    what: &str,
) -> Result<Vec<dp_manager::preset::AudioInput>, Error> {
    Ok(encoded_files(value, what, "audio")?
        .into_iter()
        .map(dp_manager::preset::AudioInput::Encoded)
        .collect())
}

/// The NumPy module.
fn numpy(py: Python<'_>) -> Result<Bound<'_, PyModule>, Error> {
    py.import("numpy").map_err(|err| {
        Error::Model(dp_spec::ModelError::new(
            dp_spec::ErrorCode::ProviderUnavailable,
            format!("NumPy is needed for array results but cannot be imported ({err}); pip install numpy"),
        ))
    })
}

/// A NumPy array of `dtype` and `shape` over a copy of `bytes` (native byte order): one
/// `bytearray` (so the array is writable) viewed by `numpy.frombuffer`, then reshaped.
fn array_from_bytes<'py>(
    py: Python<'py>,
    bytes: &[u8],
    dtype: &str,
    shape: &[usize],
) -> Result<Bound<'py, PyAny>, Error> {
    let np = numpy(py)?;
    let buffer = PyByteArray::new(py, bytes);
    let flat = np.call_method1("frombuffer", (buffer, dtype))?;
    let shape = PyTuple::new(py, shape)?;
    Ok(flat.call_method1("reshape", (shape,))?)
}

/// Rows of `f32` as one 2-D `float32` array (`rows × width`); rows of different lengths
/// are an error (no model returns them).
pub(crate) fn f32_matrix<'py>(
    py: Python<'py>,
    rows: &[Vec<f32>],
) -> Result<Bound<'py, PyAny>, Error> {
    let width = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|row| row.len() != width) {
        return Err(Error::Model(dp_spec::ModelError::new(
            dp_spec::ErrorCode::InvalidInput,
            "the model returned rows of different lengths",
        )));
    }
    let mut flat = Vec::with_capacity(rows.len() * width);
    for row in rows {
        flat.extend_from_slice(row);
    }
    array_from_bytes(
        py,
        bytemuck::cast_slice(&flat),
        "float32",
        &[rows.len(), width],
    )
}

/// A vector of `f32` as a 1-D `float32` array.
pub(crate) fn f32_vector<'py>(py: Python<'py>, values: &[f32]) -> Result<Bound<'py, PyAny>, Error> {
    array_from_bytes(py, bytemuck::cast_slice(values), "float32", &[values.len()])
}

/// A tensor as a NumPy array of its element type (`bfloat16`, which NumPy lacks, is
/// widened exactly to `float32`; variable-length byte strings become a list of `bytes`).
pub(crate) fn tensor_to_py<'py>(
    py: Python<'py>,
    tensor: &Tensor,
) -> Result<Bound<'py, PyAny>, Error> {
    let shape = tensor.shape();
    match tensor.data() {
        TensorData::Fp32(v) => array_from_bytes(py, bytemuck::cast_slice(v), "float32", shape),
        TensorData::Fp16(v) => array_from_bytes(py, bytemuck::cast_slice(v), "float16", shape),
        TensorData::Bf16(v) => {
            let wide: Vec<f32> = v
                .iter()
                .map(|bits| f32::from_bits(u32::from(*bits) << 16))
                .collect();
            array_from_bytes(py, bytemuck::cast_slice(&wide), "float32", shape)
        }
        TensorData::Int64(v) => array_from_bytes(py, bytemuck::cast_slice(v), "int64", shape),
        TensorData::Int32(v) => array_from_bytes(py, bytemuck::cast_slice(v), "int32", shape),
        TensorData::Int8(v) => array_from_bytes(py, bytemuck::cast_slice(v), "int8", shape),
        TensorData::Uint8(v) => array_from_bytes(py, v, "uint8", shape),
        TensorData::Bool(v) => {
            let bytes: Vec<u8> = v.iter().map(|b| u8::from(*b)).collect();
            array_from_bytes(py, &bytes, "bool", shape)
        }
        TensorData::Bytes(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(PyBytes::new(py, item))?;
            }
            Ok(list.into_any())
        }
    }
}

/// Named tensors as a `dict` of arrays.
pub(crate) fn tensors_to_py<'py>(
    py: Python<'py>,
    tensors: &NamedTensors,
) -> Result<Bound<'py, PyAny>, Error> {
    let dict = PyDict::new(py);
    for (name, tensor) in tensors {
        dict.set_item(name, tensor_to_py(py, tensor)?)?;
    }
    Ok(dict.into_any())
}

/// A `dict` of name → array-like (anything `numpy.asarray` takes) as named tensors, each
/// read through one contiguous native-order buffer. Element types: float32, float16,
/// int64, int32, int8, uint8, bool.
pub(crate) fn tensors_from_py(value: &Bound<'_, PyAny>) -> Result<NamedTensors, Error> {
    let py = value.py();
    let dict = value
        .cast::<PyDict>()
        .map_err(|_| Error::invalid("infer takes a dict of input name -> NumPy array"))?;
    let np = numpy(py)?;
    let mut tensors = NamedTensors::new();
    for (name, item) in dict.iter() {
        let name: String = name
            .extract()
            .map_err(|_| Error::invalid("infer: every input name must be a str"))?;
        let array = np.call_method1("ascontiguousarray", (item,))?;
        let dtype: String = array.getattr("dtype")?.getattr("name")?.extract()?;
        // Native byte order, whatever the input's.
        let array = array.call_method1("astype", (dtype.as_str(),))?;
        let shape: Vec<usize> = array.getattr("shape")?.extract()?;
        let raw = array.call_method0("tobytes")?;
        let bytes = raw.cast::<PyBytes>().map_err(PyErr::from)?.as_bytes();
        let data = match dtype.as_str() {
            "float32" => TensorData::Fp32(bytemuck::pod_collect_to_vec(bytes)),
            "float16" => TensorData::Fp16(bytemuck::pod_collect_to_vec(bytes)),
            "int64" => TensorData::Int64(bytemuck::pod_collect_to_vec(bytes)),
            "int32" => TensorData::Int32(bytemuck::pod_collect_to_vec(bytes)),
            "int8" => TensorData::Int8(bytemuck::pod_collect_to_vec(bytes)),
            "uint8" => TensorData::Uint8(bytes.to_vec()),
            "bool" => TensorData::Bool(bytes.iter().map(|b| *b != 0).collect()),
            other => {
                return Err(Error::invalid(format!(
                    "infer: input {name:?} has element type {other}; use float32, float16, \
                     int64, int32, int8, uint8 or bool"
                )));
            }
        };
        tensors.insert(name, Tensor::new(shape, data)?);
    }
    Ok(tensors)
}
