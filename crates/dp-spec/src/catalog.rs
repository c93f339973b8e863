//! A catalog: the directory tree `specs/catalog/<role>/<model_name>.yaml|.json`.
//!
//! Loading validates every file, then the catalog as a whole: names and aliases are
//! unique, each file sits under one of its model's roles and is named after the model.
//! Entries keep a stable order (by path, byte order), which role resolution relies on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::diagnostic::{Diagnostic, sort_diagnostics, validate_document};
use crate::document::{LocationIndex, ParseLimits, SourceDocument, SourceFormat};
use crate::error::ErrorCode;
use crate::model_spec::ModelSpec;

/// One validated spec and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The validated spec.
    pub spec: ModelSpec,
    /// The parsed file (kept for layering profiles and locating later diagnostics).
    pub document: SourceDocument,
    /// The role directory the file sits in.
    pub role_dir: String,
}

/// A validated set of specs, addressable by name or alias.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    root: PathBuf,
    entries: Vec<CatalogEntry>,
    /// Name or alias → index into `entries`.
    index: HashMap<String, usize>,
}

impl Catalog {
    /// Loads and validates every spec under `root`.
    ///
    /// # Errors
    /// Every problem found, in every file, sorted by file and position.
    pub fn load(root: &Path) -> Result<Self, Vec<Diagnostic>> {
        Self::load_with(root, ParseLimits::default())
    }

    /// [`Catalog::load`] with explicit parse limits.
    ///
    /// # Errors
    /// Every problem found, in every file, sorted by file and position.
    pub fn load_with(root: &Path, limits: ParseLimits) -> Result<Self, Vec<Diagnostic>> {
        let mut diagnostics = Vec::new();
        let mut files = Vec::new();
        if !root.is_dir() {
            return Err(vec![Diagnostic {
                file: root.to_owned(),
                pointer: String::new(),
                line: None,
                column: None,
                error_code: ErrorCode::InvalidSpec,
                message: "catalog directory not found; pass --catalog DIR or set DP_CATALOG".into(),
            }]);
        }
        let walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .sort_by(|a, b| a.file_name().cmp(b.file_name()));
        for entry in walker {
            let entry = match entry {
                Ok(entry) => entry,
                Err(err) => {
                    diagnostics.push(whole_file(
                        err.path().unwrap_or(root),
                        format!("cannot read catalog entry: {err}"),
                    ));
                    continue;
                }
            };
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if entry.depth() == 0 || hidden && entry.file_type().is_dir() {
                continue;
            }
            if SourceFormat::from_path(path).is_none() || hidden {
                continue;
            }
            if entry.path_is_symlink() || !entry.file_type().is_file() {
                diagnostics.push(whole_file(
                    path,
                    "spec files must be regular files; symbolic links are not followed".into(),
                ));
                continue;
            }
            let relative = path.strip_prefix(root).unwrap_or(path);
            let mut components = relative.components();
            let role_dir = match (components.next(), components.next()) {
                (Some(first), Some(_)) => first.as_os_str().to_string_lossy().into_owned(),
                _ => {
                    diagnostics.push(whole_file(
                        path,
                        "spec files live in a role directory: <catalog>/<role>/<model_name>.yaml"
                            .into(),
                    ));
                    continue;
                }
            };
            files.push((path.to_owned(), role_dir));
        }
        // Files are independent until names are indexed: parse and validate them in
        // parallel; `collect` keeps the walk's order, which the catalog order relies on.
        let checked: Vec<Result<CatalogEntry, Vec<Diagnostic>>> = files
            .into_par_iter()
            .map(|(path, role_dir)| {
                let doc = SourceDocument::read(&path, limits).map_err(|e| vec![e.into()])?;
                let spec = validate_document(&doc)?;
                let placement = check_placement(&doc, &spec, &role_dir);
                if !placement.is_empty() {
                    return Err(placement);
                }
                Ok(CatalogEntry {
                    spec,
                    document: doc,
                    role_dir,
                })
            })
            .collect();
        let mut catalog = Self {
            root: root.to_owned(),
            ..Self::default()
        };
        for result in checked {
            match result {
                Ok(entry) => catalog.entries.push(entry),
                Err(found) => diagnostics.extend(found),
            }
        }
        diagnostics.extend(catalog.build_index());
        if diagnostics.is_empty() {
            Ok(catalog)
        } else {
            sort_diagnostics(&mut diagnostics);
            Err(diagnostics)
        }
    }

    /// Builds a catalog from already validated entries (e.g. after layering profiles).
    ///
    /// # Errors
    /// Name and alias clashes.
    pub fn from_entries(root: &Path, entries: Vec<CatalogEntry>) -> Result<Self, Vec<Diagnostic>> {
        let mut catalog = Self {
            root: root.to_owned(),
            entries,
            index: HashMap::new(),
        };
        let diagnostics = catalog.build_index();
        if diagnostics.is_empty() {
            Ok(catalog)
        } else {
            Err(diagnostics)
        }
    }

