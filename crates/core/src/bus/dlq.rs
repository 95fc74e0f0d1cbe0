use super::OutboundRecord;

/// Names of the headers every dead letter carries, in this order: source topic, source
/// partition, source offset, stage, error class, error message (all UTF-8 text).
pub const DLQ_HEADERS: [&str; 6] = [
    "tributary.source.topic",
    "tributary.source.partition",
    "tributary.source.offset",
    "tributary.stage",
    "tributary.error.class",
    "tributary.error.message",
];

/// Longest error message kept in a header; longer ones are cut at a character boundary.
const MAX_MESSAGE_BYTES: usize = 4096;

/// The dead-letter topic of a stage: `dlq.<stage>`.
pub fn dlq_topic(stage: &str) -> String {
    format!("dlq.{stage}")
}

/// Why and from where a record is dead-lettered.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The stage that failed (`ingest`, `transform`, `archive`, ...).
    pub stage: &'a str,
    /// Topic the record came from (or a source name, such as a file path, for ingest).
    pub source_topic: &'a str,
    /// Partition it came from (-1 when it did not come from Kafka).
    pub partition: i32,
    /// Offset it came from (or line number for a file).
    pub offset: i64,
    /// A short, stable name of the kind of error (`decode`, `validation`, ...).
    pub error_class: &'a str,
    /// What went wrong.
    pub message: &'a str,
}

/// The record written to `dlq.<stage>`: the original key and bytes, with headers that say where
/// it came from and why it failed, so it can be inspected and replayed after a fix.
pub fn dead_letter_record(
    letter: &DeadLetter<'_>,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
) -> OutboundRecord {
    let values = [
        letter.source_topic.to_string(),
        letter.partition.to_string(),
        letter.offset.to_string(),
        letter.stage.to_string(),
        letter.error_class.to_string(),
        truncate(letter.message, MAX_MESSAGE_BYTES).to_string(),
    ];
    let headers = DLQ_HEADERS
        .iter()
        .zip(values)
        .map(|(name, value)| ((*name).to_string(), value.into_bytes()))
        .collect();
    OutboundRecord {
        topic: dlq_topic(letter.stage),
        key,
        payload: Some(payload),
        headers,
        partition: None,
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn dead_letters_name_source_and_error() {
        let letter = DeadLetter {
            stage: "archive",
            source_topic: "raw.web_events",
            partition: 2,
            offset: 41,
            error_class: "decode",
            message: "unknown schema id 9",
        };
        let r = dead_letter_record(&letter, Some(b"k".to_vec()), vec![0, 1, 2]);
        assert_eq!(r.topic, "dlq.archive");
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.payload, Some(vec![0, 1, 2]));
        let h: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), std::str::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            h,
            vec![
                ("tributary.source.topic", "raw.web_events"),
                ("tributary.source.partition", "2"),
                ("tributary.source.offset", "41"),
                ("tributary.stage", "archive"),
                ("tributary.error.class", "decode"),
                ("tributary.error.message", "unknown schema id 9"),
            ]
        );
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(5000);
        let letter = DeadLetter {
            stage: "s",
            source_topic: "t",
            partition: 0,
            offset: 0,
            error_class: "c",
            message: &long,
        };
        let r = dead_letter_record(&letter, None, vec![]);
        let msg = std::str::from_utf8(&r.headers[5].1).unwrap();
        assert!(msg.len() <= MAX_MESSAGE_BYTES && msg.len() >= MAX_MESSAGE_BYTES - 1);
    }
}
