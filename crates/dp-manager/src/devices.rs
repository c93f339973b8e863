//! [`DeviceInventory`]: the devices a manager may place models on, and how a spec's
//! `device_policy` resolves against them. Never a silent CPU fallback: `cuda` / `cuda:N` that
//! this machine or build cannot serve is `device_unavailable`; `auto` picks the CPU only when
//! there is no CUDA device, and the record of every output says where it ran.

use dp_spec::{CudaDeviceInfo, DevicePolicy, ModelSpec, ResolvedDevice, Runtime};
use serde::Serialize;

use crate::error::ManagerError;

/// What the manager knows about this machine's CUDA devices.
///
/// ```
/// use dp_manager::DeviceInventory;
/// use dp_spec::CudaDeviceInfo;
///
/// let gpu = CudaDeviceInfo {
///     index: 0,
///     name: "NVIDIA H200".into(),
///     compute_capability: (9, 0),
///     total_bytes: 140 << 30,
///     free_bytes: 139 << 30,
/// };
/// let inventory = DeviceInventory::from_devices(vec![gpu]);
/// assert_eq!(inventory.cuda_count(), Some(1));
/// assert_eq!(inventory.free_vram_bytes(), Some(139 << 30));
/// assert_eq!(DeviceInventory::cpu_only().cuda_count(), Some(0));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInventory {
    /// The devices the driver reported, or none when CUDA is vouched for without a probe.
    cuda: CudaDevices,
    /// Why the driver could not be asked (it is installed but refused to start), repeated
    /// in the error of every model that then cannot have its GPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

/// The CUDA part of an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum CudaDevices {
    /// Probed: exactly these devices (possibly none).
    Probed(Vec<CudaDeviceInfo>),
    /// CUDA declared usable by the caller, devices not enumerated: every `cuda:N` is
    /// accepted here and the provider finds out at load time.
    Declared,
}

impl DeviceInventory {
    /// No CUDA device: what a build without CUDA sees.
    #[must_use]
    pub fn cpu_only() -> Self {
        Self::from_devices(Vec::new())
    }

    /// Exactly these CUDA devices (a probe's result, or a test's).
    #[must_use]
    pub fn from_devices(devices: Vec<CudaDeviceInfo>) -> Self {
        Self {
            cuda: CudaDevices::Probed(devices),
            problem: None,
        }
    }

    /// CUDA declared usable without enumerating devices (the caller vouches for it; which
    /// `cuda:N` exist and their memory are not checked here).
    #[must_use]
    pub fn declared_cuda() -> Self {
        Self {
            cuda: CudaDevices::Declared,
            problem: None,
        }
    }

    /// Asks the CUDA driver, through the providers compiled in (candle's `cuda` feature):
    /// the device count, names and free memory. A build without CUDA gets
    /// [`Self::cpu_only`]; a driver that refuses to start gives no device, and its reason
    /// is kept for the errors of the models that asked for one.
    #[must_use]
    pub fn probe() -> Self {
        #[cfg(feature = "cuda")]
        {
            match dp_provider_candle::cuda_devices() {
                Ok(devices) => {
                    for d in &devices {
                        tracing::info!(
                            device = %format!("cuda:{}", d.index),
                            name = %d.name,
                            compute_capability = %format!("{}.{}", d.compute_capability.0, d.compute_capability.1),
                            total_bytes = d.total_bytes,
                            free_bytes = d.free_bytes,
                            "CUDA device"
                        );
                    }
                    Self::from_devices(devices)
                }
                Err(err) => {
                    tracing::warn!(error = %err, "the CUDA driver could not be asked; no GPU will be used");
                    Self {
                        cuda: CudaDevices::Probed(Vec::new()),
                        problem: Some(err.to_string()),
                    }
                }
            }
        }
        #[cfg(not(feature = "cuda"))]
        {
            Self::cpu_only()
        }
    }

    /// The CUDA devices probed (empty when declared without a probe, or none).
    #[must_use]
    pub fn cuda_devices(&self) -> &[CudaDeviceInfo] {
        match &self.cuda {
            CudaDevices::Probed(devices) => devices,
            CudaDevices::Declared => &[],
        }
    }

    /// How many CUDA devices there are; `None` when CUDA is declared without a probe.
    #[must_use]
    pub fn cuda_count(&self) -> Option<usize> {
        match &self.cuda {
            CudaDevices::Probed(devices) => Some(devices.len()),
            CudaDevices::Declared => None,
        }
    }

