//! `dp-signature` will own reproducibility records: the canonical `model_signature`, the
//! `models_used` entry and the resolved model mapping of a run.
//!
//! Status: not implemented yet (its issue builds it); the crate exists so the crate graph
//! is fixed from the start. It may depend on `dp-spec` and `dp-digest`, never on a
//! provider or the manager.
