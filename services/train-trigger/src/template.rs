//! Kubernetes Job templates: read and parsed once at start-up into a tree, filled in for each
//! request only inside string values, and checked before they are sent.
//!
//! A template is JSON (which YAML tools read too). A string that is exactly `{{name}}` becomes
//! the request's value with its JSON type (a number stays a number); a string with `{{name}}`
//! among other text gets the value as text, within that one string. Values never become keys,
//! list items or documents, whatever characters they hold, and are not expanded again.

use std::path::{Component, Path, PathBuf};

use serde_json::{Map, Value};

use crate::actions::PendingAction;

/// The values a template may name, as `{{name}}`.
pub(crate) const PLACEHOLDERS: [&str; 6] = [
    "request_id",
    "model",
    "policy",
    "from_time",
    "to_time",
    "archive_prefix",
];

/// Longest Job name: Kubernetes copies it into the `job-name` label of the Job's pods.
const MAX_NAME: usize = 63;

/// A template refused at start-up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TemplateError {
    #[error("job template {template}: not a relative path inside the schemas folder")]
    Path { template: String },
    #[error("job template {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "job template {}: not valid JSON (templates are JSON; YAML-only syntax is not read): {source}",
        .path.display()
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("job template {}: at {at}: {problem}", .path.display())]
    Placeholder {
        path: PathBuf,
        at: String,
        problem: String,
    },
    #[error("job template {}: {problem}", .path.display())]
    NotAJob { path: PathBuf, problem: String },
}

/// A request's manifest that cannot be sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RenderError {
    #[error("job template {template}: the request has no value for {{{{{key}}}}}")]
    Missing { template: String, key: &'static str },
    #[error("job template {template}: the filled-in manifest is not a valid Job: {problem}")]
    Invalid { template: String, problem: String },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JobTemplate {
    path: PathBuf,
    root: Node,
}

/// A template's tree, its strings split at their placeholders.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A scalar without a placeholder.
    Literal(Value),
    /// A string that is exactly one placeholder: the value, with its JSON type.
    Whole(&'static str),
    /// A string with placeholders among text.
    Text(Vec<Piece>),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Value(&'static str),
}

impl JobTemplate {
    /// Reads and parses `template`, a path relative to the `schemas` folder.
    pub(crate) fn load(schemas: &Path, template: &str) -> Result<Self, TemplateError> {
        let relative = Path::new(template);
        if template.is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(TemplateError::Path {
                template: template.to_string(),
            });
        }
        let path = schemas.join(relative);
        let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses a template's text; `path` names it in errors.
    pub(crate) fn parse(path: PathBuf, text: &str) -> Result<Self, TemplateError> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(source) => return Err(TemplateError::Parse { path, source }),
        };
        let root = match compile(value, &mut String::new()) {
            Ok(root) => root,
            Err((at, problem)) => {
                return Err(TemplateError::Placeholder {
                    path,
                    at: if at.is_empty() { "/".to_string() } else { at },
                    problem,
                });
            }
        };
        if let Err(problem) = check_shape(&root) {
            return Err(TemplateError::NotAJob { path, problem });
        }
        Ok(Self { path, root })
    }

    /// The Job manifest for a request: the tree with the request's values filled in, checked.
    pub(crate) fn render(&self, action: &PendingAction) -> Result<Value, RenderError> {
        let mut values = Vec::with_capacity(PLACEHOLDERS.len());
        for key in PLACEHOLDERS {
            let value = match key {
                "request_id" => Value::String(action.request_id.clone()),
                "model" | "policy" => action.request[key].clone(),
                _ => action.request["data"][key].clone(),
            };
            if value.is_null() {
                return Err(RenderError::Missing {
                    template: self.path.display().to_string(),
                    key,
                });
            }
            values.push((key, value));
        }
        let manifest = fill(&self.root, &values);
        check_job(&manifest).map_err(|problem| RenderError::Invalid {
            template: self.path.display().to_string(),
            problem,
        })?;
        Ok(manifest)
    }
}

