//! How a spec was resolved for a run: where the model runs and at which precision.
//!
//! The resolution is an input of the signature, not something this crate discovers: the
//! manager decides it (devices present, profiles, budgets) and passes it in. Keeping it a
//! plain value is what makes a signature a pure function, never one of a provider's state.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use dp_spec::{DevicePolicy, ModelSpec, Precision, ResolvedDevice, Runtime};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::SignatureError;

/// Where a resolved model runs.
///
/// Its text form (`cpu`, `cuda:N`, `triton`) is the `device` of signatures and records.
///
/// ```
/// use dp_signature::Placement;
/// use dp_spec::ResolvedDevice;
///
/// assert_eq!(Placement::Local(ResolvedDevice::Cuda(1)).to_string(), "cuda:1");
/// assert_eq!("triton".parse::<Placement>()?, Placement::Triton);
/// assert!("cuda:01".parse::<Placement>().is_err());
/// # Ok::<(), dp_signature::SignatureError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    /// In this process, on a device of this machine.
    Local(ResolvedDevice),
    /// On a Triton server, which owns device placement: the client cannot know, and a
    /// signature must not claim, which GPU the server picks.
    Triton,
}

impl Placement {
    /// The local device, if the model runs in this process.
    #[must_use]
    pub const fn local_device(self) -> Option<ResolvedDevice> {
        match self {
            Self::Local(device) => Some(device),
            Self::Triton => None,
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(device) => device.fmt(f),
            Self::Triton => f.write_str("triton"),
        }
    }
}

impl FromStr for Placement {
    type Err = SignatureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Local(ResolvedDevice::Cpu)),
            "triton" => Ok(Self::Triton),
            _ => {
                let bad = || SignatureError::InvalidPlacement { text: s.to_owned() };
                let index = s.strip_prefix("cuda:").ok_or_else(bad)?;
                // One spelling per device, so that the text form stays canonical.
                let canonical = !index.is_empty()
                    && index.bytes().all(|b| b.is_ascii_digit())
                    && (index == "0" || !index.starts_with('0'));
                if !canonical {
                    return Err(bad());
                }
                index
                    .parse()
                    .map(|i| Self::Local(ResolvedDevice::Cuda(i)))
                    .map_err(|_| bad())
            }
        }
    }
}

impl Serialize for Placement {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Placement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Cow::<'de, str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The pattern of [`Placement`]'s text form (CUDA indices are `u16`: at most 5 digits).
pub(crate) const PLACEMENT_PATTERN: &str = "^(cpu|triton|cuda:(0|[1-9][0-9]{0,4}))$";

impl JsonSchema for Placement {
    fn schema_name() -> Cow<'static, str> {
        "Placement".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PLACEMENT_PATTERN,
            "description": "Where the model ran: `cpu`, `cuda:N` (in this process) or `triton` (the server owns placement)."
        })
    }
}

/// How a spec was resolved: the inputs of a signature that are not in the spec itself.
///
/// ```
/// use dp_signature::{Placement, Resolution};
/// use dp_spec::{Precision, ResolvedDevice};
///
/// let on_gpu = Resolution::new(Placement::Local(ResolvedDevice::Cuda(0)), Precision::Fp16);
/// assert_eq!(on_gpu.placement.to_string(), "cuda:0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolution {
    /// Where the model runs.
    pub placement: Placement,
    /// The precision it runs at (which may differ from the spec's, e.g. after a profile or
    /// a device fallback).
    pub precision: Precision,
}

impl Resolution {
    /// A resolution from its parts.
    #[must_use]
    pub const fn new(placement: Placement, precision: Precision) -> Self {
        Self {
            placement,
            precision,
        }
    }

