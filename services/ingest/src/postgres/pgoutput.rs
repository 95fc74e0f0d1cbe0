//! The messages of PostgreSQL's `pgoutput` logical decoding plugin, protocol version 1 (what
//! `pg_logical_slot_peek_binary_changes(..., 'proto_version', '1', 'publication_names', ...)`
//! returns, one message per row). Values arrive in their text form.

/// Microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A transaction starts.
    Begin {
        /// Its transaction id.
        xid: u32,
        /// Commit time, microseconds since the Unix epoch.
        commit_micros: i64,
    },
    /// The transaction committed.
    Commit {
        /// The end of its commit record: the position to acknowledge once it is delivered.
        end_lsn: u64,
    },
    /// The columns of a table (sent before the table's first change in a session and after
    /// every schema change).
    Relation(Relation),
    /// A row was inserted.
    Insert { relation: u32, new: Tuple },
    /// A row was updated; `old` is the whole old row (`REPLICA IDENTITY FULL`), or the old key
    /// when the key changed, or absent.
    Update {
        relation: u32,
        old: Option<OldTuple>,
        new: Tuple,
    },
    /// A row was deleted; `old` is the whole row (`FULL`) or its key.
    Delete { relation: u32, old: OldTuple },
    /// Tables were truncated.
    Truncate { relations: Vec<u32> },
    /// Anything else (origin, type, logical message): nothing to deliver.
    Other,
}

/// A table's columns as pgoutput describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub id: u32,
    pub schema: String,
    pub table: String,
    pub columns: Vec<RelColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelColumn {
    pub name: String,
    pub type_oid: u32,
    pub typmod: i32,
    /// Part of the replica identity (the key).
    pub key: bool,
}

/// One value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Datum {
    Null,
    /// A TOASTed value that did not change and was not sent.
    Unchanged,
    Text(String),
}

/// The values of a row, in column order.
pub(crate) type Tuple = Vec<Datum>;

/// The old row of an update or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OldTuple {
    /// Only the key columns are meaningful (the others are null).
    Key(Tuple),
    /// The whole old row.
    Full(Tuple),
}

