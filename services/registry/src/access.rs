//! Who may do what: HTTP basic authentication as Confluent Schema Registry's (so
//! `basic.auth.user.info` of Confluent's clients works), and three roles.
//!
//! | role | may |
//! |---|---|
//! | `read` | every `GET`; look a schema up under a subject (`POST /subjects/{s}`); test compatibility |
//! | `write` | what `read` may, and register schemas (`POST /subjects/{s}/versions`) under the subjects it lists |
//! | `admin` | everything: deletes, compatibility levels (`PUT`/`DELETE /config...`) |
//!
//! Requests without credentials are refused (401) unless `anonymous = "read"` lets them read.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::debug;
use tributary_core::auth::{self, AuthError, Presented, Scope};
use tributary_core::config::Secret;

use crate::error::ApiError;

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read schemas, subjects and levels; look up; test compatibility.
    Read,
    /// Read, and register schemas under the user's subjects.
    Write,
    /// Everything.
    Admin,
}

/// What requests without credentials may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Anonymous {
    /// Nothing: 401.
    #[default]
    None,
    /// What the `read` role may.
    Read,
}

/// One user (`[[schema_registry.users]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// The user name of HTTP basic authentication.
    pub name: String,
    /// The password: inline, `{ file = "..." }` or `{ env = "..." }`.
    pub password: Secret,
    /// What the user may do.
    pub role: Role,
    /// Subjects a `write` user may register under (names, prefixes ending in `*`, `"*"`);
    /// default every subject.
    #[serde(default = "Scope::all")]
    pub subjects: Scope,
}

/// The operation a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation {
    Read,
    Write(String),
    Admin,
}

impl Operation {
    /// Classifies a request by method and path.
    fn of(method: &Method, path: &str) -> Self {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match *method {
            Method::GET | Method::HEAD => Self::Read,
            Method::POST => match segments.as_slice() {
                // Look a schema up under a subject; test compatibility.
                ["subjects", _] | ["compatibility", ..] => Self::Read,
                ["subjects", subject, "versions"] => Self::Write(percent_decoded(subject)),
                _ => Self::Admin,
            },
            _ => Self::Admin,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Read => "Read".to_string(),
            Self::Write(subject) => format!("Write on Subject: {subject}"),
            Self::Admin => "Alter (admin)".to_string(),
        }
    }
}

/// A path segment with `%XX` escapes decoded (as the routes see it).
fn percent_decoded(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or_default() * 16 + hex(l).unwrap_or_default();
                out.push(u8::try_from(value).unwrap_or_default());
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The users and what anonymous requests may do.
#[derive(Debug)]
pub(crate) struct Access {
    users: Vec<User>,
    anonymous: Anonymous,
}

/// Why a configuration of users cannot be served.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccessError {
    /// Nobody could do anything.
    #[error(
        "the registry has no users: add [[schema_registry.users]] (name, password, role = \"read\" | \"write\" | \"admin\"), or set schema_registry.anonymous = \"read\" for a read-only registry"
    )]
    NoUsers,
    /// Two users of one name.
    #[error("user {0} is configured twice")]
    Duplicate(String),
    /// An empty password.
    #[error("user {0} has an empty password")]
    EmptyPassword(String),
}

impl Access {
    pub(crate) fn new(users: Vec<User>, anonymous: Anonymous) -> Result<Self, AccessError> {
        if users.is_empty() && anonymous == Anonymous::None {
            return Err(AccessError::NoUsers);
        }
        for (i, user) in users.iter().enumerate() {
            if users[..i].iter().any(|u| u.name == user.name) {
                return Err(AccessError::Duplicate(user.name.clone()));
            }
            if user.password.expose().is_empty() {
                return Err(AccessError::EmptyPassword(user.name.clone()));
            }
        }
        Ok(Self { users, anonymous })
    }

    /// Allows or refuses `operation` for a request with `headers`.
    fn decide(
        &self,
        headers: &axum::http::HeaderMap,
        operation: &Operation,
    ) -> Result<(), Refusal> {
        let mut scratch = String::new();
        let (name, password) = match auth::presented(headers, &mut scratch) {
            Ok(Some(Presented::Basic { user, password })) => (user, password),
            Ok(None) if self.anonymous == Anonymous::Read && *operation == Operation::Read => {
                return Ok(());
            }
            Ok(None) | Ok(Some(Presented::Key(_))) | Err(AuthError::Missing(_)) => {
                return Err(Refusal::Unauthenticated);
            }
            Err(_) => return Err(Refusal::Unauthenticated),
        };
        // Every password is compared, so the time taken does not say which user exists.
        let mut found = None;
        for user in &self.users {
            let matches = auth::constant_time_eq(user.password.expose(), password);
            if matches && user.name == name && found.is_none() {
                found = Some(user);
            }
        }
        let user = found.ok_or(Refusal::Unauthenticated)?;
        let allowed = match operation {
            Operation::Read => true,
            Operation::Write(subject) => {
                user.role == Role::Admin
                    || (user.role == Role::Write && user.subjects.covers(subject))
            }
            Operation::Admin => user.role == Role::Admin,
        };
        if allowed {
            Ok(())
        } else {
            debug!(user = %user.name, operation = %operation.describe(), "denied");
            Err(Refusal::Denied(format!(
                "User {} is denied operation {}",
                user.name,
                operation.describe()
            )))
        }
    }
}

