//! `dp-provider-triton` will implement [`dp_spec::ModelProvider`] for `runtime: triton`
//! over Triton's KServe v2 HTTP protocol. It is the only crate allowed an HTTP client.
//!
//! Status: not implemented yet (its issue builds it). It may depend on `dp-spec` only
//! among dp-models crates; never on the manager or another provider.
