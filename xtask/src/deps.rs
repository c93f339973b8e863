//! `cargo xtask deps`: a guard on the resolved dependency graph.
//!
//! Models and native libraries come from `${DP_MODELS_ROOT}` and the paths `cargo xtask
//! setup` prepares, never from a download at build or run time; and only the Triton
//! provider talks HTTP. This check enforces both on the graph cargo resolves with all
//! features, from every workspace member, dev and build dependencies included, and names
//! the path that brings each offending crate in.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cargo_metadata::{CargoOpt, Metadata, MetadataCommand, Node, PackageId};

/// Crates that no workspace crate may reach, by any path, with why.
const FORBIDDEN_CRATES: &[(&str, &str)] = &[
    (
        "hf-hub",
        "it downloads models from the Hugging Face Hub; models are read from ${DP_MODELS_ROOT}",
    ),
    (
        "reqwest",
        "a general-purpose HTTP client that crates use to download files; dp-provider-triton \
         uses a minimal client instead",
    ),
];

/// Features that make a crate download something, by crate, with why.
const FORBIDDEN_FEATURES: &[(&str, &[&str], &str)] = &[
    (
        "ort",
        &["download-binaries", "fetch-models"],
        "they download ONNX Runtime binaries or models at build time; ONNX Runtime is loaded \
         dynamically from the library `cargo xtask setup` provides",
    ),
    (
        "ort-sys",
        &["download-binaries"],
        "it downloads ONNX Runtime binaries at build time; ONNX Runtime is loaded dynamically \
         from the library `cargo xtask setup` provides",
    ),
    (
        "tokenizers",
        &["http"],
        "it downloads tokenizers from the Hugging Face Hub; tokenizers are read from \
         ${DP_MODELS_ROOT}",
    ),
];

/// HTTP client crates: allowed only behind [`HTTP_ALLOWED_IN`].
const HTTP_CLIENTS: &[&str] = &[
    "ureq",
    "reqwest",
    "hyper",
    "hyper-util",
    "isahc",
    "curl",
    "attohttpc",
    "surf",
    "minreq",
    "ehttp",
    "http-req",
    "awc",
];

/// The one crate allowed to depend on an HTTP client (the KServe v2 HTTP protocol).
const HTTP_ALLOWED_IN: &str = "dp-provider-triton";

/// Which rule a dependency path breaks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rule {
    /// The crate is forbidden everywhere.
    ForbiddenCrate,
    /// The crate is reached with these forbidden features enabled.
    ForbiddenFeatures(Vec<String>),
    /// An HTTP client reached through a path that avoids [`HTTP_ALLOWED_IN`].
    HttpClient,
}

/// A dependency path from a workspace member to a crate it must not reach.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Violation {
    /// Package names, from the workspace member to the offending crate.
    pub(crate) path: Vec<String>,
    /// The rule the last crate of the path breaks.
    pub(crate) rule: Rule,
}

impl Violation {
    /// The offending crate: the last one of the path.
    pub(crate) fn offender(&self) -> &str {
        self.path.last().map_or("", String::as_str)
    }

    /// Why the rule exists and how to fix a path that breaks it.
    fn explanation(&self) -> String {
        let name = self.offender();
        match &self.rule {
            Rule::ForbiddenCrate => {
                let why = FORBIDDEN_CRATES
                    .iter()
                    .find(|(krate, _)| *krate == name)
                    .map_or("", |(_, why)| why);
                format!("`{name}` is forbidden: {why}; remove the dependency that brings it in")
            }
            Rule::ForbiddenFeatures(features) => {
                let why = FORBIDDEN_FEATURES
                    .iter()
                    .find(|(krate, _, _)| *krate == name)
                    .map_or("", |(_, _, why)| why);
                format!(
                    "feature(s) {} of `{name}` are forbidden: {why}; disable them (check \
                     `default-features = false` and the features each crate on the path enables)",
                    features
                        .iter()
                        .map(|f| format!("`{f}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Rule::HttpClient => format!(
                "HTTP client `{name}` outside `{HTTP_ALLOWED_IN}`, the only crate allowed one; \
                 move the HTTP code into `{HTTP_ALLOWED_IN}` or drop the dependency"
            ),
        }
    }
}

impl fmt::Display for Violation {
    /// `dp-manager -> dp-provider-candle -> tokenizers [features: http]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path.join(" -> "))?;
        if let Rule::ForbiddenFeatures(features) = &self.rule {
            write!(f, " [features: {}]", features.join(", "))?;
        }
        Ok(())
    }
}

/// The resolved graph, indexed for walking.
struct Graph<'m> {
    /// Resolve nodes by package id.
    nodes: HashMap<&'m PackageId, &'m Node>,
    /// Package names by package id.
    names: HashMap<&'m PackageId, &'m str>,
}

impl<'m> Graph<'m> {
    /// Indexes `metadata`; fails if it was produced without a resolve (`--no-deps`).
    fn new(metadata: &'m Metadata) -> Result<Self> {
        let resolve = metadata
            .resolve
            .as_ref()
            .context("cargo metadata returned no dependency graph (was it run with --no-deps?)")?;
        Ok(Self {
            nodes: resolve.nodes.iter().map(|node| (&node.id, node)).collect(),
            names: metadata
                .packages
                .iter()
                .map(|pkg| (&pkg.id, pkg.name.as_str()))
                .collect(),
        })
    }