/// Why a request was refused.
#[derive(Debug)]
enum Refusal {
    /// No, unknown or malformed credentials: 401 with a `WWW-Authenticate` challenge.
    Unauthenticated,
    /// Known, but not allowed: 403.
    Denied(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated => {
                let mut response = ApiError::unauthorized().into_response();
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tributary-registry\""),
                );
                response
            }
            Self::Denied(message) => ApiError::forbidden(message).into_response(),
        }
    }
}

/// The middleware in front of every route.
pub(crate) async fn check(
    State(access): State<Arc<Access>>,
    request: Request,
    next: Next,
) -> Response {
    let operation = Operation::of(request.method(), request.uri().path());
    match access.decide(request.headers(), &operation) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use axum::http::HeaderMap;
    use base64::Engine;

    fn user(name: &str, role: Role, subjects: &[&str]) -> User {
        User {
            name: name.to_string(),
            password: Secret::new(format!("{name}-pw")),
            role,
            subjects: Scope::parse(subjects).unwrap(),
        }
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).unwrap(),
        );
        h
    }

    fn access(anonymous: Anonymous) -> Access {
        Access::new(
            vec![
                user("reader", Role::Read, &["*"]),
                user("clean", Role::Write, &["clean.*"]),
                user("ops", Role::Admin, &[]),
            ],
            anonymous,
        )
        .unwrap()
    }

    #[test]
    fn operations_come_from_method_and_path() {
        use Operation::*;
        let of = |m: Method, p: &str| Operation::of(&m, p);
        assert_eq!(of(Method::GET, "/subjects"), Read);
        assert_eq!(of(Method::POST, "/subjects/a-value"), Read);
        assert_eq!(
            of(Method::POST, "/compatibility/subjects/a/versions/latest"),
            Read
        );
        assert_eq!(
            of(Method::POST, "/subjects/clean.x%2Dvalue/versions"),
            Write("clean.x-value".into())
        );
        assert_eq!(of(Method::DELETE, "/subjects/a"), Admin);
        assert_eq!(of(Method::PUT, "/config/a"), Admin);
        assert_eq!(of(Method::PUT, "/config"), Admin);
        assert_eq!(of(Method::POST, "/anything/else"), Admin);
    }

    #[test]
    fn roles_and_subjects_decide() {
        let a = access(Anonymous::None);
        let write = |s: &str| Operation::Write(s.to_string());
        assert!(
            a.decide(&basic("reader", "reader-pw"), &Operation::Read)
                .is_ok()
        );
        assert!(matches!(
            a.decide(&basic("reader", "reader-pw"), &write("clean.a-value")),
            Err(Refusal::Denied(m)) if m.contains("Write on Subject: clean.a-value")
        ));
        assert!(
            a.decide(&basic("clean", "clean-pw"), &write("clean.a-value"))
                .is_ok()
        );
        assert!(matches!(
            a.decide(&basic("clean", "clean-pw"), &write("raw.a-value")),
            Err(Refusal::Denied(_))
        ));
        assert!(matches!(
            a.decide(&basic("clean", "clean-pw"), &Operation::Admin),
            Err(Refusal::Denied(_))
        ));
        assert!(a.decide(&basic("ops", "ops-pw"), &Operation::Admin).is_ok());
        assert!(
            a.decide(&basic("ops", "ops-pw"), &write("raw.a-value"))
                .is_ok()
        );
    }

    #[test]
    fn wrong_missing_or_foreign_credentials_are_401() {
        let a = access(Anonymous::None);
        for headers in [
            basic("reader", "clean-pw"),
            basic("nobody", "reader-pw"),
            HeaderMap::new(),
        ] {
            assert!(matches!(
                a.decide(&headers, &Operation::Read),
                Err(Refusal::Unauthenticated)
            ));
        }
        let mut bearer = HeaderMap::new();
        bearer.insert("x-api-key", HeaderValue::from_static("reader-pw"));
        assert!(matches!(
            a.decide(&bearer, &Operation::Read),
            Err(Refusal::Unauthenticated)
        ));
        let response = Refusal::Unauthenticated.into_response();
        assert_eq!(response.status(), 401);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }

    #[test]
    fn anonymous_reads_only_when_configured() {
        let open = access(Anonymous::Read);
        assert!(open.decide(&HeaderMap::new(), &Operation::Read).is_ok());
        assert!(matches!(
            open.decide(&HeaderMap::new(), &Operation::Write("a".into())),
            Err(Refusal::Unauthenticated)
        ));
        assert!(matches!(
            open.decide(&HeaderMap::new(), &Operation::Admin),
            Err(Refusal::Unauthenticated)
        ));
    }

    #[test]
    fn a_registry_nobody_could_use_or_an_ambiguous_one_does_not_start() {
        assert!(matches!(
            Access::new(vec![], Anonymous::None),
            Err(AccessError::NoUsers)
        ));
        assert!(Access::new(vec![], Anonymous::Read).is_ok());
        let twice = vec![user("a", Role::Read, &[]), user("a", Role::Admin, &[])];
        assert!(matches!(
            Access::new(twice, Anonymous::None),
            Err(AccessError::Duplicate(n)) if n == "a"
        ));
        let mut empty = user("e", Role::Read, &[]);
        empty.password = Secret::new("");
        assert!(matches!(
            Access::new(vec![empty], Anonymous::None),
            Err(AccessError::EmptyPassword(_))
        ));
    }
}