    /// The GPU memory free on every probed device together when probed (`None` when not
    /// probed or when there is no device): the default GPU memory budget.
    #[must_use]
    pub fn free_vram_bytes(&self) -> Option<u64> {
        let devices = self.cuda_devices();
        (!devices.is_empty()).then(|| devices.iter().map(|d| d.free_bytes).sum())
    }

    fn has_cuda(&self) -> bool {
        self.cuda_count() != Some(0)
    }

    /// Where a spec's model goes on this machine. Never falls back from CUDA to the CPU: a
    /// spec that pins CUDA on a machine without it (or `cuda:N` past the last device) is an
    /// error, reported when the model is asked for so one such spec does not stop the rest
    /// of the catalog from working. `auto` takes `cuda:0` when there is a GPU and
    /// `provider_runs_on_cuda` (asked only then) says the model's provider can use it, else
    /// the CPU.
    pub(crate) fn resolve(
        &self,
        spec: &ModelSpec,
        provider_runs_on_cuda: impl FnOnce() -> bool,
    ) -> Result<ResolvedDevice, ManagerError> {
        if spec.runtime == Runtime::Triton {
            // The server places the model; locally it only costs a client.
            return Ok(ResolvedDevice::Cpu);
        }
        let cuda = |index: u16| match self.cuda_count() {
            None => Ok(ResolvedDevice::Cuda(index)),
            Some(0) => Err(ManagerError::CudaUnavailable {
                model: spec.model_name.clone(),
                policy: spec.device_policy,
                reason: self.problem.clone(),
            }),
            Some(count) if usize::from(index) >= count => Err(ManagerError::CudaDeviceMissing {
                model: spec.model_name.clone(),
                index,
                count,
            }),
            Some(_) => Ok(ResolvedDevice::Cuda(index)),
        };
        match spec.device_policy {
            DevicePolicy::Cpu => Ok(ResolvedDevice::Cpu),
            DevicePolicy::Auto if self.has_cuda() && provider_runs_on_cuda() => {
                Ok(ResolvedDevice::Cuda(0))
            }
            DevicePolicy::Auto => Ok(ResolvedDevice::Cpu),
            DevicePolicy::Cuda => cuda(0),
            DevicePolicy::CudaIndex(n) => cuda(n),
        }
    }
}

impl DeviceInventory {
    /// The GPUs besides `primary` a worker pool of `spec`'s model may also run on: with
    /// a policy that names no device (`auto`, `cuda`) placed on `cuda:0`, every other
    /// probed GPU in order (`cuda:1`, `cuda:2`…), so that its workers go round robin over
    /// all of them. None for a pinned `cuda:N` (placed where it says), the CPU, Triton
    /// models (their server places them) and CUDA declared without a probe (which devices
    /// exist is not known).
    pub(crate) fn spread_devices(
        &self,
        spec: &ModelSpec,
        primary: ResolvedDevice,
    ) -> Vec<ResolvedDevice> {
        let spreads = matches!(spec.device_policy, DevicePolicy::Auto | DevicePolicy::Cuda);
        if spec.runtime != Runtime::Inprocess || primary != ResolvedDevice::Cuda(0) || !spreads {
            return Vec::new();
        }
        self.cuda_devices()
            .iter()
            .filter_map(|d| (d.index != 0).then_some(ResolvedDevice::Cuda(d.index)))
            .collect()
    }
}

impl Default for DeviceInventory {
    /// [`Self::cpu_only`]: nothing is placed on a GPU unless probed or declared.
    fn default() -> Self {
        Self::cpu_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policy: &str, runtime: &str) -> ModelSpec {
        let mut value = serde_json::json!({
            "model_name": "m", "model_version": "1", "role": "r",
            "runtime": runtime, "engine": "onnx", "device_policy": policy,
        });
        if runtime == "triton" {
            value["triton"] =
                serde_json::json!({"endpoint": "http://127.0.0.1:1", "model_name": "m"});
        }
        serde_json::from_value(value).expect("valid spec")
    }

    fn gpu(index: u16, free_gib: u64) -> CudaDeviceInfo {
        CudaDeviceInfo {
            index,
            name: "test GPU".into(),
            compute_capability: (9, 0),
            total_bytes: 80 << 30,
            free_bytes: free_gib << 30,
        }
    }

