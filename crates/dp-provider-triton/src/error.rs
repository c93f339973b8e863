//! The crate's error enum and its mapping onto the shared [`ModelError`] vocabulary.

use dp_spec::{ErrorCode, ModelError};

/// Everything that can go wrong talking to a Triton server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TritonError {
    /// The endpoint's host is not in [`crate::TritonProviderConfig::allowed_hosts`].
    #[error(
        "endpoint {endpoint} is not allowed: host {host:?} is not in the provider's allowed_hosts \
         (default: loopback only); add it to TritonProviderConfig::allowed_hosts if this server \
         is trusted"
    )]
    HostNotAllowed {
        /// The endpoint as configured.
        endpoint: String,
        /// Its host.
        host: String,
    },
    /// The endpoint's host (allowed by name) resolved to an address that is neither
    /// loopback nor allowed by IP.
    #[error(
        "host {host:?} resolved to {address}, which is neither loopback nor in the provider's \
         allowed_hosts, so it was not contacted: an allowed name is trusted only for the \
         addresses it resolves to; fix its resolution (/etc/hosts, DNS) or add {address} to \
         TritonProviderConfig::allowed_hosts if that server is trusted"
    )]
    ResolvedNotAllowed {
        /// The host as the endpoint names it.
        host: String,
        /// The address refused.
        address: String,
    },
    /// Loading or unloading models was asked for but the configuration forbids it.
    #[error(
        "cannot {action} model {model:?} on {endpoint}: model control is disabled; set \
         TritonProviderConfig::allow_model_control (and run the server with \
         --model-control-mode=explicit) or load the model on the server yourself"
    )]
    ModelControlDisabled {
        /// The endpoint.
        endpoint: String,
        /// `load` or `unload`.
        action: &'static str,
        /// The model.
        model: String,
    },
    /// The endpoint URL is malformed.
    #[error("triton endpoint {endpoint:?} is malformed: {reason}; use http://HOST:PORT")]
    BadEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// The server refused, timed out, failed (5xx) or answered something unreadable.
    #[error(
        "triton server at {endpoint} is unavailable: {cause}; check that it runs and is reachable"
    )]
    Unavailable {
        /// The endpoint.
        endpoint: String,
        /// Why: the transport error, the status, or the protocol problem.
        cause: String,
    },
    /// The server does not know the model, or it is not ready.
    #[error(
        "model {model:?} is not available on {endpoint}: {message}; load it on the server (or \
         allow model control) and check the spec's triton.model_name/model_version"
    )]
    ModelNotFound {
        /// The endpoint.
        endpoint: String,
        /// The model name (and version, if any).
        model: String,
        /// The server's message.
        message: String,
    },
    /// The server (or the local check against its metadata) rejected the request's data.
    #[error("invalid input for triton model {model:?}: {message}")]
    InvalidInput {
        /// The model.
        model: String,
        /// The server's own message, or what the local check found.
        message: String,
    },
    /// The deployment's declared digest differs from the spec's, or is missing.
    #[error(
        "triton model {model:?} on {endpoint}: the deployment declares weights_digest {actual:?} \
         but the spec pins {expected}; deploy the pinned weights (config.pbtxt parameter \
         weights_digest) or update the spec"
    )]
    DigestMismatch {
        /// The endpoint.
        endpoint: String,
        /// The model.
        model: String,
        /// The spec's digest.
        expected: String,
        /// The deployment's, or `None` when its config has no `weights_digest` parameter.
        actual: Option<String>,
    },
    /// A reply does not match the spec's `output_schema` (a missing output, another element
    /// type or shape): the deployment does not serve what the spec declares.
    #[error(
        "triton model {model:?} on {endpoint} answered {problem}; the deployment does not \
         serve what the spec's output_schema declares: fix its config.pbtxt outputs or the spec"
    )]
    BadReply {
        /// The endpoint.
        endpoint: String,
        /// The model.
        model: String,
        /// What differs.
        problem: String,
    },
    /// The spec cannot be served by this provider.
    #[error("{0}")]
    InvalidSpec(String),
    /// A local artifact the spec names (e.g. a tokenizer file) is missing.
    #[error(
        "artifact {0} is missing under the models root; run `cargo xtask setup` or copy it there"
    )]
    ArtifactMissing(String),
}

impl From<TritonError> for ModelError {
    fn from(err: TritonError) -> Self {
        let message = err.to_string();
        match err {
            TritonError::HostNotAllowed { endpoint, host } => {
                Self::new(ErrorCode::NetworkForbidden, message)
                    .with_detail("endpoint", endpoint)
                    .with_detail("host", host)
            }
            TritonError::ResolvedNotAllowed { host, address } => {
                Self::new(ErrorCode::NetworkForbidden, message)
                    .with_detail("host", host)
                    .with_detail("address", address)
            }
            TritonError::ModelControlDisabled {
                endpoint, model, ..
            } => Self::new(ErrorCode::NetworkForbidden, message)
                .with_detail("endpoint", endpoint)
                .with_detail("model", model),
            TritonError::BadEndpoint { endpoint, .. } => {
                Self::new(ErrorCode::InvalidSpec, message).with_detail("endpoint", endpoint)
            }
            TritonError::Unavailable { endpoint, cause } => {
                Self::new(ErrorCode::TritonUnavailable, message)
                    .with_detail("endpoint", endpoint)
                    .with_detail("cause", cause)
            }
            TritonError::ModelNotFound {
                endpoint,
                model,
                message: server,
            } => Self::new(ErrorCode::ModelNotFound, message)
                .with_detail("endpoint", endpoint)
                .with_detail("model", model)
                .with_detail("server_message", server),
            TritonError::InvalidInput {
                model,
                message: server,
            } => Self::new(ErrorCode::InvalidInput, message)
                .with_detail("model", model)
                .with_detail("server_message", server),
            TritonError::DigestMismatch {
                endpoint,
                model,
                expected,
                actual,
            } => Self::new(ErrorCode::WeightsDigestMismatch, message)
                .with_detail("endpoint", endpoint)
                .with_detail("model", model)
                .with_detail("expected", expected)
                .with_detail("actual", actual),
            // The server failed to serve the model as declared: to the caller, the endpoint
            // failed, exactly as if it had answered garbage.
            TritonError::BadReply {
                endpoint,
                model,
                problem,
            } => Self::new(ErrorCode::TritonUnavailable, message)
                .with_detail("endpoint", endpoint)
                .with_detail("model", model)
                .with_detail("problem", problem),
            TritonError::InvalidSpec(_) => Self::new(ErrorCode::InvalidSpec, message),
            TritonError::ArtifactMissing(path) => {
                Self::new(ErrorCode::WeightsMissing, message).with_detail("file", path)
            }
        }
    }
}