/// The tree of `value`; `at` is its JSON pointer. Errors: where, and what.
fn compile(value: Value, at: &mut String) -> Result<Node, (String, String)> {
    Ok(match value {
        Value::String(s) => {
            let pieces = split(&s).map_err(|e| (at.clone(), e))?;
            match pieces.as_slice() {
                [Piece::Value(key)] => Node::Whole(key),
                _ if pieces.iter().all(|p| matches!(p, Piece::Text(_))) => {
                    Node::Literal(Value::String(s))
                }
                _ => Node::Text(pieces),
            }
        }
        Value::Array(items) => {
            let mut nodes = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("/{i}"));
                nodes.push(compile(item, at)?);
                at.truncate(len);
            }
            Node::Array(nodes)
        }
        Value::Object(map) => {
            let mut fields = Vec::with_capacity(map.len());
            for (key, item) in map {
                let len = at.len();
                at.push('/');
                at.push_str(&key.replace('~', "~0").replace('/', "~1"));
                if key.contains("{{") {
                    return Err((
                        at.clone(),
                        "placeholders are filled in only in string values, not in keys".to_string(),
                    ));
                }
                let node = compile(item, at)?;
                at.truncate(len);
                fields.push((key, node));
            }
            Node::Object(fields)
        }
        scalar => Node::Literal(scalar),
    })
}

/// `s` split at its placeholders; an unknown or unclosed one is an error.
fn split(s: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            return Err(format!("{{{{ without }}}} in {s:?}"));
        };
        let name = &after[..end];
        let Some(key) = PLACEHOLDERS.iter().copied().find(|k| *k == name) else {
            return Err(format!(
                "unknown placeholder {{{{{name}}}}} (known: {})",
                PLACEHOLDERS.map(|k| format!("{{{{{k}}}}}")).join(", ")
            ));
        };
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        pieces.push(Piece::Value(key));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

/// At start-up: an object, `kind: Job`, `apiVersion: batch/v1` as written (no placeholder), and
/// a string `metadata.name`.
fn check_shape(root: &Node) -> Result<(), String> {
    let Node::Object(fields) = root else {
        return Err("not a JSON object (a Job manifest)".to_string());
    };
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, n)| n);
    let literal = |name: &str, want: &str| match field(name) {
        Some(Node::Literal(Value::String(s))) if s == want => Ok(()),
        _ => Err(format!(
            "{name} must be {want:?}, written without a placeholder"
        )),
    };
    literal("kind", "Job")?;
    literal("apiVersion", "batch/v1")?;
    match field("metadata") {
        Some(Node::Object(metadata)) => match metadata.iter().find(|(k, _)| k == "name") {
            Some((_, Node::Literal(Value::String(_)) | Node::Text(_) | Node::Whole(_))) => Ok(()),
            _ => Err("metadata.name must be a string".to_string()),
        },
        _ => Err("metadata must be an object with a name".to_string()),
    }
}

/// The tree with `values` filled in.
fn fill(node: &Node, values: &[(&'static str, Value)]) -> Value {
    let value = |key: &str| {
        values
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&Value::Null, |(_, v)| v)
    };
    match node {
        Node::Literal(v) => v.clone(),
        Node::Whole(key) => match value(key) {
            v @ (Value::String(_) | Value::Number(_) | Value::Bool(_)) => v.clone(),
            // Never structure: a list or an object is its JSON text.
            other => Value::String(other.to_string()),
        },
        Node::Text(pieces) => {
            let mut out = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Value(key) => match value(key) {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Value::String(out)
        }
        Node::Array(items) => Value::Array(items.iter().map(|n| fill(n, values)).collect()),
        Node::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, n)| (k.clone(), fill(n, values)))
                .collect::<Map<String, Value>>(),
        ),
    }
}

