//! Role resolution: which catalog entry serves a role with given capabilities.

use dp_spec::{CatalogEntry, ModelError, ModelSpec};

use crate::error::ManagerError;
use crate::manager::ModelManager;

/// The entry a role resolved to, and why.
#[derive(Debug, Clone, Copy)]
pub struct RoleResolution<'a> {
    /// The chosen entry.
    pub entry: &'a CatalogEntry,
    /// Why it was chosen.
    pub reason: RoleReason,
}

/// Why [`ModelManager::resolve_role`] chose an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleReason {
    /// The caller's preferred model has the role and every capability.
    Preferred,
    /// The first non-deprecated entry, in catalog order, with the role and every
    /// capability; `preferred_rejected` says whether a preferred model was given and did not
    /// qualify (unknown, or lacking the role or a capability).
    FirstInCatalogOrder {
        /// A preferred model was named but could not be used.
        preferred_rejected: bool,
    },
}

impl RoleReason {
    /// A short machine-friendly label (`preferred`, `catalog_order`,
    /// `catalog_order_preferred_rejected`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Preferred => "preferred",
            Self::FirstInCatalogOrder {
                preferred_rejected: false,
            } => "catalog_order",
            Self::FirstInCatalogOrder {
                preferred_rejected: true,
            } => "catalog_order_preferred_rejected",
        }
    }
}

/// What `spec` lacks to serve `role` with `capabilities` (empty when nothing).
fn lacking(spec: &ModelSpec, role: &str, capabilities: &[&str]) -> Vec<String> {
    let mut missing = Vec::new();
    if !spec.has_role(role) {
        missing.push(format!("role {role}"));
    }
    missing.extend(
        capabilities
            .iter()
            .filter(|c| !spec.has_capability(c))
            .map(|c| (*c).to_owned()),
    );
    missing
}

impl ModelManager {
    /// The model serving `role` with every capability in `required_capabilities`:
    ///
    /// 1. `preferred` (a name or alias), if it has the role and every capability — even if
    ///    deprecated, since it was asked for by name (with a warning);
    /// 2. otherwise the first non-deprecated entry in catalog order (byte order of spec
    ///    paths, so never file-system dependent) that has them;
    /// 3. otherwise `role_unresolved`, listing each model with the role and what it lacks.
    ///
    /// Emits an `info` event `event = "role_resolution"` with `role`, `capabilities`,
    /// `chosen` and `reason`.
    ///
    /// # Errors
    /// `role_unresolved`.
    pub fn resolve_role(
        &self,
        role: &str,
        required_capabilities: &[&str],
        preferred: Option<&str>,
    ) -> Result<RoleResolution<'_>, ModelError> {
        let entries = self.catalog().entries();
        let mut preferred_rejected = false;
        if let Some(name) = preferred {
            match self.resolve(name) {
                Ok(entry) => {
                    let missing = lacking(&entry.spec, role, required_capabilities);
                    if missing.is_empty() {
                        return Ok(chosen(
                            role,
                            required_capabilities,
                            entry,
                            RoleReason::Preferred,
                        ));
                    }
                    tracing::warn!(
                        preferred = name,
                        role,
                        missing = %missing.join(", "),
                        "preferred model cannot serve the role; falling back to catalog order"
                    );
                }
                Err(_) => tracing::warn!(
                    preferred = name,
                    role,
                    "preferred model is not in the catalog; falling back to catalog order"
                ),
            }
            preferred_rejected = true;
        }
        let reason = RoleReason::FirstInCatalogOrder { preferred_rejected };
        if let Some(entry) = entries.iter().find(|e| {
            !e.spec.deprecated && lacking(&e.spec, role, required_capabilities).is_empty()
        }) {
            return Ok(chosen(role, required_capabilities, entry, reason));
        }
        let candidates: Vec<(String, String)> = entries
            .iter()
            .filter(|e| e.spec.has_role(role))
            .map(|e| {
                let mut why = Vec::new();
                if e.spec.deprecated {
                    why.push("deprecated".to_owned());
                }
                let missing = lacking(&e.spec, role, required_capabilities);
                if !missing.is_empty() {
                    why.push(format!("missing {}", missing.join(", ")));
                }
                (e.spec.model_name.clone(), why.join("; "))
            })
            .collect();
        let err = ManagerError::RoleUnresolved {
            role: role.to_owned(),
            capabilities: required_capabilities
                .iter()
                .map(|c| (*c).to_owned())
                .collect(),
            lacking: candidates,
        };
        tracing::info!(
            event = "role_resolution",
            role,
            capabilities = ?required_capabilities,
            chosen = "",
            reason = "unresolved",
            "{err}"
        );
        Err(err.into())
    }
}

fn chosen<'a>(
    role: &str,
    capabilities: &[&str],
    entry: &'a CatalogEntry,
    reason: RoleReason,
) -> RoleResolution<'a> {
    tracing::info!(
        event = "role_resolution",
        role,
        capabilities = ?capabilities,
        chosen = %entry.spec.model_name,
        reason = reason.as_str(),
        "role resolved"
    );
    RoleResolution { entry, reason }
}
