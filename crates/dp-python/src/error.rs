//! Errors: every failure reaches Python as a `dp_models.ModelError` subclass (one per
//! [`ErrorCode`]), built by `dp_models._errors._from_native` from the Rust [`ModelError`].

use dp_spec::{ErrorCode, ModelError};
use pyo3::prelude::*;

use crate::convert::json_to_py;

/// What a binding call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A dp-models error, raised in Python as the `ModelError` subclass of its code.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A Python exception raised while reading the arguments or building the result,
    /// raised again as it is.
    #[error(transparent)]
    Python(#[from] PyErr),
}

impl Error {
    /// An `invalid_input` error: what the caller passed does not fit.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Model(ModelError::new(ErrorCode::InvalidInput, message))
    }
}

impl From<Error> for PyErr {
    fn from(err: Error) -> Self {
        match err {
            Error::Python(err) => err,
            Error::Model(err) => Python::attach(|py| to_py_err(py, &err)),
        }
    }
}

/// The Python exception of `err`: `dp_models._errors._from_native(code, message, details)`,
/// an instance of the subclass of its code with `.error_code`, `.message`, `.model` and
/// `.details` (a dict). If that module cannot be imported (a broken installation), a
/// `RuntimeError` carrying the same text.
fn to_py_err(py: Python<'_>, err: &ModelError) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let details = json_to_py(py, &err.details)?;
        let exception = py
            .import("dp_models._errors")?
            .getattr("_from_native")?
            .call1((err.error_code.as_str(), err.message.as_str(), details))?;
        Ok(PyErr::from_value(exception))
    };
    build().unwrap_or_else(|import_err| {
        pyo3::exceptions::PyRuntimeError::new_err(format!(
            "{err} (and dp_models._errors could not build the exception: {import_err})"
        ))
    })
}

/// Every stable error code, in declaration order (`dp_spec::ErrorCode::ALL`): one
/// `ModelError` subclass exists for each.
#[pyfunction]
pub(crate) fn error_codes() -> Vec<&'static str> {
    ErrorCode::ALL.iter().map(|code| code.as_str()).collect()
}
