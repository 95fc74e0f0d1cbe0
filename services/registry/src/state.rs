//! The registry's contents as a state machine over the records of the `_schemas` topic.
//!
//! Every replica applies the same records in the same (log) order with the same rules, so all
//! replicas hold the same state. Registrations are proposals: a record claims a schema id and a
//! subject version, and is applied only if neither was already taken by a different schema.
//! A replica that proposed learns whether it won by reading its own record back.
//!
//! Record keys are unique per proposal (they carry the id and a fingerprint of the schema), so
//! log compaction never reorders two proposals; soft deletes are separate records.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tributary_core::schema::catalog::Compatibility;

/// Key of a record in the schemas topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum Key {
    /// A proposed subject version (value: [`SchemaValue`]); a tombstone hard-deletes it.
    Schema {
        subject: String,
        version: u32,
        id: u32,
        fingerprint: String,
    },
    /// A soft delete of a subject version (value: [`DeletedValue`]); a tombstone undoes it.
    Deleted { subject: String, version: u32 },
    /// The compatibility level of a subject, or the global one (`subject: None`).
    Config { subject: Option<String> },
    /// The highest id ever handed out, kept so ids are never reused after hard deletes.
    MaxId,
}

/// Value of a [`Key::Schema`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SchemaValue {
    pub(crate) subject: String,
    pub(crate) version: u32,
    pub(crate) id: u32,
    pub(crate) schema: String,
    /// The normalized schema text (see `store::normalize`), deciding whether two schemas are the same.
    pub(crate) normalized: String,
}

/// Value of a [`Key::Deleted`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeletedValue {
    pub(crate) deleted: bool,
}

/// Value of a [`Key::Config`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    pub(crate) compatibility_level: String,
}

/// Value of a [`Key::MaxId`] record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaxIdValue {
    pub(crate) max_id: u32,
}

/// A schema known by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredSchema {
    pub(crate) schema: String,
    pub(crate) normalized: String,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SubjectVersion {
    pub(crate) id: u32,
    pub(crate) deleted: bool,
}

/// The registry's contents.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    pub(crate) schemas: BTreeMap<u32, StoredSchema>,
    by_normalized: HashMap<String, u32>,
    pub(crate) subjects: BTreeMap<String, BTreeMap<u32, SubjectVersion>>,
    pub(crate) subject_levels: BTreeMap<String, Compatibility>,
    pub(crate) global_level: Option<Compatibility>,
    pub(crate) max_id: u32,
}

