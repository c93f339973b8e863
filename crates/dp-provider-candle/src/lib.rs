//! `dp-provider-candle` will implement [`dp_spec::ModelProvider`] for `engine: candle`
//! (BERT-family encoders from local, memory-mapped safetensors).
//!
//! Status: not implemented yet (its issue builds it). It may depend on `dp-spec` only
//! among dp-models crates; never on the manager or another provider.
