//! `tributary schemas check`: every subject's local schema against its previous versions, under
//! the topic's compatibility level from the catalog (so the verdict does not depend on the
//! registry's settings). The previous versions come from the registry, or with `--against-git`
//! from a git revision of the schemas folder, which needs no registry (a CI gate on a branch).

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use apache_avro::Schema;
use tributary_core::schema::catalog::{Catalog, Compatibility};
use tributary_core::schema::compat;
use tributary_core::schema::registry::RegistryClient;

use crate::subjects::{self, LocalSubject};
use crate::usage;

/// Where the previous versions of each subject come from.
#[derive(Debug)]
pub(crate) enum Against {
    /// The registry: the latest version, or every version for the `_TRANSITIVE` levels.
    Registry(RegistryClient),
    /// The schema files at a git revision (`git show REV:<file>`).
    Git(String),
}

/// The previous versions a subject is checked against.
#[derive(Debug)]
struct Previous {
    /// What they are, for the output: `version 3`, `versions 1-3`, `HEAD~1`.
    label: String,
    /// The schemas, oldest first.
    schemas: Vec<Schema>,
}

/// What was found for a subject.
#[derive(Debug)]
enum Lookup {
    /// No previous version: a new subject.
    New,
    /// The previous versions.
    Found(Previous),
    /// A previous version exists but does not parse (the reason).
    Unreadable(String),
}

/// Checks every subject, printing one line per subject to `out`. Returns whether all passed.
/// Errors are those that prevent checking: the registry unreachable or answering an error, git
/// missing, not a repository or a bad revision (the last three are usage errors).
pub(crate) async fn run(catalog: &Catalog, against: &Against, out: &mut dyn Write) -> Result<bool> {
    if let Against::Git(rev) = against {
        verify_revision(&catalog.dir, rev)?;
    }
    let mut all_passed = true;
    for subject in subjects::local_subjects(catalog)? {
        let lookup = match against {
            Against::Registry(client) => from_registry(client, &subject).await?,
            Against::Git(rev) => from_git(&catalog.dir, rev, &subject)?,
        };
        let line = match lookup {
            Lookup::New => {
                let place = match against {
                    Against::Registry(_) => "the registry",
                    Against::Git(rev) => rev,
                };
                format!("new {} (not in {place})", subject.subject)
            }
            Lookup::Found(previous) => {
                let level = subject.level.as_str();
                let reasons = compat::check(subject.level, &subject.schema, &previous.schemas);
                if reasons.is_empty() {
                    format!(
                        "ok {} ({level} against {})",
                        subject.subject, previous.label
                    )
                } else {
                    all_passed = false;
                    format!(
                        "FAIL {}: {} is not {level} compatible with {}: {}",
                        subject.path.display(),
                        subject.subject,
                        previous.label,
                        reasons.join("; ")
                    )
                }
            }
            Lookup::Unreadable(why) => {
                all_passed = false;
                format!("FAIL {}: {why}", subject.path.display())
            }
        };
        writeln!(out, "{line}")?;
    }
    Ok(all_passed)
}

fn transitive(level: Compatibility) -> bool {
    matches!(
        level,
        Compatibility::BackwardTransitive
            | Compatibility::ForwardTransitive
            | Compatibility::FullTransitive
    )
}

async fn from_registry(client: &RegistryClient, subject: &LocalSubject) -> Result<Lookup> {
    let name = &subject.subject;
    let versions = if transitive(subject.level) {
        subjects::versions(client, name).await
    } else {
        subjects::latest(client, name)
            .await
            .map(|v| v.into_iter().collect())
    }
    .with_context(|| format!("fetching the versions of {name} from the registry"))?;
    let (Some(first), Some(last)) = (versions.first(), versions.last()) else {
        return Ok(Lookup::New);
    };
    let label = if versions.len() == 1 {
        format!("version {}", last.version)
    } else {
        format!("versions {}-{}", first.version, last.version)
    };
    let mut schemas = Vec::with_capacity(versions.len());
    for v in &versions {
        match tributary_core::schema::parse_avro_schema(&v.schema) {
            Ok(schema) => schemas.push(schema),
            Err(e) => {
                return Ok(Lookup::Unreadable(format!(
                    "version {} of {name} in the registry does not parse: {e}",
                    v.version
                )));
            }
        }
    }
    Ok(Lookup::Found(Previous { label, schemas }))
}

fn from_git(dir: &Path, rev: &str, subject: &LocalSubject) -> Result<Lookup> {
    // `REV:./file` is resolved from git's working directory, the schemas folder.
    let object = format!("{rev}:./{}", subject.file_name);
    if !git(dir, &["cat-file", "-e", &object])?.status.success() {
        return Ok(Lookup::New);
    }
    let shown = git(dir, &["show", &object])?;
    if !shown.status.success() {
        bail!(
            "git show {object} failed: {}",
            String::from_utf8_lossy(&shown.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&shown.stdout);
    Ok(match tributary_core::schema::parse_avro_schema(&text) {
        Ok(schema) => Lookup::Found(Previous {
            label: rev.to_string(),
            schemas: vec![schema],
        }),
        Err(e) => Lookup::Unreadable(format!("the version at {rev} does not parse: {e}")),
    })
}

/// Fails with a usage error when `dir` is not in a git repository or `rev` names no commit.
fn verify_revision(dir: &Path, rev: &str) -> Result<()> {
    let output = git(
        dir,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let why = if stderr.trim().is_empty() {
        format!("unknown revision {rev}")
    } else {
        stderr.trim().to_string()
    };
    Err(usage(format!(
        "--against-git {rev}: {why} (git run in {})",
        dir.display()
    )))
}

fn git(dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| usage(format!("cannot run git in {}: {e}", dir.display())))
}

#[cfg(test)]
mod tests;