    /// The package name of `id` (its id if the metadata lacks the package).
    fn name(&self, id: &'m PackageId) -> &'m str {
        self.names.get(id).copied().unwrap_or(id.repr.as_str())
    }

    /// Breadth-first walk from `root` over every dependency edge (normal, build and dev,
    /// on all targets), never entering a package named `skip`. Returns each reachable
    /// package with a shortest path to it (root first), in breadth-first order.
    fn walk(&self, root: &'m PackageId, skip: Option<&str>) -> Vec<(&'m PackageId, Vec<&'m str>)> {
        let mut parents: HashMap<&'m PackageId, Option<&'m PackageId>> = HashMap::new();
        let mut order = Vec::new();
        let mut queue = VecDeque::from([root]);
        parents.insert(root, None);
        while let Some(id) = queue.pop_front() {
            order.push(id);
            let Some(node) = self.nodes.get(id) else {
                continue;
            };
            for dep in &node.deps {
                if skip == Some(self.name(&dep.pkg)) || parents.contains_key(&dep.pkg) {
                    continue;
                }
                parents.insert(&dep.pkg, Some(id));
                queue.push_back(&dep.pkg);
            }
        }
        order
            .into_iter()
            .map(|id| {
                let mut path = vec![self.name(id)];
                let mut cursor = id;
                while let Some(Some(parent)) = parents.get(cursor) {
                    path.push(self.name(parent));
                    cursor = parent;
                }
                path.reverse();
                (id, path)
            })
            .collect()
    }

    /// The enabled features of `id` that [`FORBIDDEN_FEATURES`] lists.
    fn forbidden_features(&self, id: &PackageId, name: &str) -> Vec<String> {
        let Some((_, forbidden, _)) = FORBIDDEN_FEATURES.iter().find(|(k, _, _)| *k == name) else {
            return Vec::new();
        };
        let mut found: Vec<String> = self
            .nodes
            .get(id)
            .map(|node| {
                node.features
                    .iter()
                    .filter(|f| forbidden.contains(&f.as_str()))
                    .map(|f| f.to_string())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }
}

/// Every dependency path, from every workspace member, that breaks a rule: sorted, one per
/// (member, offending crate, rule), each with a shortest path.
///
/// Pure: it reads `metadata` only, so tests can feed it any graph. The rules apply to
/// whatever features `metadata` was resolved with; [`run`] asks for all of them.
pub(crate) fn check(metadata: &Metadata) -> Result<Vec<Violation>> {
    let graph = Graph::new(metadata)?;
    let owned = |path: Vec<&str>| path.into_iter().map(str::to_owned).collect::<Vec<_>>();
    // A set: the same path can break a rule from several members' walks.
    let mut violations = BTreeSet::new();
    for member in &metadata.workspace_members {
        // Downloads are forbidden everywhere, dp-provider-triton included.
        for (id, path) in graph.walk(member, None) {
            let name = graph.name(id);
            if FORBIDDEN_CRATES.iter().any(|(krate, _)| *krate == name) {
                violations.insert(Violation {
                    path: owned(path.clone()),
                    rule: Rule::ForbiddenCrate,
                });
            }
            let features = graph.forbidden_features(id, name);
            if !features.is_empty() {
                violations.insert(Violation {
                    path: owned(path),
                    rule: Rule::ForbiddenFeatures(features),
                });
            }
        }
        // HTTP clients: only on paths through dp-provider-triton, so walk without entering
        // it. From dp-provider-triton itself every path passes through it.
        if graph.name(member) == HTTP_ALLOWED_IN {
            continue;
        }
        for (id, path) in graph.walk(member, Some(HTTP_ALLOWED_IN)) {
            let name = graph.name(id);
            // A forbidden crate is already reported as such.
            let forbidden = FORBIDDEN_CRATES.iter().any(|(krate, _)| *krate == name);
            if HTTP_CLIENTS.contains(&name) && !forbidden {
                violations.insert(Violation {
                    path: owned(path),
                    rule: Rule::HttpClient,
                });
            }
        }
    }
    Ok(violations.into_iter().collect())
}

/// Runs `cargo metadata` with all features at `root`, with extra cargo options.
pub(crate) fn metadata(root: &Path, extra: &[&str]) -> Result<Metadata> {
    MetadataCommand::new()
        .cargo_path(crate::process::cargo())
        .current_dir(root)
        .features(CargoOpt::AllFeatures)
        .other_options(extra.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .exec()
        .with_context(|| {
            format!(
                "`cargo metadata --all-features` failed in {}; fix Cargo.toml or Cargo.lock \
                 (run `cargo metadata --all-features` to see the whole error)",
                root.display()
            )
        })
}

/// `cargo xtask deps`: runs [`check`] on the workspace and reports.
pub(crate) fn run(root: &Path) -> Result<()> {
    let metadata = metadata(root, &[])?;
    let violations = check(&metadata)?;
    let checked = metadata.resolve.as_ref().map_or(0, |r| r.nodes.len());
    println!("{}", verdict(&violations, checked)?);
    Ok(())
}

/// The success line, or an error listing each violation with its explanation and the fix.
fn verdict(violations: &[Violation], checked: usize) -> Result<String> {
    if violations.is_empty() {
        return Ok(format!("deps: ok ({checked} packages checked)"));
    }
    let lines: Vec<String> = violations
        .iter()
        .map(|v| format!("  {v}\n      {}", v.explanation()))
        .collect();
    bail!(
        "deps: {} forbidden dependency path(s), resolved with all features:\n{}\n\
         fix: change the Cargo.toml of the crates on each path; \
         `cargo tree -e all --all-features -i <crate>` shows every path to a crate",
        violations.len(),
        lines.join("\n")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails loudly on any error")]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    /// A throwaway workspace in a temporary folder: one member, `dp-fake-member`, and
    /// local path crates outside the workspace folder standing in for crates.io ones.
    struct FakeWorkspace {
        dir: tempfile::TempDir,
    }

    /// One fake crate: name, dependencies (name, features enabled on it), features
    /// (name, what each enables).
    struct FakeCrate<'a> {
        name: &'a str,
        deps: &'a [(&'a str, &'a [&'a str])],
        features: &'a [(&'a str, &'a [&'a str])],
    }

    impl FakeWorkspace {
        /// Writes the workspace: `member_deps` for the member, then each of `crates`.
        fn new(member_deps: &[(&str, &[&str])], crates: &[FakeCrate<'_>]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ws = dir.path().join("ws");
            std::fs::create_dir_all(&ws).unwrap();
            std::fs::write(
                ws.join("Cargo.toml"),
                "[workspace]\nresolver = \"3\"\nmembers = [\"dp-fake-member\"]\n",
            )
            .unwrap();
            let member = FakeCrate {
                name: "dp-fake-member",
                deps: member_deps,
                features: &[],
            };
            write_crate(&ws.join("dp-fake-member"), &member);
            // Outside the workspace folder, so they are dependencies and not members.
            for krate in crates {
                write_crate(&dir.path().join("vendor").join(krate.name), krate);
            }
            Self { dir }
        }

        /// Real `cargo metadata` output for the workspace, all features enabled.
        fn metadata(&self) -> Metadata {
            metadata(&self.dir.path().join("ws"), &["--offline"]).unwrap()
        }
    }

    /// Writes a crate with an empty library at `dir`. Dependencies are the crates of the
    /// same name under `<tempdir>/vendor`.
    fn write_crate(dir: &Path, krate: &FakeCrate<'_>) {
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "").unwrap();
        let vendor = dir.parent().unwrap().parent().unwrap().join("vendor");
        let mut manifest = format!(
            "[package]\nname = \"{}\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[dependencies]\n",
            krate.name
        );
        for (dep, features) in krate.deps {
            writeln!(
                manifest,
                "{dep} = {{ path = {:?}, features = {features:?} }}",
                vendor.join(dep).display().to_string()
            )
            .unwrap();
        }
        manifest.push_str("\n[features]\n");
        for (feature, enables) in krate.features {
            writeln!(manifest, "{feature} = {enables:?}").unwrap();
        }
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    }

    /// A crate with no dependencies and no features.
    const fn leaf(name: &str) -> FakeCrate<'_> {
        FakeCrate {
            name,
            deps: &[],
            features: &[],
        }
    }

    /// Violations as `(path, rule)` strings, for readable assertions.
    fn described(violations: &[Violation]) -> Vec<(String, Rule)> {
        violations
            .iter()
            .map(|v| (v.to_string(), v.rule.clone()))
            .collect()
    }

    #[test]
    fn every_forbidden_path_is_found_and_triton_may_use_http() {
        let ws = FakeWorkspace::new(
            &[
                ("reqwest", &[]),
                ("ureq", &[]),
                ("ort", &["download-binaries"]),
                ("dp-fake-provider", &[]),
                ("dp-provider-triton", &[]),
            ],
            &[
                leaf("reqwest"),
                leaf("ureq"),
                leaf("hyper"),
                leaf("hf-hub"),
                FakeCrate {
                    name: "ort",
                    deps: &[("ort-sys", &[])],
                    features: &[
                        ("download-binaries", &["ort-sys/download-binaries"]),
                        ("copy-dylibs", &[]),
                    ],
                },
                FakeCrate {
                    name: "ort-sys",
                    deps: &[],
                    features: &[("download-binaries", &[])],
                },
                FakeCrate {
                    name: "dp-fake-provider",
                    deps: &[("tokenizers", &["http"])],
                    features: &[],
                },
                FakeCrate {
                    name: "tokenizers",
                    deps: &[],
                    features: &[("http", &[]), ("onig", &[])],
                },
                // HTTP clients are fine behind the Triton provider, downloads are not.
                FakeCrate {
                    name: "dp-provider-triton",
                    deps: &[("hyper", &[]), ("ureq", &[]), ("hf-hub", &[])],
                    features: &[],
                },
            ],
        );
        let violations = check(&ws.metadata()).unwrap();
        let features =
            |f: &[&str]| Rule::ForbiddenFeatures(f.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            described(&violations),
            [
                (
                    "dp-fake-member -> dp-fake-provider -> tokenizers [features: http]".into(),
                    features(&["http"])
                ),
                (
                    "dp-fake-member -> dp-provider-triton -> hf-hub".into(),
                    Rule::ForbiddenCrate
                ),
                (
                    "dp-fake-member -> ort [features: download-binaries]".into(),
                    features(&["download-binaries"])
                ),
                (
                    "dp-fake-member -> ort -> ort-sys [features: download-binaries]".into(),
                    features(&["download-binaries"])
                ),
                ("dp-fake-member -> reqwest".into(), Rule::ForbiddenCrate),
                ("dp-fake-member -> ureq".into(), Rule::HttpClient),
            ]
        );
        // `hyper` is reached only through dp-provider-triton, and `reqwest` is reported once.
        assert!(violations.iter().all(|v| v.offender() != "hyper"));
        // The explanation names the fix.
        let ureq = violations.iter().find(|v| v.offender() == "ureq").unwrap();
        assert!(ureq.explanation().contains("dp-provider-triton"));
    }

    #[test]
    fn a_clean_workspace_passes() {
        let ws = FakeWorkspace::new(
            &[
                ("ort", &[]),
                ("tokenizers", &["onig"]),
                ("dp-provider-triton", &[]),
            ],
            &[
                leaf("ureq"),
                FakeCrate {
                    name: "ort",
                    deps: &[],
                    features: &[("download-binaries", &[]), ("copy-dylibs", &[])],
                },
                FakeCrate {
                    name: "tokenizers",
                    deps: &[],
                    features: &[("http", &[]), ("onig", &[])],
                },
                FakeCrate {
                    name: "dp-provider-triton",
                    deps: &[("ureq", &[])],
                    features: &[],
                },
            ],
        );
        assert_eq!(check(&ws.metadata()).unwrap(), []);
    }

    #[test]
    fn the_verdict_lists_each_path_with_its_fix() {
        assert_eq!(verdict(&[], 12).unwrap(), "deps: ok (12 packages checked)");
        let violation = Violation {
            path: vec![
                "dp-manager".into(),
                "dp-provider-candle".into(),
                "tokenizers".into(),
            ],
            rule: Rule::ForbiddenFeatures(vec!["http".into()]),
        };
        let message = verdict(&[violation], 12).unwrap_err().to_string();
        assert!(
            message.contains("dp-manager -> dp-provider-candle -> tokenizers [features: http]"),
            "{message}"
        );
        assert!(
            message.contains("feature(s) `http` of `tokenizers`"),
            "{message}"
        );
        assert!(message.contains("fix: "), "{message}");
    }

    #[test]
    fn metadata_without_a_resolve_is_an_error() {
        let ws = FakeWorkspace::new(&[], &[]);
        let mut metadata = ws.metadata();
        metadata.resolve = None;
        assert!(check(&metadata).is_err());
    }

    #[test]
    fn the_real_workspace_passes() {
        let root = crate::workspace_root().unwrap();
        let violations = check(&metadata(&root, &[]).unwrap()).unwrap();
        assert!(violations.is_empty(), "{violations:#?}");
    }
}
