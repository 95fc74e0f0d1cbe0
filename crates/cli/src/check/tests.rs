#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use super::*;

const CATALOG: &str = r#"
[[topic]]
name = "raw.a"
key_field = "id"
"#;

const V1: &str = r#"{"type":"record","name":"A","fields":[
    {"name":"id","type":"string"}]}"#;

/// V1 plus a field with a default: BACKWARD compatible.
const V2_COMPATIBLE: &str = r#"{"type":"record","name":"A","fields":[
    {"name":"id","type":"string"},
    {"name":"country","type":"string","default":""}]}"#;

/// V1 plus a field without a default: a new reader cannot read old records.
const V2_BREAKING: &str = r#"{"type":"record","name":"A","fields":[
    {"name":"id","type":"string"},
    {"name":"country","type":"string"}]}"#;

/// A git repository with `schemas/` holding the catalog and `raw.a-value.avsc` (V1), committed.
struct Repo {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Repo {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let repo = Self { _dir: dir, root };
        std::fs::create_dir(repo.schemas()).unwrap();
        repo.git(&["init", "-q"]);
        repo.write("catalog.toml", CATALOG);
        repo.write("raw.a-value.avsc", V1);
        repo.commit("v1");
        repo
    }

    fn schemas(&self) -> PathBuf {
        self.root.join("schemas")
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.schemas().join(file), text).unwrap();
    }

    fn git(&self, args: &[&str]) {
        let status = Command::new("git")
            .current_dir(&self.root)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }

    /// Runs the check against `rev`: (all passed, output).
    fn check(&self, rev: &str) -> Result<(bool, String)> {
        let catalog = Catalog::load(&self.schemas()).unwrap();
        let mut out = Vec::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let passed = rt.block_on(run(&catalog, &Against::Git(rev.to_string()), &mut out))?;
        Ok((passed, String::from_utf8(out).unwrap()))
    }
}

#[test]
fn unchanged_schema_is_ok() {
    let repo = Repo::new();
    let (passed, out) = repo.check("HEAD").unwrap();
    assert!(passed, "{out}");
    assert_eq!(out, "ok raw.a-value (BACKWARD against HEAD)\n");
}

#[test]
fn compatible_change_is_ok() {
    let repo = Repo::new();
    repo.write("raw.a-value.avsc", V2_COMPATIBLE);
    let (passed, out) = repo.check("HEAD").unwrap();
    assert!(passed, "{out}");
    assert_eq!(out, "ok raw.a-value (BACKWARD against HEAD)\n");
}

#[test]
fn field_without_default_fails_naming_the_file_and_field() {
    let repo = Repo::new();
    repo.write("raw.a-value.avsc", V2_BREAKING);
    let (passed, out) = repo.check("HEAD").unwrap();
    assert!(!passed, "{out}");
    let file = repo.schemas().join("raw.a-value.avsc");
    assert!(
        out.starts_with(&format!("FAIL {}: ", file.display())),
        "{out}"
    );
    assert!(out.contains("not BACKWARD compatible with HEAD"), "{out}");
    assert!(out.contains("country"), "{out}");
    assert!(out.contains("READER_FIELD_MISSING_DEFAULT_VALUE"), "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn breaking_change_committed_is_caught_against_an_older_revision() {
    let repo = Repo::new();
    repo.write("raw.a-value.avsc", V2_BREAKING);
    repo.commit("v2");
    assert!(repo.check("HEAD").unwrap().0);
    let (passed, out) = repo.check("HEAD~1").unwrap();
    assert!(!passed, "{out}");
    assert!(out.contains("HEAD~1") && out.contains("country"), "{out}");
}

#[test]
fn the_level_comes_from_the_catalog() {
    let repo = Repo::new();
    repo.write(
        "catalog.toml",
        &CATALOG.replace("key_field", "compatibility = \"NONE\"\nkey_field"),
    );
    repo.write("raw.a-value.avsc", V2_BREAKING);
    let (passed, out) = repo.check("HEAD").unwrap();
    assert!(passed, "{out}");
    assert_eq!(out, "ok raw.a-value (NONE against HEAD)\n");
}

#[test]
fn new_subject_is_new() {
    let repo = Repo::new();
    repo.write(
        "catalog.toml",
        &format!("{CATALOG}\n[[topic]]\nname = \"raw.b\"\n"),
    );
    repo.write("raw.b-value.avsc", V1);
    repo.write("raw.b-key.avsc", r#""string""#);
    let (passed, out) = repo.check("HEAD").unwrap();
    assert!(passed, "{out}");
    assert_eq!(
        out,
        "ok raw.a-value (BACKWARD against HEAD)\n\
         new raw.b-value (not in HEAD)\n\
         new raw.b-key (not in HEAD)\n"
    );
}

#[test]
fn key_subject_is_checked_too() {
    let repo = Repo::new();
    repo.write("raw.a-key.avsc", r#""string""#);
    repo.commit("key");
    repo.write("raw.a-key.avsc", r#""int""#);
    let (passed, out) = repo.check("HEAD").unwrap();
    assert!(!passed, "{out}");
    let file = repo.schemas().join("raw.a-key.avsc");
    assert!(
        out.contains(&format!(
            "FAIL {}: raw.a-key is not BACKWARD",
            file.display()
        )),
        "{out}"
    );
}

#[test]
fn unknown_revision_is_a_usage_error() {
    let repo = Repo::new();
    let e = repo.check("no-such-branch").unwrap_err();
    assert!(e.chain().any(|c| c.is::<crate::Usage>()), "{e:#}");
    assert!(format!("{e:#}").contains("no-such-branch"), "{e:#}");
}

#[test]
fn outside_a_repository_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("catalog.toml"), CATALOG).unwrap();
    std::fs::write(dir.path().join("raw.a-value.avsc"), V1).unwrap();
    let catalog = Catalog::load(dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let e = rt
        .block_on(run(&catalog, &Against::Git("HEAD".into()), &mut Vec::new()))
        .unwrap_err();
    assert!(e.chain().any(|c| c.is::<crate::Usage>()), "{e:#}");
}
