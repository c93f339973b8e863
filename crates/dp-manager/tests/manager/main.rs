//! Integration tests of the model manager, driven by an instrumented in-test provider that
//! counts loads, injects failures, delays and panics, and tracks the memory its live
//! instances hold. (A real provider cannot inject these faults; real providers get their
//! own end-to-end tests.)

mod budgets;
mod common;
mod keep_alive;
mod resolution;
mod single_flight;
mod tasks;
mod verification;
