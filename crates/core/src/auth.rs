//! Who may call the HTTP APIs: credentials, the names they cover, and how a request presents
//! one. Shared by ingest (API keys per topic), the feature lookup (API keys per view) and the
//! registry (HTTP basic, as Confluent Schema Registry, with roles per subject).
//!
//! Secrets are compared in constant time and never logged; every API denies by default (no
//! credential configured: every request is refused).

use std::fmt;

use axum::http::{HeaderMap, header};
use base64::Engine;
use serde::{Deserialize, Deserializer};

use crate::config::Secret;

/// A set of names a credential covers: each entry is a name, `"*"` for every name, or a prefix
/// followed by `*` (`"raw.*"`). Checked when the configuration is read: a `*` anywhere but at
/// the end, or an empty entry, is a configuration error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scope(Vec<Pattern>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    Prefix(String),
}

/// A name pattern [`Scope::parse`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// An empty entry.
    #[error("an empty name pattern")]
    Empty,
    /// A `*` anywhere but at the end; holds the pattern.
    #[error("name pattern {0:?}: `*` may only end a pattern (\"raw.*\", \"*\")")]
    InnerStar(String),
}

impl Scope {
    /// Parses patterns; the error names the first invalid one.
    pub fn parse<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ScopeError> {
        patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                match p.find('*') {
                    _ if p.is_empty() => Err(ScopeError::Empty),
                    None => Ok(Pattern::Exact(p.to_string())),
                    Some(at) if at == p.len() - 1 => Ok(Pattern::Prefix(p[..at].to_string())),
                    Some(_) => Err(ScopeError::InnerStar(p.to_string())),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Every name.
    pub fn all() -> Self {
        Self(vec![Pattern::Prefix(String::new())])
    }

    /// Whether `name` is covered.
    pub fn covers(&self, name: &str) -> bool {
        self.0.iter().any(|p| match p {
            Pattern::Exact(e) => e == name,
            Pattern::Prefix(prefix) => name.starts_with(prefix.as_str()),
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|p| match p {
                Pattern::Exact(e) => e.clone(),
                Pattern::Prefix(prefix) => format!("{prefix}*"),
            })
            .collect();
        f.write_str(&parts.join(", "))
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let patterns = Vec::<String>::deserialize(deserializer)?;
        Self::parse(&patterns).map_err(serde::de::Error::custom)
    }
}

/// What a request presented to prove who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// `X-API-Key: <key>` or `Authorization: Bearer <token>`.
    Key(&'a str),
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: &'a str,
        /// The password.
        password: &'a str,
    },
}

/// Why a request's credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Nothing presented.
    #[error("no credentials: send {0}")]
    Missing(&'static str),
    /// Presented, but malformed (not base64, no `:`, not UTF-8).
    #[error("malformed Authorization header")]
    Malformed,
    /// Presented, but matching no configured credential.
    #[error("unknown credentials")]
    Unknown,
}

/// The credential a request's headers carry, if any: `X-API-Key`, then `Authorization`
/// (`Bearer` or `Basic`). Basic's user and password are decoded into `scratch`, which must
/// outlive the answer.
pub fn presented<'a>(
    headers: &'a HeaderMap,
    scratch: &'a mut String,
) -> Result<Option<Presented<'a>>, AuthError> {
    if let Some(key) = headers.get("x-api-key") {
        let key = key.to_str().map_err(|_| AuthError::Malformed)?.trim();
        return Ok((!key.is_empty()).then_some(Presented::Key(key)));
    }
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| AuthError::Malformed)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok((!rest.is_empty()).then_some(Presented::Key(rest)));
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(AuthError::Malformed);
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(rest)
        .map_err(|_| AuthError::Malformed)?;
    *scratch = String::from_utf8(bytes).map_err(|_| AuthError::Malformed)?;
    let decoded: &'a String = scratch;
    let (user, password) = decoded.split_once(':').ok_or(AuthError::Malformed)?;
    Ok(Some(Presented::Basic { user, password }))
}

/// Compares secrets without leaking, through timing, how much of a guess was right.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// An API key (`X-API-Key` or `Authorization: Bearer`) and the names it covers: ingest's
/// topics, the feature lookup's views.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Name of the holder, used in logs, limits and refusals (never the secret).
    pub name: String,
    /// The key: inline, `{ file = "..." }` or `{ env = "..." }`.
    pub secret: Secret,
    /// The topics (ingest) or views (feature lookup) it may use.
    #[serde(alias = "views")]
    pub topics: Scope,
}

