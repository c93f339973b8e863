//! `dp-provider-triton` implements [`dp_spec::ModelProvider`] for `runtime: triton` over
//! Triton's KServe v2 HTTP protocol (with the binary tensor data extension).
//!
//! It owns: endpoint allow-listing ([`Endpoint`]), one keep-alive pool per endpoint
//! ([`TritonClient`]), the inference wire format ([`encode_infer_request`],
//! [`decode_infer_response`]) and the load-time checks (model ready, deployment digest).
//! It is the only crate allowed an HTTP client, and only to reach endpoints its
//! configuration allows (default: loopback only).
//!
//! It may depend on `dp-spec` only among dp-models crates; never on the manager or another
//! provider.

mod client;
mod endpoint;
mod error;
mod wire;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dp_spec::{
    LoadRequest, LoadedModel, ModelError, ModelProvider, ModelSpec, NamedTensors, ProviderHealth,
    TensorSpec, TritonSettings, VerifiedArtifacts, provider_serves,
};
use serde_json::Value;

pub use client::{
    ClientSettings, Idempotence, ModelMetadata, RepositoryEntry, RetryPolicy, RetryPolicyKey,
    TensorMetadata, TritonClient,
};
pub use endpoint::{Endpoint, check_resolved_addresses};
pub use error::TritonError;
/// The HTTP types of this crate's public API ([`decode_infer_response`] takes a
/// [`http::HeaderMap`]), so callers need no HTTP client of their own.
pub use ureq::http;
pub use wire::{
    DecodeError, EncodedRequest, INFERENCE_HEADER, OutputRequest, TensorEncoding,
    decode_infer_response, dtype_from_triton, encode_infer_request, triton_datatype,
};

/// The model-config parameter in which a deployment declares its weights' digest.
pub const WEIGHTS_DIGEST_PARAMETER: &str = "weights_digest";

/// How the provider may reach Triton servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TritonProviderConfig {
    /// Hosts the provider may connect to, compared exactly (case-insensitively) with the
    /// endpoint's host before any socket opens. Default: loopback only (`127.0.0.1`,
    /// `::1`, `localhost`). A name is trusted only for the addresses it resolves to: every
    /// one must be loopback or listed here as an IP address, checked before each
    /// connection ([`check_resolved_addresses`]).
    pub allowed_hosts: Vec<String>,
    /// Whether the provider may load and unload models (explicit model-control mode). Off by
    /// default: a shared server is not the provider's to reconfigure. When on, `load` asks
    /// the server to load a model that is not ready.
    pub allow_model_control: bool,
    /// How tensors travel.
    pub encoding: TensorEncoding,
    /// Retries of idempotent calls.
    pub retry: RetryPolicy,
    /// The largest response body accepted, in bytes (default 1 GiB).
    pub max_response_bytes: u64,
}

impl Default for TritonProviderConfig {
    fn default() -> Self {
        Self {
            allowed_hosts: vec!["127.0.0.1".into(), "::1".into(), "localhost".into()],
            allow_model_control: false,
            encoding: TensorEncoding::default(),
            retry: RetryPolicy::default(),
            max_response_bytes: 1 << 30,
        }
    }
}

/// The Triton provider: a pool of clients, one per endpoint and timeout settings, shared by
/// every model loaded through it.
///
/// ```
/// use dp_provider_triton::{TritonProvider, TritonProviderConfig};
/// use dp_spec::ModelProvider;
///
/// let provider = TritonProvider::new(TritonProviderConfig::default());
/// assert_eq!(provider.name(), "triton");
/// ```
#[derive(Debug, Default)]
pub struct TritonProvider {
    config: TritonProviderConfig,
    clients: Mutex<HashMap<(String, ClientSettings), Arc<TritonClient>>>,
}

