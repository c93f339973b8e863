//! `dp-python` owns the Python bindings of dp-models: the compiled module
//! `dp_models._native` (the model manager and its task API, `validate`, `digest`, `verify`,
//! the conversion of results to NumPy arrays and of errors to `dp_models.ModelError`), built
//! into the `dp_models` wheel by maturin (`cargo xtask wheel`) together with the pure-Python
//! package in `python/dp_models` (exception classes, `atask`, type stubs).
//!
//! Architecture: a leaf crate beside `dp-cli`. It depends on `dp-manager` (with every
//! provider compiled in), `dp-spec` and `dp-digest`, and mirrors what the `dp` commands do
//! by calling the same library functions; it must not depend on `dp-cli`, and no crate
//! depends on it. Like every crate here it never reaches the network: the wheel embeds no
//! model and downloads nothing.
//!
//! The GIL is released (`Python::detach`) while models load, files are hashed and models
//! run, so Python threads sharing one `ModelManager` (which is `Send + Sync`) run
//! concurrently.

mod convert;
mod error;
mod manager;
mod settings;
mod tools;

use pyo3::prelude::*;

pub use error::Error;

/// The compiled part of `dp_models`; `dp_models/__init__.py` re-exports it.
#[pymodule]
#[pyo3(name = "_native")]
fn native(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<manager::ModelManager>()?;
    module.add_class::<manager::TaskResult>()?;
    module.add_class::<manager::CancelToken>()?;
    module.add_function(wrap_pyfunction!(tools::validate, module)?)?;
    module.add_function(wrap_pyfunction!(tools::digest, module)?)?;
    module.add_function(wrap_pyfunction!(tools::verify, module)?)?;
    module.add_function(wrap_pyfunction!(error::error_codes, module)?)?;
    module.add_function(wrap_pyfunction!(manager::task_types, module)?)?;
    module.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