impl ApiKey {
    /// Whether this key may use `name`.
    pub fn allows(&self, name: &str) -> bool {
        self.topics.covers(name)
    }
}

/// Finds the API key a request carries among `keys`. The error's hint says what to send.
pub fn authenticate_key<'k>(
    keys: &'k [ApiKey],
    headers: &HeaderMap,
) -> Result<&'k ApiKey, AuthError> {
    const HINT: &str = "X-API-Key or Authorization: Bearer";
    let mut scratch = String::new();
    match presented(headers, &mut scratch)? {
        None => Err(AuthError::Missing(HINT)),
        Some(Presented::Basic { .. }) => Err(AuthError::Missing(HINT)),
        Some(Presented::Key(key)) => {
            // Every key is compared, so the time taken does not say which one matched.
            let mut found = None;
            for k in keys {
                if constant_time_eq(k.secret.expose(), key) && found.is_none() {
                    found = Some(k);
                }
            }
            found.ok_or(AuthError::Unknown)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn scopes_cover_names_prefixes_and_everything() {
        let scope = Scope::parse(&["raw.*", "train.requests"]).unwrap();
        assert!(scope.covers("raw.web_events"));
        assert!(scope.covers("train.requests"));
        assert!(!scope.covers("train.requests2"));
        assert!(!scope.covers("db.shop.orders"));
        assert!(!scope.covers("raw"));
        assert!(Scope::parse(&["*"]).unwrap().covers("anything"));
        assert!(!Scope::parse::<&str>(&[]).unwrap().covers("raw.x"));
        assert_eq!(scope.to_string(), "raw.*, train.requests");
    }

    #[test]
    fn a_star_inside_a_pattern_or_an_empty_one_is_refused() {
        assert!(
            Scope::parse(&["ra*w"])
                .unwrap_err()
                .to_string()
                .contains("ra*w")
        );
        assert!(Scope::parse(&["*.events"]).is_err());
        assert!(Scope::parse(&[""]).is_err());
        let e = toml::from_str::<ApiKey>("name = \"a\"\nsecret = \"s\"\ntopics = [\"a*b\"]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a*b"), "{e}");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn keys_bearer_tokens_and_basic_credentials_are_read() {
        let mut s = String::new();
        let h = headers(&[("x-api-key", " k1 ")]);
        assert_eq!(presented(&h, &mut s).unwrap(), Some(Presented::Key("k1")));
        let h = headers(&[("authorization", "bearer t1")]);
        assert_eq!(presented(&h, &mut s).unwrap(), Some(Presented::Key("t1")));
        // "user:pa:ss" — a password may hold colons.
        let h = headers(&[("authorization", "Basic dXNlcjpwYTpzcw==")]);
        assert_eq!(
            presented(&h, &mut s).unwrap(),
            Some(Presented::Basic {
                user: "user",
                password: "pa:ss"
            })
        );
        assert_eq!(presented(&HeaderMap::new(), &mut s).unwrap(), None);
        for bad in ["Basic !!!", "Basic dXNlcg==", "Digest x", "Basic"] {
            let h = headers(&[("authorization", bad)]);
            assert_eq!(presented(&h, &mut s), Err(AuthError::Malformed), "{bad}");
        }
    }

    #[test]
    fn an_api_key_is_found_only_by_its_secret() {
        let keys: Vec<ApiKey> = toml::from_str::<toml::Table>(
            "[[k]]\nname = \"web\"\nsecret = \"w\"\ntopics = [\"raw.*\"]\n\
             [[k]]\nname = \"ops\"\nsecret = \"o\"\nviews = [\"*\"]\n",
        )
        .unwrap()["k"]
            .clone()
            .try_into()
            .unwrap();
        let web = authenticate_key(&keys, &headers(&[("x-api-key", "w")])).unwrap();
        assert_eq!(web.name, "web");
        assert!(web.allows("raw.web_events") && !web.allows("train.requests"));
        let ops = authenticate_key(&keys, &headers(&[("authorization", "Bearer o")])).unwrap();
        assert!(ops.allows("user_activity"));
        assert_eq!(
            authenticate_key(&keys, &headers(&[("x-api-key", "x")])).unwrap_err(),
            AuthError::Unknown
        );
        assert!(matches!(
            authenticate_key(&keys, &HeaderMap::new()).unwrap_err(),
            AuthError::Missing(_)
        ));
    }

    #[test]
    fn constant_time_comparison() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
        assert!(!constant_time_eq("", "a"));
    }
}
