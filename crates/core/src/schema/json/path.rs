//! Locations in the JSON input (`$.items[2].price`) and the errors that name them.

use serde_json::Value as Json;

/// Error converting a JSON value to Avro: `path` is like `$.items[2].price` or `$.address.city`, `$` for the root.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct JsonToAvroError {
    /// Where the bad value is, `$` for the root.
    pub path: String,
    /// What is wrong with it, e.g. `expected long, got string`.
    pub message: String,
}

pub(super) type Res<T> = Result<T, JsonToAvroError>;

/// One step down from a parent location.
#[derive(Clone, Copy)]
pub(super) enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// A location in the JSON input, as a chain of parents rendered only when an error needs it.
pub(super) struct Path<'a> {
    up: Option<(&'a Path<'a>, Seg<'a>)>,
    pub(super) depth: usize,
}

pub(super) const ROOT: Path<'static> = Path { up: None, depth: 0 };

impl<'a> Path<'a> {
    pub(super) fn child(&'a self, seg: Seg<'a>) -> Path<'a> {
        Path {
            up: Some((self, seg)),
            depth: self.depth + 1,
        }
    }

    pub(super) fn err(&self, message: impl Into<String>) -> JsonToAvroError {
        let mut segs = Vec::with_capacity(self.depth);
        let mut at = self;
        while let Some((parent, seg)) = at.up {
            segs.push(seg);
            at = parent;
        }
        let mut path = String::from("$");
        for seg in segs.iter().rev() {
            match seg {
                Seg::Index(i) => path.push_str(&format!("[{i}]")),
                Seg::Key(k) if is_identifier(k) => path.push_str(&format!(".{k}")),
                Seg::Key(k) => path.push_str(&format!("[{}]", Json::String((*k).to_owned()))),
            }
        }
        JsonToAvroError {
            path,
            message: message.into(),
        }
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(super) fn kind(json: &Json) -> &'static str {
    match json {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

pub(super) fn mismatch(path: &Path<'_>, expected: &str, json: &Json) -> JsonToAvroError {
    path.err(format!("expected {expected}, got {}", kind(json)))
}