/// A malformed message.
#[derive(Debug, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub(crate) struct ParseError(String);

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        if self.bytes.len() < n {
            return Err(ParseError(format!(
                "needed {n} more bytes, {} left",
                self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ParseError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, ParseError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, ParseError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn cstr(&mut self) -> Result<String, ParseError> {
        let end = self
            .bytes
            .iter()
            .position(|b| *b == 0)
            .ok_or_else(|| ParseError("unterminated string".into()))?;
        let s = String::from_utf8_lossy(&self.bytes[..end]).into_owned();
        self.bytes = &self.bytes[end + 1..];
        Ok(s)
    }
    fn tuple(&mut self) -> Result<Tuple, ParseError> {
        let n = self.u16()?;
        (0..n)
            .map(|_| match self.u8()? {
                b'n' => Ok(Datum::Null),
                b'u' => Ok(Datum::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    let bytes = self.take(len)?;
                    Ok(Datum::Text(String::from_utf8_lossy(bytes).into_owned()))
                }
                other => Err(ParseError(format!(
                    "unknown tuple value kind {:?}",
                    other as char
                ))),
            })
            .collect()
    }
}

/// Decodes one message.
pub(crate) fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let mut r = Reader { bytes };
    Ok(match r.u8()? {
        b'B' => {
            let _final_lsn = r.u64()?;
            let ts = r.u64()? as i64;
            let xid = r.u32()?;
            Message::Begin {
                xid,
                commit_micros: ts.checked_add(PG_EPOCH_MICROS).ok_or_else(|| {
                    ParseError(format!(
                        "commit time {ts} µs past 2000-01-01 is out of range"
                    ))
                })?,
            }
        }
        b'C' => {
            let _flags = r.u8()?;
            let _commit_lsn = r.u64()?;
            let end_lsn = r.u64()?;
            Message::Commit { end_lsn }
        }
        b'R' => {
            let id = r.u32()?;
            let schema = r.cstr()?;
            let table = r.cstr()?;
            let _identity = r.u8()?;
            let n = r.u16()?;
            let columns = (0..n)
                .map(|_| {
                    let flags = r.u8()?;
                    Ok(RelColumn {
                        name: r.cstr()?,
                        type_oid: r.u32()?,
                        typmod: r.u32()? as i32,
                        key: flags & 1 == 1,
                    })
                })
                .collect::<Result<_, ParseError>>()?;
            Message::Relation(Relation {
                id,
                schema,
                table,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32()?;
            expect(r.u8()?, b'N')?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let mut old = None;
            let mut kind = r.u8()?;
            if kind == b'K' || kind == b'O' {
                let t = r.tuple()?;
                old = Some(if kind == b'K' {
                    OldTuple::Key(t)
                } else {
                    OldTuple::Full(t)
                });
                kind = r.u8()?;
            }
            expect(kind, b'N')?;
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32()?;
            let kind = r.u8()?;
            let t = r.tuple()?;
            let old = match kind {
                b'K' => OldTuple::Key(t),
                b'O' => OldTuple::Full(t),
                other => {
                    return Err(ParseError(format!(
                        "delete with old tuple kind {:?}",
                        other as char
                    )));
                }
            };
            Message::Delete { relation, old }
        }
        b'T' => {
            let n = r.u32()?;
            let _options = r.u8()?;
            let relations = (0..n).map(|_| r.u32()).collect::<Result<_, _>>()?;
            Message::Truncate { relations }
        }
        _ => Message::Other,
    })
}

fn expect(got: u8, want: u8) -> Result<(), ParseError> {
    if got == want {
        Ok(())
    } else {
        Err(ParseError(format!(
            "expected {:?}, found {:?}",
            want as char, got as char
        )))
    }
}

/// `0/16B3748` as a number.
pub(crate) fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

/// A number as `0/16B3748`.
pub(crate) fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Messages of every kind, as PostgreSQL sends them: the tests' inputs and the fuzz target's
/// seeds.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod samples {
    pub(crate) fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => b.push(b'n'),
                Some(s) => {
                    b.push(b't');
                    b.extend((s.len() as u32).to_be_bytes());
                    b.extend(s.as_bytes());
                }
            }
        }
        b
    }

    /// A `relation` message as the tests build it.
    pub(crate) fn relation_message() -> Vec<u8> {
        let mut rel = vec![b'R'];
        rel.extend(16384u32.to_be_bytes());
        rel.extend(b"shop\0orders\0");
        rel.push(b'f');
        rel.extend(2u16.to_be_bytes());
        rel.push(1);
        rel.extend(b"id\0");
        rel.extend(20u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel.push(0);
        rel.extend(b"note\0");
        rel.extend(25u32.to_be_bytes());
        rel.extend((-1i32).to_be_bytes());
        rel
    }

    /// An `insert` message as the tests build it.
    pub(crate) fn insert_message() -> Vec<u8> {
        let mut ins = vec![b'I'];
        ins.extend(16384u32.to_be_bytes());
        ins.push(b'N');
        ins.extend(tuple(&[Some("7"), None]));
        ins
    }

    /// A `update` message as the tests build it.
    pub(crate) fn update_message() -> Vec<u8> {
        let mut upd = vec![b'U'];
        upd.extend(16384u32.to_be_bytes());
        upd.push(b'O');
        upd.extend(tuple(&[Some("7"), Some("a")]));
        upd.push(b'N');
        upd.extend(tuple(&[Some("7"), Some("b")]));
        upd
    }

    /// A `delete` message as the tests build it.
    pub(crate) fn delete_message() -> Vec<u8> {
        let mut del = vec![b'D'];
        del.extend(16384u32.to_be_bytes());
        del.push(b'K');
        del.extend(tuple(&[Some("7"), None]));
        del
    }

    /// A `begin` message as the tests build it.
    pub(crate) fn begin_message() -> Vec<u8> {
        let mut begin = vec![b'B'];
        begin.extend(5u64.to_be_bytes());
        begin.extend(1_000_000u64.to_be_bytes());
        begin.extend(42u32.to_be_bytes());
        begin
    }

    /// A `commit` message as the tests build it.
    pub(crate) fn commit_message() -> Vec<u8> {
        let mut commit = vec![b'C', 0];
        commit.extend(5u64.to_be_bytes());
        commit.extend(9u64.to_be_bytes());
        commit.extend(0u64.to_be_bytes());
        commit
    }
}

/// Fuzz target (see `tributary_fuzz`): any bytes are a message or an error, never a panic or a
/// hang; seeded with every kind of message in [`samples`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz_target() -> tributary_fuzz::Harness {
    use samples::*;
    tributary_fuzz::Target::new("pgoutput", env!("CARGO_MANIFEST_DIR"))
        .seeds([
            relation_message(),
            insert_message(),
            update_message(),
            delete_message(),
            begin_message(),
            commit_message(),
            b"T".to_vec(),
            b"Y".to_vec(),
        ])
        .dictionary([&b"\0"[..], b"n", b"t", b"u", b"K", b"O", b"N"])
        .harness(|input| match parse(input) {
            Ok(m) => format!("{m:?}").chars().take(8).collect(),
            Err(e) => format!("{e:?}").chars().take(24).collect(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::samples::*;
    use super::*;

    #[test]
    fn relation_insert_update_delete() {
        let rel = relation_message();
        let Message::Relation(r) = parse(&rel).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!((r.schema.as_str(), r.table.as_str()), ("shop", "orders"));
        assert!(r.columns[0].key && !r.columns[1].key);
        assert_eq!(r.columns[1].typmod, -1);

        let ins = insert_message();
        assert_eq!(
            parse(&ins).unwrap(),
            Message::Insert {
                relation: 16384,
                new: vec![Datum::Text("7".into()), Datum::Null]
            }
        );

        let upd = update_message();
        let Message::Update { old, new, .. } = parse(&upd).unwrap() else {
            panic!("not an update")
        };
        assert!(matches!(old, Some(OldTuple::Full(_))));
        assert_eq!(new[1], Datum::Text("b".into()));

        let del = delete_message();
        assert!(matches!(
            parse(&del).unwrap(),
            Message::Delete {
                old: OldTuple::Key(_),
                ..
            }
        ));
        assert!(parse(&del[..7]).is_err());
    }

    #[test]
    fn begin_commit_and_lsns() {
        let begin = begin_message();
        assert_eq!(
            parse(&begin).unwrap(),
            Message::Begin {
                xid: 42,
                commit_micros: PG_EPOCH_MICROS + 1_000_000
            }
        );
        // A commit time near the end of i64 is an error, not an overflow.
        let mut late = begin.clone();
        late[9..17].copy_from_slice(&(i64::MAX - 5).to_be_bytes());
        assert!(parse(&late).is_err());
        let commit = commit_message();
        assert_eq!(parse(&commit).unwrap(), Message::Commit { end_lsn: 9 });
        assert_eq!(parse_lsn("1/16B3748"), Some((1 << 32) | 0x16B3748));
        assert_eq!(format_lsn((1 << 32) | 0x16B3748), "1/16B3748");
    }

    #[test]
    fn fuzz_pgoutput_messages() {
        fuzz_target().fuzz();
    }
}
