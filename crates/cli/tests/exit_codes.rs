//! The command's exit codes and messages for the cases that need no broker or registry:
//! 0 success, 1 a failed check, 2 bad usage, configuration or catalog.

use std::path::Path;
use std::process::{Command, Output};

const CATALOG: &str = "[[topic]]\nname = \"raw.a\"\n";
const V1: &str = r#"{"type":"record","name":"A","fields":[{"name":"id","type":"string"}]}"#;
const BREAKING: &str = r#"{"type":"record","name":"A","fields":[
    {"name":"id","type":"string"},{"name":"country","type":"string"}]}"#;

fn tributary(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .current_dir(dir)
        .args(args)
        .env_remove("TRIBUTARY_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("run tributary: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("git: {e}"));
    assert!(status.success(), "git {args:?}");
}

/// A repository with `schemas/` committed.
fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let schemas = dir.path().join("schemas");
    std::fs::create_dir(&schemas).unwrap_or_else(|e| panic!("mkdir: {e}"));
    write(&schemas.join("catalog.toml"), CATALOG);
    write(&schemas.join("raw.a-value.avsc"), V1);
    git(dir.path(), &["init", "-q"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "v1"]);
    dir
}

#[test]
fn check_against_git_passes_then_fails_with_exit_code_1() {
    let repo = repo();
    let ok = tributary(repo.path(), &["schemas", "check", "--against-git", "HEAD"]);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(text(&ok.stdout), "ok raw.a-value (BACKWARD against HEAD)\n");

    write(&repo.path().join("schemas/raw.a-value.avsc"), BREAKING);
    let failed = tributary(repo.path(), &["schemas", "check", "--against-git", "HEAD"]);
    assert_eq!(failed.status.code(), Some(1), "{failed:?}");
    let out = text(&failed.stdout);
    assert!(out.starts_with("FAIL schemas/raw.a-value.avsc: "), "{out}");
    assert!(out.contains("country"), "{out}");
}

#[test]
fn broken_catalog_exits_with_2_naming_the_file() {
    let repo = repo();
    write(&repo.path().join("schemas/raw.a-value.avsc"), "{not json");
    let run = tributary(repo.path(), &["schemas", "check", "--against-git", "HEAD"]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    let err = text(&run.stderr);
    assert!(err.contains("schemas/raw.a-value.avsc"), "{err}");
    assert!(run.stdout.is_empty());
}

#[test]
fn unknown_revision_exits_with_2() {
    let repo = repo();
    let run = tributary(repo.path(), &["schemas", "check", "--against-git", "nope"]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(text(&run.stderr).contains("nope"));
}

#[test]
fn bad_config_file_exits_with_2_naming_it() {
    let repo = repo();
    let missing = tributary(
        repo.path(),
        &["--config", "missing.toml", "topics", "apply"],
    );
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(text(&missing.stderr).contains("missing.toml"));

    write(&repo.path().join("t.toml"), "[kafka]\nbootstrap = \"x\"\n");
    let unknown = tributary(repo.path(), &["--config", "t.toml", "topics", "apply"]);
    assert_eq!(unknown.status.code(), Some(2), "{unknown:?}");
    assert!(text(&unknown.stderr).contains("bootstrap"), "{unknown:?}");
}

#[test]
fn bad_usage_exits_with_2() {
    let repo = repo();
    let run = tributary(repo.path(), &["topics", "remove"]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
}
