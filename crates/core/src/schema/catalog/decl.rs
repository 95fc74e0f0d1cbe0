//! The declarations of the catalog (`[[source]]`, `[[transform]]`, ...) and why one is refused.

use std::collections::BTreeSet;

use crate::schema::features::FeatureProblem;
use crate::schema::sources::SourceProblem;
use crate::schema::transforms::{self, TransformProblem};
use crate::schema::triggers::TriggerProblem;

/// The kind of a declaration of the catalog: the name of its TOML array of tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclKind {
    /// `[[source]]`.
    Source,
    /// `[[transform]]`.
    Transform,
    /// `[[feature]]`.
    Feature,
    /// `[[trigger]]`.
    Trigger,
}

impl DeclKind {
    /// The kind as written in `catalog.toml` and in messages: `source`, `transform`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Transform => "transform",
            Self::Feature => "feature",
            Self::Trigger => "trigger",
        }
    }

    /// Checks a declaration's name: an identifier (letters, digits and `_`, not starting with a
    /// digit), not already in `seen` (where it is then added).
    pub(crate) fn check_name<'a>(
        self,
        name: &'a str,
        seen: &mut BTreeSet<&'a str>,
    ) -> Result<(), DeclError> {
        if !transforms::is_identifier(name) {
            return Err(DeclError::new(self, name, DeclProblem::InvalidName));
        }
        if !seen.insert(name) {
            return Err(DeclError::new(self, name, DeclProblem::DeclaredTwice));
        }
        Ok(())
    }

    /// Checks every declaration of this kind: its name ([`DeclKind::check_name`]), then
    /// `check`; the first error names the declaration.
    pub(crate) fn validate_each<D, P: Into<DeclProblem>>(
        self,
        decls: &[D],
        name: impl Fn(&D) -> &str,
        check: impl Fn(&D) -> Result<(), P>,
    ) -> Result<(), DeclError> {
        let mut names = BTreeSet::new();
        for d in decls {
            self.check_name(name(d), &mut names)?;
            check(d).map_err(|p| DeclError::new(self, name(d), p))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for DeclKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A declaration of the catalog (`[[source]]`, `[[transform]]`, `[[feature]]`, `[[trigger]]`)
/// that is refused: its kind, its name, and what is wrong ([`DeclError::key`] names the key at
/// fault). Displayed as `<kind> <name>: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {problem}")]
pub struct DeclError {
    /// The kind of declaration.
    pub kind: DeclKind,
    /// Its `name`, as written (possibly not a valid name: [`DeclProblem::InvalidName`]).
    pub name: String,
    /// What is wrong with it.
    pub problem: DeclProblem,
}

impl DeclError {
    /// The error of the declaration `kind` named `name`.
    pub fn new(kind: DeclKind, name: &str, problem: impl Into<DeclProblem>) -> Self {
        Self {
            kind,
            name: name.to_string(),
            problem: problem.into(),
        }
    }

    /// The key of the declaration at fault, as written in `catalog.toml` (`name`, `inputs`,
    /// `window`, `policy`, ...; for a problem in a nested table, that table's key, e.g. `rule`).
    pub fn key(&self) -> &'static str {
        self.problem.key()
    }
}

/// What is wrong with a declaration: the problems every kind shares, then each kind's own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeclProblem {
    /// The name is not letters, digits and `_`, or starts with a digit.
    #[error("the name must be letters, digits and _, not starting with a digit")]
    InvalidName,
    /// Another declaration of the same kind has the same name.
    #[error("declared twice")]
    DeclaredTwice,
    /// A problem of a `[[source]]`.
    #[error(transparent)]
    Source(#[from] SourceProblem),
    /// A problem of a `[[transform]]`.
    #[error(transparent)]
    Transform(#[from] TransformProblem),
    /// A problem of a `[[feature]]`.
    #[error(transparent)]
    Feature(#[from] FeatureProblem),
    /// A problem of a `[[trigger]]`.
    #[error(transparent)]
    Trigger(#[from] TriggerProblem),
}

impl DeclProblem {
    /// The key at fault, as written in `catalog.toml`.
    pub fn key(&self) -> &'static str {
        match self {
            Self::InvalidName | Self::DeclaredTwice => "name",
            Self::Source(p) => p.key(),
            Self::Transform(p) => p.key(),
            Self::Feature(p) => p.key(),
            Self::Trigger(p) => p.key(),
        }
    }
}
