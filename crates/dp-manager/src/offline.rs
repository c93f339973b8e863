//! The offline environment of processes the manager (or its user) starts, and the build-time
//! check that no spec needs the network.
//!
//! The manager never mutates its own process environment (`std::env::set_var` is unsafe
//! in a multi-threaded process and would leak into unrelated code): it hands the variables
//! to each [`std::process::Command`] it builds instead.

use std::ffi::OsString;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::Path;
use std::process::Command;

use dp_spec::off_limits_address;
use dp_spec::{ErrorCode, ModelSpec, Runtime};

use crate::error::ManagerError;
use crate::manager::ModelManager;

/// Hosts a Triton endpoint may use unless the builder allows more: this machine only. The
/// name `localhost` is allowed as a name, not taken as proof of loopback: like any name, it
/// must resolve to loopback addresses only (see [`crate::ManagerBuilder::build`]).
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
        if let Some((ErrorCode::NetworkForbidden, message)) = dp_spec::check_artifact_path(artifact)
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
        let Some(host) = host.filter(|_| allowed) else {
            return forbidden(format!(
                "Triton endpoint {:?} is not on an allowed host ({}); allow its host with \
                 ManagerBuilder::allowed_triton_hosts or point it at a local server",
                triton.endpoint,
                allowed_hosts.join(", ")
            ));
        };
        if let Some(address) = off_limits_address(resolve_host(host), allowed_hosts) {
            return forbidden(format!(
                "Triton endpoint {:?}: host {host:?} resolved to {address}, which is neither \
                 loopback nor an allowed IP address; an allowed name is trusted only for the \
                 addresses it resolves to: fix its resolution (/etc/hosts, DNS) or allow \
                 {address} with ManagerBuilder::allowed_triton_hosts (and the Triton \
                 provider's allowed_hosts)",
                triton.endpoint
            ));
        }
    }
    None
}

/// The addresses `host` stands for: itself when it is an IP address, else what the system
/// resolver answers. A name that does not resolve gives none: nothing can be dialed, and
/// the Triton provider checks the addresses again before every connection.
fn resolve_host(host: &str) -> Vec<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return vec![ip];
    }
    // The port does not change the addresses; only the lookup needs one.
    (host, 0_u16)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default()
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

    #[test]
    fn the_name_localhost_is_no_proof_of_loopback() {
        let loopback: Vec<String> = LOOPBACK_HOSTS.map(str::to_owned).to_vec();
        let ips = |list: &[&str]| {
            list.iter()
                .map(|a| a.parse().expect(a))
                .collect::<Vec<IpAddr>>()
        };
        // What `localhost` resolves to with /etc/hosts mapping it elsewhere.
        for resolved in [
            &["10.1.2.3"][..],
            &["127.0.0.1", "10.1.2.3"],
            &["::1", "2001:db8::1"],
            &["::ffff:10.1.2.3"],
        ] {
            let found = off_limits_address(ips(resolved), &loopback).expect("refused");
            assert!(
                resolved.iter().any(|r| r.contains(&found.to_string())),
                "{found}"
            );
        }
        for resolved in [
            &["127.0.0.1", "::1"][..],
            &["127.0.1.1"],
            &["::ffff:127.0.0.1"],
            &[],
        ] {
            assert_eq!(
                off_limits_address(ips(resolved), &loopback),
                None,
                "{resolved:?}"
            );
        }
        // Allowed by IP, not by name.
        let allowed = vec!["triton.internal".to_owned(), "10.1.2.3".to_owned()];
        assert_eq!(off_limits_address(ips(&["10.1.2.3"]), &allowed), None);
        assert_eq!(
            off_limits_address(ips(&["10.1.2.4"]), &allowed),
            Some("10.1.2.4".parse().expect("ip"))
        );
    }

    #[test]
    fn an_allowed_name_is_judged_by_the_address_it_resolves_to() {
        // `3221225985` is a name to URL parsing but the system resolver reads it as
        // 192.0.2.1 (inet_aton's one-number form): an allowed name leading off loopback,
        // with no /etc/hosts edit.
        assert_eq!(
            resolve_host("3221225985"),
            vec!["192.0.2.1".parse::<IpAddr>().expect("ip")]
        );
        let name = vec!["3221225985".to_owned()];
        let err = network_need(&triton("http://3221225985:8000"), &name).expect("refused");
        assert_eq!(err.code(), ErrorCode::NetworkForbidden);
        let message = err.to_string();
        assert!(
            message.contains("\"3221225985\" resolved to 192.0.2.1"),
            "{message}"
        );
        assert!(message.contains("allowed_triton_hosts"), "{message}");
        let both = vec!["3221225985".to_owned(), "192.0.2.1".to_owned()];
        assert!(network_need(&triton("http://3221225985:8000"), &both).is_none());
        // The same number for 127.0.0.1 leads to loopback: allowed.
        assert!(
            network_need(
                &triton("http://2130706433:8000"),
                &["2130706433".to_owned()]
            )
            .is_none()
        );
        // `localhost` resolves from this machine's /etc/hosts, to loopback.
        let loopback: Vec<String> = LOOPBACK_HOSTS.map(str::to_owned).to_vec();
        assert!(network_need(&triton("http://localhost:8000"), &loopback).is_none());
    }
}