    #[test]
    fn device_policies_resolve_without_silent_cpu_fallback() {
        let none = DeviceInventory::cpu_only();
        let declared = DeviceInventory::declared_cuda();
        let two = DeviceInventory::from_devices(vec![gpu(0, 10), gpu(1, 20)]);
        let cases = [
            ("auto", &none, Some(ResolvedDevice::Cpu)),
            ("auto", &declared, Some(ResolvedDevice::Cuda(0))),
            ("auto", &two, Some(ResolvedDevice::Cuda(0))),
            ("cpu", &two, Some(ResolvedDevice::Cpu)),
            ("cuda", &declared, Some(ResolvedDevice::Cuda(0))),
            ("cuda:3", &declared, Some(ResolvedDevice::Cuda(3))),
            ("cuda:1", &two, Some(ResolvedDevice::Cuda(1))),
            ("cuda:2", &two, None),
            ("cuda", &none, None),
            ("cuda:1", &none, None),
        ];
        for (policy, inventory, expected) in cases {
            let got = inventory.resolve(&spec(policy, "inprocess"), || true).ok();
            assert_eq!(got, expected, "{policy} with {inventory:?}");
        }
        assert_eq!(
            two.resolve(&spec("auto", "inprocess"), || false).ok(),
            Some(ResolvedDevice::Cpu),
            "auto stays on the CPU when the model's provider cannot use the GPU"
        );
        assert_eq!(
            none.resolve(&spec("cuda", "triton"), || true).ok(),
            Some(ResolvedDevice::Cpu),
            "the Triton server places its models"
        );
    }

    #[test]
    fn worker_pools_spread_only_where_the_policy_names_no_device() {
        let three = DeviceInventory::from_devices(vec![gpu(0, 8), gpu(1, 8), gpu(2, 8)]);
        let cuda0 = ResolvedDevice::Cuda(0);
        let others = vec![ResolvedDevice::Cuda(1), ResolvedDevice::Cuda(2)];
        for policy in ["auto", "cuda"] {
            let spec = spec(policy, "inprocess");
            assert_eq!(three.spread_devices(&spec, cuda0), others, "{policy}");
            // One GPU, or CUDA declared without knowing the devices: nowhere to spread.
            let one = DeviceInventory::from_devices(vec![gpu(0, 8)]);
            assert!(one.spread_devices(&spec, cuda0).is_empty());
            assert!(
                DeviceInventory::declared_cuda()
                    .spread_devices(&spec, cuda0)
                    .is_empty()
            );
        }
        for (policy, runtime, primary) in [
            ("cuda:1", "inprocess", ResolvedDevice::Cuda(1)),
            ("cuda:0", "inprocess", cuda0),
            ("cpu", "inprocess", ResolvedDevice::Cpu),
            ("auto", "inprocess", ResolvedDevice::Cpu),
            ("auto", "triton", ResolvedDevice::Cpu),
        ] {
            let spec = spec(policy, runtime);
            assert!(
                three.spread_devices(&spec, primary).is_empty(),
                "{policy} {runtime}"
            );
        }
    }

    #[test]
    fn a_missing_index_names_the_devices_there_are() {
        let two = DeviceInventory::from_devices(vec![gpu(0, 10), gpu(1, 20)]);
        let err = dp_spec::ModelError::from(
            two.resolve(&spec("cuda:2", "inprocess"), || true)
                .expect_err("no third GPU"),
        );
        assert_eq!(err.error_code, dp_spec::ErrorCode::DeviceUnavailable);
        assert!(
            err.message.contains("cuda:2") && err.message.contains("2 CUDA devices"),
            "{}",
            err.message
        );
        assert_eq!(err.details["cuda_devices"], 2);
        assert_eq!(two.free_vram_bytes(), Some(30 << 30));
    }

    #[test]
    fn a_driver_problem_is_repeated_in_the_error() {
        let broken = DeviceInventory {
            cuda: CudaDevices::Probed(Vec::new()),
            problem: Some("cannot start the CUDA driver: CUDA_ERROR_INSUFFICIENT_DRIVER".into()),
        };
        let err = dp_spec::ModelError::from(
            broken
                .resolve(&spec("cuda", "inprocess"), || true)
                .expect_err("no GPU"),
        );
        assert_eq!(err.error_code, dp_spec::ErrorCode::DeviceUnavailable);
        assert!(
            err.message.contains("INSUFFICIENT_DRIVER"),
            "{}",
            err.message
        );
        assert_eq!(broken.free_vram_bytes(), None);
    }
}
