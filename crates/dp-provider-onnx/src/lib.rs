//! `dp-provider-onnx` will implement [`dp_spec::ModelProvider`] for `engine: onnx` on ONNX
//! Runtime, loaded dynamically from a local library (never downloaded).
//!
//! Status: not implemented yet (its issue builds it). It may depend on `dp-spec` only
//! among dp-models crates; never on the manager or another provider.
