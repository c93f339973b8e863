//! [`ModelManager::health`]: whether each model of the catalog could serve now, without
//! loading it, and whether every tier-0 model (the ones a pipeline cannot start without)
//! is ready.
//!
//! Checks per model: the spec is valid and its device resolves; its artifacts are present
//! under the models root; every pin and the lock entry match, by the same rule as a load
//! ([`crate::integrity`]; through the `dp-digest` verification cache, so an unchanged tree
//! costs one `stat` per file); a provider for it is compiled in
//! and reports its runtime found (and, for Triton, the model ready on its server). Nothing
//! is contacted but the Triton endpoints the catalog configures, which the builder has
//! already checked against the allowed hosts.

use dp_digest::{VerificationCache, VerifyOptions, VerifyStatus};
use dp_spec::{ErrorCode, ModelError, ProviderHealth, Runtime};
use serde::Serialize;

use crate::builder::no_provider;
use crate::integrity;
use crate::manager::ModelManager;

/// The health of the whole catalog.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// Every model, in catalog order.
    pub models: Vec<ModelHealth>,
    /// The tier-0 summary.
    pub tier0: TierSummary,
}

impl HealthReport {
    /// Whether every tier-0 model is ready (`dp health` exits non-zero otherwise).
    #[must_use]
    pub fn tier0_ready(&self) -> bool {
        self.tier0.not_ready.is_empty()
    }
}

/// Readiness of the models of one tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierSummary {
    /// Models in the tier.
    pub total: usize,
    /// Of which ready.
    pub ready: usize,
    /// The names of those not ready.
    pub not_ready: Vec<String>,
}

/// The digest check of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestHealth {
    /// The bytes on disk match every pin and the lock entry.
    Verified,
    /// They do not match a pin (`weights_digest_mismatch`).
    Mismatch,
    /// They differ from the lock entry, or the entry was written for another version or
    /// pin (`version_drift`).
    Drift,
    /// Not checked: artifacts are missing.
    NotChecked,
    /// The spec pins no digest.
    NotPinned,
    /// A Triton model: its weights live on the server, whose deployment declares their
    /// digest; the provider compares that with the spec's pin when it loads the model.
    DeclaredByDeployment,
}

/// The health of one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelHealth {
    /// The catalog name.
    pub model_name: String,
    /// Its tier (0 = required to start).
    pub tier: u8,
    /// Whether every check passed.
    pub ready: bool,
    /// The spec is valid and its device resolves on this machine.
    pub spec_valid: bool,
    /// Every local artifact exists (`true` when there are none).
    pub artifacts_present: bool,
    /// The digest check.
    pub digest: DigestHealth,
    /// The provider that would load it (`None`: none compiled in).
    pub provider: Option<String>,
    /// What that provider reports (runtime found, Triton model ready).
    pub runtime: Option<ProviderHealth>,
    /// Whether this build runs the spec's preprocessing preset: `none` (the spec names
    /// none), `runnable`, or `not_implemented` (a known preset this build cannot run: the
    /// model serves `infer` tasks only, and that is reported as a problem).
    pub preset: &'static str,
    /// Everything wrong, with stable codes and what to do.
    pub problems: Vec<ModelError>,
}

impl ModelManager {
    /// Checks every model of the catalog (see the module docs). Loads nothing.
    ///
    /// ```
    /// # fn main() -> Result<(), dp_spec::ModelError> {
    /// let manager = dp_manager::ModelManager::builder(dp_spec::Catalog::default(), "/srv/models")
    ///     .reaper(false)
    ///     .build()?;
    /// let report = manager.health();
    /// assert!(report.models.is_empty() && report.tier0_ready());
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn health(&self) -> HealthReport {
        let inner = self.inner();
        let cache = inner.verify_cache.as_ref().map(VerificationCache::load);
        let options = VerifyOptions {
            cache: cache.as_ref(),
            ..VerifyOptions::default()
        };
        let models: Vec<ModelHealth> = self
            .catalog()
            .entries()
            .iter()
            .zip(0_u32..)
            .map(|(entry, index)| self.model_health(entry, index, &options))
            .collect();
        if let Some(cache) = &cache
            && let Err(err) = cache.save()
        {
            tracing::warn!(path = %cache.path().display(), error = %err, "could not save the verification cache");
        }
        let tier0: Vec<&ModelHealth> = models.iter().filter(|m| m.tier == 0).collect();
        let tier0 = TierSummary {
            total: tier0.len(),
            ready: tier0.iter().filter(|m| m.ready).count(),
            not_ready: tier0
                .iter()
                .filter(|m| !m.ready)
                .map(|m| m.model_name.clone())
                .collect(),
        };
        HealthReport { models, tier0 }
    }

