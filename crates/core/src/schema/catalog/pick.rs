//! Picking the declarations a service runs, by the names it was given.

use std::path::{Path, PathBuf};

use super::CATALOG_FILE;

/// Why [`pick`] found nothing to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// A name asked for is not declared.
    #[error("{what} {name} is not declared in {}", catalog.display())]
    NotDeclared {
        /// What was picked, e.g. `transform`.
        what: String,
        /// The name asked for.
        name: String,
        /// The catalog file.
        catalog: PathBuf,
    },
    /// The catalog declares none.
    #[error("no {what} to run: {} declares none", catalog.display())]
    NothingToRun {
        /// What was picked, e.g. `transform`.
        what: String,
        /// The catalog file.
        catalog: PathBuf,
    },
}

/// The declarations a service runs: those named in `only`, or all when `only` is empty. A name
/// in `only` that nothing declares, or nothing to run, is an error naming `what` (e.g.
/// "transform") and the catalog folder.
pub fn pick<'a, T>(
    declared: &'a [T],
    name_of: impl Fn(&T) -> &str,
    only: &[String],
    what: &str,
    dir: &Path,
) -> Result<Vec<&'a T>, PickError> {
    if let Some(unknown) = only
        .iter()
        .find(|n| !declared.iter().any(|d| name_of(d) == n.as_str()))
    {
        return Err(PickError::NotDeclared {
            what: what.to_string(),
            name: unknown.clone(),
            catalog: dir.join(CATALOG_FILE),
        });
    }
    let picked: Vec<&T> = declared
        .iter()
        .filter(|d| only.is_empty() || only.iter().any(|n| n == name_of(d)))
        .collect();
    if picked.is_empty() {
        return Err(PickError::NothingToRun {
            what: what.to_string(),
            catalog: dir.join(CATALOG_FILE),
        });
    }
    Ok(picked)
}