    /// Registers names, then aliases; a later file that reuses a name or alias is rejected.
    fn build_index(&mut self) -> Vec<Diagnostic> {
        let mut diagnostics = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut kept = Vec::with_capacity(self.entries.len());
        for entry in std::mem::take(&mut self.entries) {
            let doc = &entry.document;
            let name = &entry.spec.model_name;
            if let Some(&other) = index.get(name) {
                let other_file: &CatalogEntry = &kept[other];
                diagnostics.push(Diagnostic::located(
                    &doc.path,
                    &doc.locations,
                    "/model_name",
                    ErrorCode::InvalidSpec,
                    format!(
                        "model_name {name:?} is already used by {}; model names and aliases must be unique",
                        other_file.document.path.display()
                    ),
                ));
                continue;
            }
            index.insert(name.clone(), kept.len());
            kept.push(entry);
        }
        // Aliases after all names, so an alias never shadows a name whatever the file order.
        let mut alias_index: HashMap<String, usize> = HashMap::new();
        for (i, entry) in kept.iter().enumerate() {
            for (j, alias) in entry.spec.aliases.iter().enumerate() {
                let clash = index
                    .get(alias)
                    .or_else(|| alias_index.get(alias))
                    .filter(|&&other| other != i);
                if let Some(&other) = clash {
                    diagnostics.push(Diagnostic::located(
                        &entry.document.path,
                        &entry.document.locations,
                        format!("/aliases/{j}"),
                        ErrorCode::InvalidSpec,
                        format!(
                            "alias {alias:?} clashes with model {:?} ({}); model names and aliases must be unique",
                            kept[other].spec.model_name,
                            kept[other].document.path.display()
                        ),
                    ));
                } else {
                    alias_index.insert(alias.clone(), i);
                }
            }
        }
        index.extend(alias_index);
        self.entries = kept;
        self.index = index;
        diagnostics
    }

    /// The directory the catalog was loaded from.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every entry, in the catalog's stable order.
    #[must_use]
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The entry a name or alias designates.
    #[must_use]
    pub fn get(&self, name_or_alias: &str) -> Option<&CatalogEntry> {
        self.index.get(name_or_alias).map(|&i| &self.entries[i])
    }

    /// Number of models.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the catalog has no model.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries serving `role`, in catalog order.
    pub fn with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a CatalogEntry> + 'a {
        self.entries.iter().filter(move |e| e.spec.has_role(role))
    }
}

fn whole_file(path: &Path, message: String) -> Diagnostic {
    Diagnostic::located(
        path,
        &LocationIndex::default(),
        "",
        ErrorCode::InvalidSpec,
        message,
    )
}

/// A spec file must be named after its model and sit under one of its roles, so that a
/// reader of the tree finds every model where its name and role say.
fn check_placement(doc: &SourceDocument, spec: &ModelSpec, role_dir: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let stem = doc.path.file_stem().map(|s| s.to_string_lossy());
    if stem.as_deref() != Some(spec.model_name.as_str()) {
        out.push(Diagnostic::located(
            &doc.path,
            &doc.locations,
            "/model_name",
            ErrorCode::InvalidSpec,
            format!(
                "file is named {:?} but declares model_name {:?}; name the file {}.{}",
                stem.unwrap_or_default(),
                spec.model_name,
                spec.model_name,
                doc.path
                    .extension()
                    .map(|e| e.to_string_lossy())
                    .unwrap_or_default()
            ),
        ));
    }
    if !spec.has_role(role_dir) {
        let pointer = if spec.role.is_some() {
            "/role"
        } else {
            "/roles"
        };
        out.push(Diagnostic::located(
            &doc.path,
            &doc.locations,
            pointer,
            ErrorCode::InvalidSpec,
            format!(
                "file sits in role directory {role_dir:?}, which is not one of the model's roles ({}); \
                 move it or add the role",
                spec.all_roles().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    out
}
/// What [`validate_path`] found valid: model specs and profiles.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ValidationTally {
    /// Valid model specs (a catalog directory counts each of its models).
    pub models: usize,
    /// Valid profile files.
    pub profiles: usize,
}

/// Validates one path as `dp validate` reads it: a directory is a catalog, a file with a
/// top-level `profile` key a profile, any other file a spec. What is valid is counted in
/// `tally`; the problems are appended to `diagnostics` (unsorted).
pub fn validate_path(
    path: &std::path::Path,
    tally: &mut ValidationTally,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if path.is_dir() {
        match Catalog::load(path) {
            Ok(catalog) => tally.models += catalog.len(),
            Err(found) => diagnostics.extend(found),
        }
        return;
    }
    let doc = match crate::SourceDocument::read(path, crate::ParseLimits::default()) {
        Ok(doc) => doc,
        Err(err) => {
            diagnostics.push(err.into());
            return;
        }
    };
    // A profile is recognised by its top-level `profile` key; anything else is a spec.
    if doc.value.get("profile").is_some() {
        match crate::Layer::from_profile_document(&doc) {
            Ok(_) => tally.profiles += 1,
            Err(found) => diagnostics.extend(found),
        }
    } else {
        match crate::validate_document(&doc) {
            Ok(_) => tally.models += 1,
            Err(found) => diagnostics.extend(found),
        }
    }
}