impl State {
    /// Applies one record of the schemas topic (`value: None` is a tombstone). Records that do
    /// not parse are ignored: they cannot have been written by a registry.
    pub(crate) fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = serde_json::from_slice::<Key>(key) else {
            return;
        };
        match key {
            Key::Schema {
                subject,
                version,
                id,
                ..
            } => match value.and_then(|v| serde_json::from_slice::<SchemaValue>(v).ok()) {
                Some(v) => self.apply_schema(v),
                None => self.hard_delete(&subject, version, id),
            },
            Key::Deleted { subject, version } => {
                let deleted = value
                    .and_then(|v| serde_json::from_slice::<DeletedValue>(v).ok())
                    .is_some_and(|d| d.deleted);
                if let Some(sv) = self
                    .subjects
                    .get_mut(&subject)
                    .and_then(|vs| vs.get_mut(&version))
                {
                    sv.deleted = deleted;
                }
            }
            Key::Config { subject } => {
                let level = value
                    .and_then(|v| serde_json::from_slice::<ConfigValue>(v).ok())
                    .and_then(|c| {
                        tributary_core::schema::compat::parse_level(&c.compatibility_level)
                    });
                match (subject, level) {
                    (Some(s), Some(l)) => {
                        self.subject_levels.insert(s, l);
                    }
                    (Some(s), None) => {
                        self.subject_levels.remove(&s);
                    }
                    (None, l) => self.global_level = l,
                }
            }
            Key::MaxId => {
                if let Some(v) = value.and_then(|v| serde_json::from_slice::<MaxIdValue>(v).ok()) {
                    self.max_id = self.max_id.max(v.max_id);
                }
            }
        }
    }

    /// A proposal wins unless its id belongs to another schema, its schema already has another
    /// id, or its subject version is taken by another id.
    fn apply_schema(&mut self, v: SchemaValue) {
        if self
            .schemas
            .get(&v.id)
            .is_some_and(|existing| existing.normalized != v.normalized)
        {
            return;
        }
        if self
            .by_normalized
            .get(&v.normalized)
            .is_some_and(|id| *id != v.id)
        {
            return;
        }
        if self
            .subjects
            .get(&v.subject)
            .and_then(|vs| vs.get(&v.version))
            .is_some_and(|sv| sv.id != v.id)
        {
            return;
        }
        self.by_normalized.insert(v.normalized.clone(), v.id);
        self.schemas.entry(v.id).or_insert(StoredSchema {
            schema: v.schema,
            normalized: v.normalized,
        });
        self.subjects
            .entry(v.subject)
            .or_default()
            .entry(v.version)
            .or_insert(SubjectVersion {
                id: v.id,
                deleted: false,
            });
        self.max_id = self.max_id.max(v.id);
    }

    fn hard_delete(&mut self, subject: &str, version: u32, id: u32) {
        let Some(versions) = self.subjects.get_mut(subject) else {
            return;
        };
        if versions.get(&version).is_some_and(|sv| sv.id == id) {
            versions.remove(&version);
        }
        if versions.is_empty() {
            self.subjects.remove(subject);
        }
        // The schema itself stays known by id while any subject version still uses it.
        let used = self
            .subjects
            .values()
            .any(|vs| vs.values().any(|sv| sv.id == id));
        if !used && let Some(s) = self.schemas.remove(&id) {
            self.by_normalized.remove(&s.normalized);
        }
    }

    /// The id of a schema with this normalized form, if any subject uses it.
    pub(crate) fn id_of(&self, normalized: &str) -> Option<u32> {
        self.by_normalized.get(normalized).copied()
    }

    /// Live (not soft-deleted) versions of a subject, oldest first.
    pub(crate) fn live_versions(&self, subject: &str) -> Vec<(u32, u32)> {
        self.subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, sv)| !sv.deleted)
                    .map(|(v, sv)| (*v, sv.id))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The next version number of a subject (versions are never reused, even after deletes).
    pub(crate) fn next_version(&self, subject: &str) -> u32 {
        self.subjects
            .get(subject)
            .and_then(|vs| vs.keys().next_back())
            .map_or(1, |v| v + 1)
    }

    /// The level that applies to a subject.
    pub(crate) fn level_for(&self, subject: &str, default: Compatibility) -> Compatibility {
        self.subject_levels
            .get(subject)
            .copied()
            .or(self.global_level)
            .unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn schema_record(subject: &str, version: u32, id: u32, normalized: &str) -> (Vec<u8>, Vec<u8>) {
        let key = Key::Schema {
            subject: subject.into(),
            version,
            id,
            fingerprint: normalized.into(),
        };
        let value = SchemaValue {
            subject: subject.into(),
            version,
            id,
            schema: normalized.into(),
            normalized: normalized.into(),
        };
        (
            serde_json::to_vec(&key).unwrap(),
            serde_json::to_vec(&value).unwrap(),
        )
    }

    fn apply(state: &mut State, (k, v): (Vec<u8>, Vec<u8>)) {
        state.apply(&k, Some(&v));
    }

    #[test]
    fn the_first_claim_of_an_id_or_version_wins() {
        let mut s = State::default();
        apply(&mut s, schema_record("a", 1, 1, "A"));
        // Another replica proposed id 1 for a different schema: ignored.
        apply(&mut s, schema_record("b", 1, 1, "B"));
        assert_eq!(s.schemas[&1].normalized, "A");
        assert!(!s.subjects.contains_key("b"));
        // Version 1 of "a" is taken by id 1: a proposal of id 2 for it is ignored.
        apply(&mut s, schema_record("a", 1, 2, "C"));
        assert_eq!(s.live_versions("a"), vec![(1, 1)]);
        assert!(!s.schemas.contains_key(&2));
        // A schema keeps one id: proposing schema A under id 3 is ignored.
        apply(&mut s, schema_record("c", 1, 3, "A"));
        assert!(!s.subjects.contains_key("c"));
        // The same schema under another subject shares its id.
        apply(&mut s, schema_record("c", 1, 1, "A"));
        assert_eq!(s.live_versions("c"), vec![(1, 1)]);
        assert_eq!(s.id_of("A"), Some(1));
    }

    #[test]
    fn deletes_and_max_id() {
        let mut s = State::default();
        apply(&mut s, schema_record("a", 1, 1, "A"));
        apply(&mut s, schema_record("a", 2, 2, "B"));
        let del = serde_json::to_vec(&Key::Deleted {
            subject: "a".into(),
            version: 1,
        })
        .unwrap();
        s.apply(&del, Some(br#"{"deleted":true}"#));
        assert_eq!(s.live_versions("a"), vec![(2, 2)]);
        assert_eq!(s.next_version("a"), 3);
        let max = serde_json::to_vec(&Key::MaxId).unwrap();
        s.apply(&max, Some(br#"{"max_id":2}"#));
        let (k, _) = schema_record("a", 2, 2, "B");
        s.apply(&k, None);
        assert!(!s.schemas.contains_key(&2));
        assert_eq!(s.max_id, 2, "a hard delete never lowers the highest id");
        s.apply(b"not json", Some(b"x"));
        assert_eq!(s.schemas.len(), 1);
    }

    #[test]
    fn levels() {
        let mut s = State::default();
        let global = serde_json::to_vec(&Key::Config { subject: None }).unwrap();
        let sub = serde_json::to_vec(&Key::Config {
            subject: Some("a".into()),
        })
        .unwrap();
        assert_eq!(
            s.level_for("a", Compatibility::Backward),
            Compatibility::Backward
        );
        s.apply(&global, Some(br#"{"compatibilityLevel":"FULL"}"#));
        assert_eq!(
            s.level_for("a", Compatibility::Backward),
            Compatibility::Full
        );
        s.apply(&sub, Some(br#"{"compatibilityLevel":"NONE"}"#));
        assert_eq!(
            s.level_for("a", Compatibility::Backward),
            Compatibility::None
        );
        s.apply(&sub, None);
        assert_eq!(
            s.level_for("a", Compatibility::Backward),
            Compatibility::Full
        );
    }
}
