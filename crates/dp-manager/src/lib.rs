//! `dp-manager` will own the model manager: resolution by name or role, the single-flight
//! cache, reference counting, budgets, keep-alive and the task API. Providers plug in
//! through the cargo features `candle`, `onnx` and `triton`.
//!
//! Status: not implemented yet (its issue builds it). It is the top library crate: it may
//! depend on every lower crate; nothing but `dp-cli` depends on it.