/// Before sending: `kind: Job`, `apiVersion: batch/v1`, and a `metadata.name` that is a DNS-1123
/// subdomain of at most 63 characters.
pub(crate) fn check_job(manifest: &Value) -> Result<(), String> {
    if manifest["kind"] != "Job" {
        return Err(format!("kind is {}, not \"Job\"", manifest["kind"]));
    }
    if manifest["apiVersion"] != "batch/v1" {
        return Err(format!(
            "apiVersion is {}, not \"batch/v1\"",
            manifest["apiVersion"]
        ));
    }
    let Some(name) = manifest["metadata"]["name"].as_str() else {
        return Err("metadata.name is not a string".to_string());
    };
    if !dns1123_subdomain(name) || name.len() > MAX_NAME {
        return Err(format!(
            "metadata.name {name:?} is not a valid Job name (at most {MAX_NAME} characters: \
             lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// Lowercase alphanumeric labels of `-`, separated by `.`, each starting and ending with an
/// alphanumeric character.
fn dns1123_subdomain(name: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(&first), Some(&last)) => {
                    alnum(first) && alnum(last) && b.iter().all(|&c| alnum(c) || c == b'-')
                }
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::actions::ActionKind;

    const TEMPLATE: &str = r#"{
      "apiVersion": "batch/v1",
      "kind": "Job",
      "metadata": {
        "name": "train-{{request_id}}",
        "labels": {"tributary.io/model": "{{model}}"}
      },
      "spec": {
        "template": {
          "spec": {
            "restartPolicy": "Never",
            "containers": [{
              "name": "train",
              "image": "trainer:1",
              "args": ["--data={{archive_prefix}}", "--reason={{policy}}", "{{from_time}}"],
              "env": [{"name": "MODEL", "value": "{{model}}"}]
            }]
          }
        }
      }
    }"#;

    fn action(model: &str, policy: &str, archive_prefix: &str) -> PendingAction {
        PendingAction {
            request_id: "0b0e5d2c-6f8a-4f7e-9a37-2f4a1d3c5e6f".into(),
            kind: ActionKind::KubernetesJob,
            request: serde_json::json!({
                "model": model,
                "policy": policy,
                "data": {"archive_prefix": archive_prefix, "from_time": 1, "to_time": 2},
            }),
        }
    }

    fn parse(text: &str) -> Result<JobTemplate, TemplateError> {
        JobTemplate::parse(PathBuf::from("schemas/jobs/t.json"), text)
    }

    /// The manifest's keys and list lengths, every scalar replaced by null.
    fn shape(v: &Value) -> Value {
        match v {
            Value::Array(items) => Value::Array(items.iter().map(shape).collect()),
            Value::Object(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
            }
            _ => Value::Null,
        }
    }

    #[test]
    fn values_are_filled_in_strings_with_their_types() {
        let template = parse(TEMPLATE).unwrap();
        let out = template
            .render(&action("churn", "drift+weekly", "s3://lake/f/"))
            .unwrap();
        assert_eq!(
            out["metadata"]["name"],
            "train-0b0e5d2c-6f8a-4f7e-9a37-2f4a1d3c5e6f"
        );
        assert_eq!(out["metadata"]["labels"]["tributary.io/model"], "churn");
        let container = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["args"],
            serde_json::json!(["--data=s3://lake/f/", "--reason=drift+weekly", 1])
        );
        assert_eq!(container["env"][0]["value"], "churn");
    }

    /// Values with quotes, newlines and YAML or JSON syntax land verbatim inside the one string
    /// that named them: the manifest has exactly the template's keys and list items.
    #[test]
    fn values_cannot_inject_fields() {
        let template = parse(TEMPLATE).unwrap();
        let expected = shape(&template.render(&action("m", "p", "a")).unwrap());
        let model = "m\"\n  hostPath: /\n  - name: x\n---\nkind: Pod";
        let policy = "\", \"image\": \"evil\", \"x\": \"";
        let prefix = "a\"}], \"volumes\": [{\"hostPath\": {\"path\": \"/\"}}], \"y\": [{\"z\": \"";
        let out = template.render(&action(model, policy, prefix)).unwrap();
        assert_eq!(shape(&out), expected);
        assert_eq!(out["metadata"]["labels"]["tributary.io/model"], model);
        let container = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "trainer:1");
        assert_eq!(container["env"][0]["value"], model);
        assert_eq!(container["args"][0], format!("--data={prefix}"));
        assert_eq!(container["args"][1], format!("--reason={policy}"));
        // Sent as JSON: reading it back gives the same tree.
        let sent = serde_json::to_string(&out).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&sent).unwrap(), out);
    }

    /// A value naming a placeholder is not expanded again.
    #[test]
    fn values_are_not_expanded_twice() {
        let template = parse(TEMPLATE).unwrap();
        let out = template
            .render(&action("{{request_id}}", "{{model}}", "a"))
            .unwrap();
        assert_eq!(
            out["metadata"]["labels"]["tributary.io/model"],
            "{{request_id}}"
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["args"][1],
            "--reason={{model}}"
        );
    }

    /// A value that makes metadata.name invalid fails the render: nothing to send.
    #[test]
    fn an_invalid_job_name_fails_the_render() {
        let template = parse(&TEMPLATE.replace("train-{{request_id}}", "train-{{model}}")).unwrap();
        assert!(template.render(&action("churn", "p", "a")).is_ok());
        for model in [
            "Churn",
            "churn\"\n  hostPath: /",
            "churn_v2",
            &"x".repeat(60),
            "churn-",
        ] {
            let e = template
                .render(&action(model, "p", "a"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("metadata.name") && e.contains("t.json"), "{e}");
        }
    }

    #[test]
    fn unknown_placeholders_are_refused_at_start_up() {
        let e = parse(&TEMPLATE.replace("{{policy}}", "{{polciy}}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.json")
                && e.contains("{{polciy}}")
                && e.contains("/spec/template/spec/containers/0/args/1"),
            "{e}"
        );
        let e = parse(&TEMPLATE.replace("{{policy}}", "{{policy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("without }}"), "{e}");
        let e = parse(&TEMPLATE.replace("\"tributary.io/model\"", "\"{{model}}\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not in keys"), "{e}");
    }

    #[test]
    fn templates_that_are_not_jobs_are_refused_at_start_up() {
        for (from, to, want) in [
            ("\"Job\"", "\"Pod\"", "kind"),
            ("\"Job\"", "\"{{model}}\"", "kind"),
            ("\"batch/v1\"", "\"v1\"", "apiVersion"),
            ("\"train-{{request_id}}\"", "3", "metadata.name"),
        ] {
            let e = parse(&TEMPLATE.replacen(from, to, 1))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want) && e.contains("t.json"), "{e}");
        }
        assert!(parse("[]").is_err());
    }

    /// A YAML template (or broken JSON) is refused at start-up, naming the file and the error.
    #[test]
    fn broken_templates_are_refused_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(
            dir.path().join("jobs/t.yaml"),
            "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: train-{{request_id}}\n",
        )
        .unwrap();
        let e = JobTemplate::load(dir.path(), "jobs/t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("jobs/t.yaml") && e.contains("line 1"), "{e}");
        std::fs::write(dir.path().join("jobs/t.json"), "{\"kind\": \"Job\",").unwrap();
        let e = JobTemplate::load(dir.path(), "jobs/t.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("jobs/t.json") && e.contains("EOF"), "{e}");
        let e = JobTemplate::load(dir.path(), "jobs/missing.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("jobs/missing.json"), "{e}");
        for outside in ["../t.json", "/etc/passwd", ""] {
            let e = JobTemplate::load(dir.path(), outside)
                .unwrap_err()
                .to_string();
            assert!(e.contains("relative path"), "{e}");
        }
    }

    /// The repository's templates load, and render to valid Jobs.
    #[test]
    fn the_repository_templates_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas");
        let catalog = tributary_core::schema::catalog::Catalog::load(&dir).unwrap();
        let mut loaded = 0;
        for decl in &catalog.triggers {
            let Some(job) = &decl.kubernetes_job else {
                continue;
            };
            let template = JobTemplate::load(&dir, &job.template).unwrap_or_else(|e| panic!("{e}"));
            let out = template
                .render(&action(&decl.model, "drift+volume", "file:///lake/t/"))
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(
                out["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .contains(&decl.model)
            );
            loaded += 1;
        }
        assert!(loaded > 0);
    }

    #[test]
    fn job_names_are_dns_subdomains() {
        for ok in ["a", "train-churn-0b0e5d2c", "a.b-c", "0"] {
            assert!(dns1123_subdomain(ok), "{ok}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a..b", ".a", "a b", "é"] {
            assert!(!dns1123_subdomain(bad), "{bad}");
        }
    }
}
