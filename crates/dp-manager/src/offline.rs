//! The offline environment of processes the manager (or its user) starts, and the build-time
//! check that no spec needs the network.
//!
//! The manager never mutates its own process environment (`std::env::set_var` is unsafe
//! in a multi-threaded process and would leak into unrelated code): it hands the variables
//! to each [`std::process::Command`] it builds instead.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use dp_spec::{ErrorCode, ModelSpec, Runtime};

use crate::error::ManagerError;
use crate::manager::ModelManager;

/// Hosts a Triton endpoint may use unless the builder allows more: this machine only.
pub const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "::1", "localhost"];

/// The environment that keeps Hugging Face, Transformers, sentence-transformers and Torch
/// tooling offline, with every cache under `<models_root>/.cache`.
///
/// ```
/// let env = dp_manager::offline_env(std::path::Path::new("/srv/models"));
/// let get = |k: &str| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
/// assert_eq!(get("HF_HUB_OFFLINE"), Some("1".into()));
/// assert_eq!(get("HF_HOME"), Some("/srv/models/.cache/huggingface".into()));
/// ```
#[must_use]
pub fn offline_env(models_root: &Path) -> Vec<(&'static str, OsString)> {
    let cache = models_root.join(".cache");
    let under = |sub: &str| cache.join(sub).into_os_string();
    vec![
        ("HF_HUB_OFFLINE", "1".into()),
        ("TRANSFORMERS_OFFLINE", "1".into()),
        ("HF_DATASETS_OFFLINE", "1".into()),
        ("HF_HUB_DISABLE_TELEMETRY", "1".into()),
        ("HF_HOME", under("huggingface")),
        ("HF_HUB_CACHE", under("huggingface/hub")),
        ("TRANSFORMERS_CACHE", under("huggingface/hub")),
        ("SENTENCE_TRANSFORMERS_HOME", under("sentence_transformers")),
        ("TORCH_HOME", under("torch")),
        ("DP_MODELS_ROOT", models_root.as_os_str().to_owned()),
    ]
}

impl ModelManager {
    /// The offline environment of this manager's models root (see [`offline_env`]).
    #[must_use]
    pub fn offline_env(&self) -> Vec<(&'static str, OsString)> {
        offline_env(self.models_root())
    }

    /// A command for `program` that runs with the offline environment (on top of this
    /// process's environment, which is left untouched). Anything that starts a process on
    /// behalf of the manager uses this.
    ///
    /// ```
    /// # fn main() -> Result<(), dp_spec::ModelError> {
    /// let manager = dp_manager::ModelManager::builder(dp_spec::Catalog::default(), "/srv/models")
    ///     .reaper(false)
    ///     .build()?;
    /// let before = std::env::var_os("TRANSFORMERS_OFFLINE");
    /// let command = manager.offline_command("python3");
    /// assert!(command.get_envs().any(|(k, v)| k == "TRANSFORMERS_OFFLINE" && v == Some("1".as_ref())));
    /// assert_eq!(std::env::var_os("TRANSFORMERS_OFFLINE"), before, "this process is untouched");
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn offline_command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.envs(self.offline_env());
        command
    }
}

/// The host of an `http://` / `https://` base URL (brackets of an IPv6 literal removed).
pub(crate) fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next();
    }
    authority.split(':').next().filter(|h| !h.is_empty())
}

/// Why `spec` would need the network, if it would.
pub(crate) fn network_need(spec: &ModelSpec, allowed_hosts: &[String]) -> Option<ManagerError> {
    let forbidden = |what: String| {
        Some(ManagerError::NetworkForbidden {
            model: spec.model_name.clone(),
            what,
        })
    };
    for artifact in &spec.local_artifacts {
        if let Some((ErrorCode::NetworkForbidden, message)) =
            dp_spec::rules::check_artifact_path(artifact)
        {
            return forbidden(message);
        }
    }
    if spec.runtime == Runtime::Triton {
        let Some(triton) = &spec.triton else {
            return None; // the spec rules already require it
        };
        let host = url_host(&triton.endpoint);
        let allowed = host.is_some_and(|h| allowed_hosts.iter().any(|a| a.eq_ignore_ascii_case(h)));
        if !allowed {
            return forbidden(format!(
                "Triton endpoint {:?} is not on an allowed host ({}); allow its host with \
                 ManagerBuilder::allowed_triton_hosts or point it at a local server",
                triton.endpoint,
                allowed_hosts.join(", ")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_read_from_base_urls() {
        assert_eq!(url_host("http://127.0.0.1:8000"), Some("127.0.0.1"));
        assert_eq!(
            url_host("https://user@triton.internal/v2"),
            Some("triton.internal")
        );
        assert_eq!(url_host("http://[::1]:8000/"), Some("::1"));
        assert_eq!(url_host("http://localhost"), Some("localhost"));
        assert_eq!(url_host("ftp://x"), None);
        assert_eq!(url_host("http://:80"), None);
    }

    fn triton(endpoint: &str) -> ModelSpec {
        serde_json::from_value(serde_json::json!({
            "model_name": "t", "model_version": "1", "role": "r",
            "runtime": "triton", "engine": "onnx",
            "triton": {"endpoint": endpoint, "model_name": "t"}
        }))
        .expect("valid spec")
    }

    #[test]
    fn only_allowed_triton_hosts_and_local_artifacts_pass() {
        let loopback: Vec<String> = LOOPBACK_HOSTS.map(str::to_owned).to_vec();
        assert!(network_need(&triton("http://127.0.0.1:8000"), &loopback).is_none());
        assert!(network_need(&triton("http://[::1]:8000"), &loopback).is_none());
        let err = network_need(&triton("http://10.0.0.5:8000"), &loopback).expect("refused");
        assert_eq!(err.code(), ErrorCode::NetworkForbidden);
        assert!(err.to_string().contains("10.0.0.5"), "{err}");
        let allowed = vec!["10.0.0.5".to_owned()];
        assert!(network_need(&triton("http://10.0.0.5:8000"), &allowed).is_none());

        // A hand-built spec (never validated) with a URL artifact.
        let mut spec = triton("http://127.0.0.1:1");
        spec.runtime = Runtime::Inprocess;
        spec.local_artifacts = vec!["https://huggingface.co/x/model.safetensors".to_owned()];
        let err = network_need(&spec, &loopback).expect("refused");
        assert_eq!(err.code(), ErrorCode::NetworkForbidden);
    }
}