    /// The resolution a build without CUDA gives a spec: `runtime: triton` runs on the
    /// server ([`Placement::Triton`], whatever `device_policy` says, since the server owns
    /// placement); otherwise `device_policy` `cpu` or `auto` runs on the CPU. The precision
    /// is the spec's.
    ///
    /// ```
    /// use dp_signature::{Placement, Resolution};
    /// use dp_spec::{DevicePolicy, ErrorCode, ModelSpec, ResolvedDevice};
    ///
    /// let mut spec: ModelSpec = serde_json::from_value(serde_json::json!({
    ///     "model_name": "m", "model_version": "1", "role": "r",
    ///     "runtime": "inprocess", "engine": "onnx",
    ///     "local_artifacts": ["m.onnx"],
    ///     "weights_digest": "sha256:0000000000000000000000000000000000000000000000000000000000000000"
    /// }))?;
    /// let resolved = Resolution::for_cpu_build(&spec)?;
    /// assert_eq!(resolved.placement, Placement::Local(ResolvedDevice::Cpu));
    ///
    /// spec.device_policy = DevicePolicy::CudaIndex(1);
    /// let err = Resolution::for_cpu_build(&spec).unwrap_err();
    /// assert_eq!(err.code(), ErrorCode::DeviceUnavailable);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SignatureError::CudaUnavailable`] when an in-process spec pins `cuda` or `cuda:N`.
    pub fn for_cpu_build(spec: &ModelSpec) -> Result<Self, SignatureError> {
        let placement = match (spec.runtime, spec.device_policy) {
            (Runtime::Triton, _) => Placement::Triton,
            (Runtime::Inprocess, DevicePolicy::Cpu | DevicePolicy::Auto) => {
                Placement::Local(ResolvedDevice::Cpu)
            }
            (Runtime::Inprocess, policy @ (DevicePolicy::Cuda | DevicePolicy::CudaIndex(_))) => {
                return Err(SignatureError::CudaUnavailable {
                    model_name: spec.model_name.clone(),
                    policy,
                });
            }
        };
        Ok(Self::new(placement, spec.precision))
    }
}

#[cfg(test)]
mod tests {
    use dp_spec::{ErrorCode, ModelError};

    use super::*;

    fn spec(runtime: &str, engine: &str, policy: &str) -> ModelSpec {
        let mut value = serde_json::json!({
            "model_name": "m", "model_version": "1", "role": "r",
            "runtime": runtime, "engine": engine, "device_policy": policy,
            "precision": "bf16",
        });
        if runtime == "inprocess" {
            value["local_artifacts"] = serde_json::json!(["m"]);
        }
        serde_json::from_value(value).expect("test spec")
    }

    #[test]
    fn placements_round_trip_through_text() {
        for text in ["cpu", "triton", "cuda:0", "cuda:7", "cuda:65535"] {
            let placement: Placement = text.parse().expect(text);
            assert_eq!(placement.to_string(), text);
            assert_eq!(
                serde_json::to_value(placement).expect("serializes"),
                serde_json::json!(text)
            );
        }
        for bad in [
            "",
            "gpu",
            "cuda",
            "cuda:",
            "cuda:01",
            "cuda:65536",
            "cuda:-1",
            "CPU",
        ] {
            assert_eq!(
                bad.parse::<Placement>(),
                Err(SignatureError::InvalidPlacement {
                    text: bad.to_owned()
                })
            );
        }
    }

    #[test]
    fn cpu_build_resolves_cpu_auto_and_triton() {
        let cpu = Placement::Local(ResolvedDevice::Cpu);
        for policy in ["cpu", "auto"] {
            let resolved = Resolution::for_cpu_build(&spec("inprocess", "candle", policy));
            assert_eq!(resolved, Ok(Resolution::new(cpu, Precision::Bf16)));
        }
        for policy in ["cpu", "auto", "cuda", "cuda:3"] {
            let resolved = Resolution::for_cpu_build(&spec("triton", "onnx", policy));
            assert_eq!(
                resolved,
                Ok(Resolution::new(Placement::Triton, Precision::Bf16))
            );
        }
    }

    #[test]
    fn cpu_build_refuses_pinned_cuda_with_device_unavailable() {
        let err = Resolution::for_cpu_build(&spec("inprocess", "onnx", "cuda:3"))
            .expect_err("cuda:3 on a CPU build");
        assert_eq!(
            err,
            SignatureError::CudaUnavailable {
                model_name: "m".into(),
                policy: DevicePolicy::CudaIndex(3)
            }
        );
        assert_eq!(err.code(), ErrorCode::DeviceUnavailable);
        let model_error = ModelError::from(err);
        assert_eq!(model_error.error_code, ErrorCode::DeviceUnavailable);
        assert_eq!(model_error.details["device_policy"], "cuda:3");
        assert_eq!(model_error.details["model_name"], "m");
        assert!(
            model_error
                .message
                .contains("CUDA is not available in this build"),
            "{}",
            model_error.message
        );
        assert!(Resolution::for_cpu_build(&spec("inprocess", "onnx", "cuda")).is_err());
    }
}