impl TritonProvider {
    /// A provider with this configuration.
    #[must_use]
    pub fn new(config: TritonProviderConfig) -> Self {
        Self {
            config,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &TritonProviderConfig {
        &self.config
    }

    /// The client for a spec's `triton` section, created on first use. The endpoint's host
    /// is checked against the allowed hosts first; no socket is opened here.
    ///
    /// # Errors
    /// [`TritonError::BadEndpoint`] or [`TritonError::HostNotAllowed`].
    pub fn client(&self, triton: &TritonSettings) -> Result<Arc<TritonClient>, TritonError> {
        let endpoint = Endpoint::parse(&triton.endpoint)?;
        endpoint.check_allowed(&self.config.allowed_hosts)?;
        let settings = ClientSettings {
            connect_timeout: Duration::from_millis(triton.connect_timeout_ms),
            request_timeout: Duration::from_millis(triton.request_timeout_ms),
            max_response_bytes: self.config.max_response_bytes,
            retry: self.config.retry.into(),
        };
        let key = (endpoint.base().to_owned(), settings.clone());
        let mut clients = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(Arc::clone(clients.entry(key).or_insert_with(|| {
            Arc::new(TritonClient::new(
                endpoint,
                settings,
                self.config.retry,
                self.config.allow_model_control,
                &self.config.allowed_hosts,
            ))
        })))
    }

    /// [`ModelProvider::load`] with the concrete model type, for callers that want
    /// [`TritonModel::infer_with`] or its metadata.
    ///
    /// # Errors
    /// As [`ModelProvider::load`]: `network_forbidden`, `triton_unavailable`,
    /// `model_not_found`, `weights_digest_mismatch`, `invalid_spec`.
    pub fn load_spec(&self, spec: &ModelSpec) -> Result<TritonModel, TritonError> {
        let triton = triton_section(spec)?;
        let client = self.client(triton)?;
        let name = triton.model_name.as_str();
        let version = triton.model_version.as_deref();
        if !client.model_ready(name, version)? {
            if self.config.allow_model_control {
                client.load_model(name)?;
            }
            if !client.model_ready(name, version)? {
                return Err(TritonError::ModelNotFound {
                    endpoint: client.endpoint().base().to_owned(),
                    model: name.to_owned(),
                    message: if self.config.allow_model_control {
                        "still not ready after a load request".into()
                    } else {
                        "the server reports it not ready (model control is disabled)".into()
                    },
                });
            }
        }
        let config = client.model_config(name, version)?;
        check_digest(spec, &config, client.endpoint().base(), name)?;
        let metadata = client.model_metadata(name, version)?;
        let datatype_of = |name: &str| {
            metadata
                .outputs
                .iter()
                .find(|o| o.name == name)
                .map_or("", |o| o.datatype.as_str())
        };
        let outputs = if spec.output_schema.is_empty() {
            metadata
                .outputs
                .iter()
                .map(|o| OutputRequest::new(&o.name, &o.datatype))
                .collect()
        } else {
            spec.output_schema
                .iter()
                .map(|o| OutputRequest::new(&o.name, datatype_of(&o.name)))
                .collect()
        };
        // A sequence (stateful) model must see each request once; any other model answers a
        // repeated request identically and keeps no state, so connection failures may be
        // retried (see `Idempotence::StatelessInference`).
        let stateful = config
            .get("sequence_batching")
            .is_some_and(|v| !v.is_null());
        Ok(TritonModel {
            client,
            name: name.to_owned(),
            version: version.map(str::to_owned),
            metadata,
            outputs,
            declared_outputs: spec.output_schema.clone(),
            encoding: self.config.encoding,
            idempotence: if stateful {
                Idempotence::Once
            } else {
                Idempotence::StatelessInference
            },
        })
    }
}

fn triton_section(spec: &ModelSpec) -> Result<&TritonSettings, TritonError> {
    spec.triton.as_ref().ok_or_else(|| {
        TritonError::InvalidSpec(format!(
            "spec {:?} has runtime triton but no triton section; add triton.endpoint and \
             triton.model_name",
            spec.model_name
        ))
    })
}

/// Compares the deployment's declared digest (`parameters.weights_digest.string_value`
/// in the model config) with the spec's.
fn check_digest(
    spec: &ModelSpec,
    config: &Value,
    endpoint: &str,
    model: &str,
) -> Result<(), TritonError> {
    let Some(expected) = &spec.weights_digest else {
        return Err(TritonError::InvalidSpec(format!(
            "spec {:?} pins no weights_digest; a Triton model is only used when the spec pins \
             the digest its deployment declares (config parameter {WEIGHTS_DIGEST_PARAMETER})",
            spec.model_name
        )));
    };
    let actual = config
        .get("parameters")
        .and_then(|p| p.get(WEIGHTS_DIGEST_PARAMETER))
        .and_then(|p| p.get("string_value"))
        .and_then(Value::as_str)
        .map(str::trim);
    let expected = expected.to_string();
    if actual.is_some_and(|a| a.eq_ignore_ascii_case(&expected)) {
        return Ok(());
    }
    Err(TritonError::DigestMismatch {
        endpoint: endpoint.to_owned(),
        model: model.to_owned(),
        expected,
        actual: actual.map(str::to_owned),
    })
}

impl ModelProvider for TritonProvider {
    fn name(&self) -> &'static str {
        "triton"
    }

    fn supports(&self, spec: &ModelSpec) -> bool {
        provider_serves(self.name(), spec)
    }

    /// The weights live on the server; what must be local are the files the spec's preset
    /// reads (tokenizer, pooling config…), and the endpoint must be allowed.
    fn validate_local_artifacts(
        &self,
        spec: &ModelSpec,
        artifacts: &VerifiedArtifacts,
    ) -> Result<(), ModelError> {
        let triton = triton_section(spec)?;
        Endpoint::parse(&triton.endpoint)?.check_allowed(&self.config.allowed_hosts)?;
        for artifact in &spec.local_artifacts {
            if !artifacts.contains(artifact) {
                return Err(TritonError::ArtifactMissing(artifact.clone()).into());
            }
        }
        Ok(())
    }

    fn load(&self, request: &LoadRequest<'_>) -> Result<Box<dyn LoadedModel>, ModelError> {
        Ok(Box::new(self.load_spec(request.spec)?))
    }

    /// Asks the spec's (allowed) endpoint whether the model is ready; contacts nothing else.
    /// A server that does not answer is "runtime not found", with the cause.
    fn health(&self, spec: &ModelSpec, _models_root: &Path) -> ProviderHealth {
        let ready = triton_section(spec).and_then(|triton| {
            let client = self.client(triton)?;
            let version = triton.model_version.as_deref();
            let ready = client.model_ready(&triton.model_name, version)?;
            Ok((
                ready,
                client.endpoint().base().to_owned(),
                &triton.model_name,
            ))
        });
        match ready {
            Ok((true, _, _)) => ProviderHealth {
                runtime_found: true,
                model_ready: Some(true),
                detail: None,
            },
            Ok((false, endpoint, model)) => ProviderHealth {
                runtime_found: true,
                model_ready: Some(false),
                detail: Some(format!(
                    "{endpoint} answers but model {model:?} is not ready; load it on the \
                     server (or allow model control)"
                )),
            },
            Err(err) => ProviderHealth {
                runtime_found: false,
                model_ready: None,
                detail: Some(err.to_string()),
            },
        }
    }
}

/// A model served by Triton, checked at load (ready, digest) and described by its metadata.
#[derive(Debug)]
pub struct TritonModel {
    client: Arc<TritonClient>,
    name: String,
    version: Option<String>,
    metadata: ModelMetadata,
    outputs: Vec<OutputRequest>,
    /// The spec's `output_schema`: every reply is checked against it.
    declared_outputs: Vec<TensorSpec>,
    encoding: TensorEncoding,
    idempotence: Idempotence,
}

impl TritonModel {
    /// The server's metadata, as read at load.
    #[must_use]
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// Runs inference with an explicit encoding (benchmarks compare encodings with it).
    ///
    /// # Errors
    /// As [`LoadedModel::infer`].
    pub fn infer_with(
        &self,
        inputs: &NamedTensors,
        encoding: TensorEncoding,
    ) -> Result<NamedTensors, TritonError> {
        self.check_inputs(inputs)?;
        let outputs = self.client.infer(
            &self.name,
            self.version.as_deref(),
            inputs,
            &self.outputs,
            encoding,
            self.idempotence,
        )?;
        // The server is outside this process: a misdeployed or misbehaving model could
        // answer tensors of another shape or type than the spec promises its callers, and
        // nothing downstream would notice. In-process providers check this at load.
        check_outputs(&self.declared_outputs, &outputs).map_err(|problem| {
            TritonError::BadReply {
                endpoint: self.client.endpoint().base().to_owned(),
                model: self.name.clone(),
                problem,
            }
        })?;
        Ok(outputs)
    }