    fn model_health(
        &self,
        entry: &dp_spec::CatalogEntry,
        index: u32,
        options: &VerifyOptions<'_>,
    ) -> ModelHealth {
        let inner = self.inner();
        let spec = &entry.spec;
        let mut problems = Vec::new();
        let route = inner.route_at(index);
        let spec_valid = match inner.route_of(&spec.model_name) {
            Ok(_) => true,
            Err(err) => {
                problems.push(err);
                false
            }
        };

        let (artifacts_present, digest) = if spec.local_artifacts.is_empty() {
            let digest = if spec.runtime == Runtime::Triton {
                DigestHealth::DeclaredByDeployment
            } else {
                DigestHealth::NotPinned
            };
            (true, digest)
        } else {
            // The same rule as a load: every pin and the lock entry (see `integrity`).
            let lock = integrity::lock_entry(spec, inner.lock.as_ref());
            match integrity::verify_spec(spec, self.models_root(), lock, options) {
                Ok(report) => {
                    let pins = integrity::artifact_pins(spec, lock);
                    let pinned = pins.first_artifact.is_some()
                        || pins.all_artifacts.is_some()
                        || pins.lock.is_some();
                    if let Some(err) = integrity::report_error(spec, self.models_root(), &report) {
                        problems.push(err);
                    }
                    let digest = match report.status() {
                        VerifyStatus::Missing => DigestHealth::NotChecked,
                        VerifyStatus::DigestMismatch => DigestHealth::Mismatch,
                        VerifyStatus::Drift => DigestHealth::Drift,
                        VerifyStatus::Ok if pinned => DigestHealth::Verified,
                        VerifyStatus::Ok if spec.runtime == Runtime::Triton => {
                            DigestHealth::DeclaredByDeployment
                        }
                        VerifyStatus::Ok => DigestHealth::NotPinned,
                    };
                    (report.missing.is_empty(), digest)
                }
                Err(err) => {
                    problems.push(err);
                    (false, DigestHealth::NotChecked)
                }
            }
        };

        let provider = route
            .and_then(|r| r.provider)
            .and_then(|i| inner.providers.get(i));
        if provider.is_none() && spec_valid {
            problems.push(no_provider(spec).into());
        }
        let runtime = provider.map(|p| p.health(spec, self.models_root()));
        if let Some(health) = &runtime {
            if !health.runtime_found {
                problems.push(ModelError::new(
                    if spec.runtime == Runtime::Triton {
                        ErrorCode::TritonUnavailable
                    } else {
                        ErrorCode::ProviderUnavailable
                    },
                    format!(
                        "model {}: runtime not found: {}",
                        spec.model_name,
                        health.detail.as_deref().unwrap_or("no detail")
                    ),
                ));
            } else if health.model_ready == Some(false) {
                problems.push(ModelError::new(
                    ErrorCode::TritonUnavailable,
                    format!(
                        "model {}: not ready on its runtime: {}",
                        spec.model_name,
                        health.detail.as_deref().unwrap_or("no detail")
                    ),
                ));
            }
        }
        // An in-process model whose files verified: its provider checks them as a load
        // would (config.json's architecture, every tensor's name and shape), so an unknown
        // model_type or a truncated checkpoint shows here, not at the first request.
        if let Some(provider) = provider
            && problems.is_empty()
            && spec.runtime == Runtime::Inprocess
            && !spec.local_artifacts.is_empty()
        {
            let lock = integrity::lock_entry(spec, inner.lock.as_ref());
            match integrity::open_spec(spec, self.models_root(), lock, options.cache, true) {
                Ok(opened) => {
                    if let Some(artifacts) = opened.artifacts
                        && let Err(err) = provider.validate_local_artifacts(spec, &artifacts)
                    {
                        problems.push(err);
                    }
                }
                Err(err) => problems.push(err.into()),
            }
        }
        let preset = match dp_preset::status(spec.preprocess_preset.as_deref()) {
            dp_preset::PresetStatus::None => "none",
            dp_preset::PresetStatus::Runnable => "runnable",
            dp_preset::PresetStatus::NotImplemented | dp_preset::PresetStatus::Unknown => {
                problems.push(ModelError::new(
                    ErrorCode::ProviderUnavailable,
                    format!(
                        "model {}: preprocess_preset {} is not implemented by this build; the \
                         model serves infer tasks (raw tensors) only",
                        spec.model_name,
                        spec.preprocess_preset.as_deref().unwrap_or("?")
                    ),
                ));
                "not_implemented"
            }
        };
        ModelHealth {
            model_name: spec.model_name.clone(),
            preset,
            tier: spec.tier,
            ready: problems.is_empty(),
            spec_valid,
            artifacts_present,
            digest,
            provider: provider.map(|p| p.name().to_owned()),
            runtime,
            problems,
        }
    }
}