    /// Names and element types against the metadata, so a mistake reads clearly without a
    /// round trip. Shapes are left to the server, which knows its batching rules.
    fn check_inputs(&self, inputs: &NamedTensors) -> Result<(), TritonError> {
        let bad = |message: String| TritonError::InvalidInput {
            model: self.name.clone(),
            message,
        };
        for meta in &self.metadata.inputs {
            let Some(tensor) = inputs.get(&meta.name) else {
                return Err(bad(format!(
                    "input {:?} is missing (given: {})",
                    meta.name,
                    wire::describe(inputs)
                )));
            };
            let given = triton_datatype(tensor.dtype());
            if given != meta.datatype {
                return Err(bad(format!(
                    "input {:?} is {given} but the model takes {}",
                    meta.name, meta.datatype
                )));
            }
        }
        if let Some(extra) = inputs
            .keys()
            .find(|k| !self.metadata.inputs.iter().any(|m| &m.name == *k))
        {
            return Err(bad(format!(
                "the model has no input {extra:?} (inputs: {})",
                self.metadata
                    .inputs
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }
}

/// Checks a reply against the spec's `output_schema`: each declared output present, of
/// the declared element type, with the declared rank and every fixed (non `-1`) dimension.
fn check_outputs(declared: &[TensorSpec], outputs: &NamedTensors) -> Result<(), String> {
    for spec in declared {
        let Some(tensor) = outputs.get(&spec.name) else {
            return Err(format!("no output {:?}", spec.name));
        };
        if tensor.dtype() != spec.dtype {
            return Err(format!(
                "output {:?} of type {:?}, but the spec declares {:?}",
                spec.name,
                tensor.dtype(),
                spec.dtype
            ));
        }
        let shape = tensor.shape();
        let fits = shape.len() == spec.shape.len()
            && shape.iter().zip(&spec.shape).all(|(&got, &want)| {
                want < 0 || u64::try_from(got).ok() == u64::try_from(want).ok()
            });
        if !fits {
            return Err(format!(
                "output {:?} of shape {shape:?}, but the spec declares {:?}",
                spec.name, spec.shape
            ));
        }
    }
    Ok(())
}

impl LoadedModel for TritonModel {
    fn infer(&self, inputs: &NamedTensors) -> Result<NamedTensors, ModelError> {
        Ok(self.infer_with(inputs, self.encoding)?)
    }

    /// A batch goes to the server as one request: each request is a network round trip,
    /// and the server's own dynamic batcher regroups requests as its model allows.
    fn call_overhead_tokens(&self) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dp_spec::ErrorCode;

    fn spec(endpoint: &str) -> ModelSpec {
        serde_json::from_value(serde_json::json!({
            "model_name": "m", "model_version": "1", "runtime": "triton", "engine": "onnx",
            "weights_digest": format!("sha256:{}", "ab".repeat(32)),
            "triton": { "endpoint": endpoint, "model_name": "m" }
        }))
        .expect("valid spec")
    }

    #[test]
    fn digest_parameter_must_match() {
        let s = spec("http://127.0.0.1:1");
        let with =
            |d: &str| serde_json::json!({"parameters": {"weights_digest": {"string_value": d}}});
        check_digest(&s, &with(&format!("sha256:{}", "ab".repeat(32))), "e", "m").expect("same");
        let err = check_digest(&s, &with("sha256:00"), "e", "m").expect_err("differs");
        assert_eq!(
            ModelError::from(err).error_code,
            ErrorCode::WeightsDigestMismatch
        );
        let err = check_digest(&s, &serde_json::json!({}), "e", "m").expect_err("missing");
        let err = ModelError::from(err);
        assert_eq!(err.error_code, ErrorCode::WeightsDigestMismatch);
        assert_eq!(err.details["actual"], Value::Null);
    }

    #[test]
    fn replies_are_checked_against_the_declared_outputs() {
        use dp_spec::{Tensor, TensorDType, TensorData};
        let declared = [TensorSpec {
            name: "y".into(),
            dtype: TensorDType::Fp32,
            shape: vec![-1, 2],
        }];
        let reply = |shape: Vec<usize>, data: TensorData| {
            NamedTensors::from([("y".to_owned(), Tensor::new(shape, data).expect("tensor"))])
        };
        check_outputs(
            &declared,
            &reply(vec![3, 2], TensorData::Fp32(vec![0.0; 6])),
        )
        .expect("fits: the batch dimension is dynamic");
        check_outputs(&[], &reply(vec![1, 3], TensorData::Fp32(vec![0.0; 3])))
            .expect("nothing declared, nothing checked");
        for (shape, data, says) in [
            (vec![1, 3], TensorData::Fp32(vec![0.0; 3]), "[1, 3]"),
            (vec![2], TensorData::Fp32(vec![0.0; 2]), "[2]"),
            (vec![1, 2], TensorData::Int64(vec![0; 2]), "Int64"),
        ] {
            let problem = check_outputs(&declared, &reply(shape, data)).expect_err(says);
            assert!(problem.contains(says), "{problem}");
        }
        let problem = check_outputs(&declared, &NamedTensors::new()).expect_err("missing");
        assert!(problem.contains("no output \"y\""), "{problem}");
        let err = ModelError::from(TritonError::BadReply {
            endpoint: "http://127.0.0.1:1".into(),
            model: "m".into(),
            problem,
        });
        assert_eq!(err.error_code, ErrorCode::TritonUnavailable);
        assert!(err.message.contains("output_schema"), "{}", err.message);
    }

    #[test]
    fn forbidden_host_fails_before_any_socket() {
        let provider = TritonProvider::default();
        // 192.0.2.1 is TEST-NET-1: a connection attempt would hang until the timeout.
        let s = spec("http://192.0.2.1:8000");
        let started = std::time::Instant::now();
        let err = provider.load_spec(&s).expect_err("forbidden");
        assert!(started.elapsed() < Duration::from_millis(50));
        let err = ModelError::from(err);
        assert_eq!(err.error_code, ErrorCode::NetworkForbidden);
        assert_eq!(err.details["host"], "192.0.2.1");
        let err = provider
            .validate_local_artifacts(&s, &VerifiedArtifacts::empty("/nonexistent"))
            .expect_err("forbidden");
        assert_eq!(err.error_code, ErrorCode::NetworkForbidden);
    }

    #[test]
    fn clients_are_shared_per_endpoint() {
        let provider = TritonProvider::default();
        let s = spec("http://127.0.0.1:1");
        let t = s.triton.as_ref().expect("triton");
        let a = provider.client(t).expect("allowed");
        let b = provider.client(t).expect("allowed");
        assert!(Arc::ptr_eq(&a, &b));
    }
}
