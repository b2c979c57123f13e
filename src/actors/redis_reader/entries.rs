//! Pure helpers of the reader: turning raw XREADGROUP / XAUTOCLAIM / XPENDING replies
//! into entries, and building dead-letter fields and reasons. No I/O here, so every rule
//! is unit-tested without a Redis server.
//!
//! Replies are parsed from raw [`redis::Value`]s rather than typed stream replies: field
//! values are producer bytes and may be non-UTF-8, and an entry deleted while pending
//! comes back with nil fields. A typed conversion would fail the whole batch on either;
//! here each entry stands alone and the bad one is dead-lettered.

use redis::Value;
use thiserror::Error;

/// The dead-letter reason of an entry whose payload is gone (XDEL or MAXLEN trimming
/// while it was pending).
pub const TRIMMED: &str =
    "the entry was trimmed or deleted from the stream before it was processed";

/// The XAUTOCLAIM cursor that means "the whole pending list was scanned".
pub const CURSOR_DONE: &str = "0-0";

/// One raw field of an entry: key and value bytes exactly as the producer wrote them.
pub type RawField = (Vec<u8>, Vec<u8>);

/// One stream entry as read from the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The stream entry id, `1718000000000-0`.
    pub id: String,
    /// The fields, or `None` when the entry was deleted or trimmed while pending.
    pub fields: Option<Vec<RawField>>,
}

/// One page of XAUTOCLAIM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClaimPage {
    /// Where the next page starts; [`CURSOR_DONE`] after the last one.
    pub cursor: String,
    /// The claimed entries (a nil one on Redis 6.2 is a deleted entry).
    pub entries: Vec<StreamEntry>,
    /// Ids Redis 7 found deleted and removed from the pending list itself.
    pub deleted: Vec<String>,
}

/// A reply that does not have the shape the command documents. Real servers never send
/// one; the reader treats it like a broken connection (reconnect, re-read pending).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unexpected Redis reply: {0}")]
pub struct ReplyError(pub String);

/// Parses an XREADGROUP reply for one stream: nil (BLOCK timed out) is no entries; RESP2
/// sends `[[stream, entries]]`, RESP3 `{stream: entries}`.
pub fn parse_read_reply(reply: Value) -> Result<Vec<StreamEntry>, ReplyError> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(pair) => pair_of(pair).map(|(_, entries)| entries),
                other => Err(shape("a [stream, entries] pair", &other)),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, entries)| entries).collect(),
        other => return Err(shape("an array of streams", &other)),
    };
    let mut out = Vec::new();
    for entries in streams {
        out.extend(parse_entries(entries)?);
    }
    Ok(out)
}

/// Parses an XAUTOCLAIM reply `[cursor, entries, deleted-ids]` (the third element exists
/// since Redis 7).
pub fn parse_claim_reply(reply: Value) -> Result<ClaimPage, ReplyError> {
    let Value::Array(parts) = reply else {
        return Err(shape("[cursor, entries, deleted]", &reply));
    };
    let mut parts = parts.into_iter();
    let cursor = match parts.next() {
        Some(v) => text(v)?,
        None => return Err(ReplyError("XAUTOCLAIM reply has no cursor".into())),
    };
    let entries = match parts.next() {
        Some(v) => parse_entries(v)?,
        None => Vec::new(),
    };
    let deleted = match parts.next() {
        Some(Value::Array(ids)) => ids.into_iter().map(text).collect::<Result<_, _>>()?,
        Some(Value::Nil) | None => Vec::new(),
        Some(other) => return Err(shape("an array of deleted ids", &other)),
    };
    Ok(ClaimPage {
        cursor,
        entries,
        deleted,
    })
}

/// Parses the extended XPENDING reply of a single-id range (`XPENDING key group id id 1`):
/// the entry's delivery count, or `None` when it is not pending.
pub fn parse_delivery_count(reply: Value) -> Result<Option<u64>, ReplyError> {
    let Value::Array(rows) = reply else {
        return Err(shape("an array of pending entries", &reply));
    };
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let Value::Array(cols) = row else {
        return Err(shape("[id, consumer, idle, deliveries]", &row));
    };
    match cols.into_iter().nth(3) {
        Some(Value::Int(n)) => Ok(Some(u64::try_from(n).unwrap_or(0))),
        Some(other) => text(other)?
            .parse()
            .map(Some)
            .map_err(|_| ReplyError("XPENDING delivery count is not a number".into())),
        None => Err(ReplyError("XPENDING row has no delivery count".into())),
    }
}

/// The `lag` of `group` in an XINFO GROUPS reply (RESP2: each group a flat
/// `[name, value, ...]` array; RESP3: a map). `None` when the group is not listed or its
/// lag is nil (Redis cannot tell, e.g. after deletions) or absent (Redis before 7).
pub fn parse_group_lag(reply: Value, group: &str) -> Result<Option<u64>, ReplyError> {
    let Value::Array(groups) = reply else {
        return Err(shape("an array of groups", &reply));
    };
    for info in groups {
        let pairs: Vec<(Value, Value)> = match info {
            Value::Map(pairs) => pairs,
            Value::Array(flat) => {
                if !flat.len().is_multiple_of(2) {
                    return Err(ReplyError("XINFO GROUPS: odd number of fields".into()));
                }
                let mut it = flat.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                pairs
            }
            other => return Err(shape("a group's fields", &other)),
        };
        let mut name = None;
        let mut lag = None;
        for (k, v) in pairs {
            match bytes(k)?.as_slice() {
                b"name" => name = Some(bytes(v)?),
                b"lag" => lag = Some(v),
                _ => {}
            }
        }
        if name.as_deref() != Some(group.as_bytes()) {
            continue;
        }
        return match lag {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Int(n)) => Ok(u64::try_from(n).ok()),
            Some(other) => Ok(text(other)?.parse().ok()),
        };
    }
    Ok(None)
}

/// The smallest pending id in the summary form of XPENDING (`XPENDING stream group`:
/// `[count, smallest, greatest, consumers]`); `None` when nothing is pending.
pub fn parse_oldest_pending(reply: Value) -> Result<Option<String>, ReplyError> {
    let Value::Array(parts) = reply else {
        return Err(shape("an XPENDING summary", &reply));
    };
    let mut it = parts.into_iter();
    let count = match it.next() {
        Some(Value::Int(n)) => n,
        Some(other) => text(other)?
            .parse()
            .map_err(|_| ReplyError("XPENDING count is not a number".into()))?,
        None => return Err(ReplyError("XPENDING summary is empty".into())),
    };
    match it.next() {
        _ if count <= 0 => Ok(None),
        None | Some(Value::Nil) => Ok(None),
        Some(id) => text(id).map(Some),
    }
}

/// The fields [`ScaleEvent::from_fields`](crate::messages::ScaleEvent::from_fields) takes:
/// keys as text (a non-UTF-8 key becomes a replacement-character name that validation
/// rejects as a bad metadata name), values as the original bytes.
pub fn event_fields(fields: &[RawField]) -> Vec<(String, Vec<u8>)> {
    fields
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
        .collect()
}

/// The fields of a dead letter: the original fields byte for byte, then `original_id`
/// and `error` last, so a reader folding fields into a map sees ours even if the producer
/// sent fields of the same names.
pub fn dead_letter_fields(entry: &StreamEntry, error: &str) -> Vec<RawField> {
    let mut fields = entry.fields.clone().unwrap_or_default();
    fields.push((b"original_id".to_vec(), entry.id.as_bytes().to_vec()));
    fields.push((b"error".to_vec(), error.as_bytes().to_vec()));
    fields
}

/// The dead-letter reason of an entry delivered `deliveries` times, when that is more
/// than `max_deliveries`; `None` while it may still be tried. Names the count and the
/// last refusal this consumer saw, so an operator knows what kept failing.
pub fn delivery_limit_reason(
    deliveries: u64,
    max_deliveries: u64,
    last_refusal: Option<&str>,
) -> Option<String> {
    if deliveries <= max_deliveries {
        return None;
    }
    let last = match last_refusal {
        Some(reason) => format!("the last refusal was: {reason}"),
        None => "no refusal was recorded by this consumer (another replica tried it, or a restart interrupted it)".to_string(),
    };
    Some(format!(
        "the entry was delivered {deliveries} times without success (redis.max_deliveries is {max_deliveries}); {last}"
    ))
}

/// Parses the entries array of a stream reply.
fn parse_entries(entries: Value) -> Result<Vec<StreamEntry>, ReplyError> {
    match entries {
        Value::Nil => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(parse_entry).collect(),
        other => Err(shape("an array of entries", &other)),
    }
}

/// Parses `[id, [k, v, ...]]`; nil or empty fields mean the entry is gone (XADD
/// cannot create an entry without fields).
fn parse_entry(entry: Value) -> Result<StreamEntry, ReplyError> {
    let Value::Array(parts) = entry else {
        return Err(shape("an [id, fields] entry", &entry));
    };
    let mut parts = parts.into_iter();
    let id = match parts.next() {
        Some(v) => text(v)?,
        None => return Err(ReplyError("stream entry without an id".into())),
    };
    let fields = match parts.next() {
        None | Some(Value::Nil) => None,
        Some(Value::Array(flat)) => Some(flat_pairs(flat)?),
        Some(Value::Map(map)) => Some(
            map.into_iter()
                .map(|(k, v)| Ok((bytes(k)?, bytes(v)?)))
                .collect::<Result<Vec<_>, ReplyError>>()?,
        ),
        Some(other) => return Err(shape("an array of fields", &other)),
    };
    Ok(StreamEntry {
        id,
        fields: fields.filter(|f| !f.is_empty()),
    })
}

/// `[k1, v1, k2, v2, ...]` into pairs.
fn flat_pairs(flat: Vec<Value>) -> Result<Vec<RawField>, ReplyError> {
    if !flat.len().is_multiple_of(2) {
        return Err(ReplyError(format!(
            "an entry has an odd number ({}) of field names and values",
            flat.len()
        )));
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((bytes(k)?, bytes(v)?));
    }
    Ok(out)
}

/// The bytes of a string-like reply element.
fn bytes(value: Value) -> Result<Vec<u8>, ReplyError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.into_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.into_bytes()),
        Value::Int(n) => Ok(n.to_string().into_bytes()),
        other => Err(shape("a string", &other)),
    }
}

/// A string-like element that must be text (ids, cursors).
fn text(value: Value) -> Result<String, ReplyError> {
    String::from_utf8(bytes(value)?).map_err(|_| ReplyError("an id is not UTF-8".into()))
}

fn pair_of(pair: Vec<Value>) -> Result<(Value, Value), ReplyError> {
    let mut it = pair.into_iter();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(ReplyError("expected a [stream, entries] pair".into())),
    }
}

/// Describes what was expected; the value itself is not quoted (it may be large).
fn shape(expected: &str, got: &Value) -> ReplyError {
    let kind = match got {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) | Value::SimpleString(_) | Value::VerbatimString { .. } => "a string",
        Value::Array(_) | Value::Set(_) => "an array",
        Value::Map(_) => "a map",
        Value::ServerError(_) => "an error",
        _ => "another type",
    };
    ReplyError(format!("expected {expected}, got {kind}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, kv: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(kv.iter().map(|s| bulk(s)).collect()),
        ])
    }

    #[test]
    fn a_read_reply_keeps_non_utf8_values_and_marks_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("otto:scale:events"),
            Value::Array(vec![
                entry("1-0", &["type", "scale_up"]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
                Value::Array(vec![
                    bulk("3-0"),
                    Value::Array(vec![bulk("task_id"), Value::BulkString(vec![0xff, 0xfe])]),
                ]),
            ]),
        ])]);
        let entries = parse_read_reply(reply).expect("parses");
        assert_eq!(entries.len(), 3);
        assert_eq!(
            entries[0].fields,
            Some(vec![(b"type".to_vec(), b"scale_up".to_vec())])
        );
        assert_eq!(
            entries[1],
            StreamEntry {
                id: "2-0".into(),
                fields: None
            }
        );
        assert_eq!(
            entries[2].fields,
            Some(vec![(b"task_id".to_vec(), vec![0xff, 0xfe])])
        );
    }

    #[test]
    fn a_nil_read_reply_is_no_entries() {
        assert_eq!(parse_read_reply(Value::Nil), Ok(vec![]));
    }

    #[test]
    fn a_resp3_map_reply_is_understood() {
        let reply = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![entry("5-1", &["a", "b"])]),
        )]);
        let entries = parse_read_reply(reply).expect("parses");
        assert_eq!(entries[0].id, "5-1");
    }

    #[test]
    fn odd_field_lists_and_wrong_shapes_are_errors_not_panics() {
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![entry("1-0", &["lonely"])]),
        ])]);
        assert!(parse_read_reply(odd).is_err());
        assert!(parse_read_reply(Value::Int(3)).is_err());
        assert!(parse_claim_reply(Value::Array(vec![])).is_err());
        assert!(parse_delivery_count(Value::Array(vec![Value::Array(vec![bulk("1-0")])])).is_err());
    }

    #[test]
    fn a_claim_reply_lists_cursor_entries_and_deleted_ids() {
        let reply = Value::Array(vec![
            bulk("7-0"),
            Value::Array(vec![entry("3-0", &["k", "v"])]),
            Value::Array(vec![bulk("4-0")]),
        ]);
        let page = parse_claim_reply(reply).expect("parses");
        assert_eq!(page.cursor, "7-0");
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.deleted, vec!["4-0".to_string()]);

        // Redis 6.2: two elements, a deleted entry has nil fields.
        let old = Value::Array(vec![
            bulk(CURSOR_DONE),
            Value::Array(vec![Value::Array(vec![bulk("9-0"), Value::Nil])]),
        ]);
        let page = parse_claim_reply(old).expect("parses");
        assert_eq!(page.entries[0].fields, None);
        assert!(page.deleted.is_empty());
    }

    #[test]
    fn delivery_count_comes_from_the_fourth_column() {
        let row = Value::Array(vec![Value::Array(vec![
            bulk("1-0"),
            bulk("c1"),
            Value::Int(12),
            Value::Int(4),
        ])]);
        assert_eq!(parse_delivery_count(row), Ok(Some(4)));
        assert_eq!(parse_delivery_count(Value::Array(vec![])), Ok(None));
    }

    #[test]
    fn dead_letters_keep_the_original_bytes_and_add_id_and_error_last() {
        let e = StreamEntry {
            id: "1-0".into(),
            fields: Some(vec![(b"task_id".to_vec(), vec![0xff])]),
        };
        let f = dead_letter_fields(&e, "field `task_id` is not valid UTF-8");
        assert_eq!(f[0], (b"task_id".to_vec(), vec![0xff]));
        assert_eq!(f[1], (b"original_id".to_vec(), b"1-0".to_vec()));
        assert_eq!(f[2].0, b"error".to_vec());

        let gone = StreamEntry {
            id: "2-0".into(),
            fields: None,
        };
        assert_eq!(dead_letter_fields(&gone, TRIMMED).len(), 2);
    }

    #[test]
    fn the_delivery_limit_names_the_count_and_the_last_refusal() {
        assert_eq!(delivery_limit_reason(5, 5, None), None);
        let text = delivery_limit_reason(6, 5, Some("quota exceeded")).expect("over the limit");
        assert!(
            text.contains("delivered 6 times") && text.contains("quota exceeded"),
            "{text}"
        );
        let text = delivery_limit_reason(9, 5, None).expect("over the limit");
        assert!(text.contains("no refusal was recorded"), "{text}");
    }

    #[test]
    fn event_fields_keep_values_and_make_keys_text() {
        let f = event_fields(&[(vec![0xff], b"v".to_vec()), (b"type".to_vec(), vec![1])]);
        assert_eq!(f[0].0, "\u{fffd}");
        assert_eq!(f[1], ("type".to_string(), vec![1]));
    }

    #[test]
    fn the_lag_of_our_group_is_read_from_resp2_and_resp3_replies() {
        let group = |name: &str, lag: Value| {
            Value::Array(vec![
                bulk("name"),
                bulk(name),
                bulk("consumers"),
                Value::Int(1),
                bulk("lag"),
                lag,
            ])
        };
        let reply = Value::Array(vec![
            group("other", Value::Int(99)),
            group("ottoscaler", Value::Int(3)),
        ]);
        assert_eq!(parse_group_lag(reply, "ottoscaler"), Ok(Some(3)));
        let nil = Value::Array(vec![group("ottoscaler", Value::Nil)]);
        assert_eq!(parse_group_lag(nil, "ottoscaler"), Ok(None));
        let resp3 = Value::Array(vec![Value::Map(vec![
            (bulk("name"), bulk("ottoscaler")),
            (bulk("lag"), Value::Int(0)),
        ])]);
        assert_eq!(parse_group_lag(resp3, "ottoscaler"), Ok(Some(0)));
        // Redis 6: no lag field. No group: nothing known.
        let old = Value::Array(vec![Value::Array(vec![bulk("name"), bulk("ottoscaler")])]);
        assert_eq!(parse_group_lag(old, "ottoscaler"), Ok(None));
        assert_eq!(
            parse_group_lag(Value::Array(vec![]), "ottoscaler"),
            Ok(None)
        );
        assert!(parse_group_lag(Value::Int(1), "ottoscaler").is_err());
        let odd = Value::Array(vec![Value::Array(vec![bulk("name")])]);
        assert!(parse_group_lag(odd, "ottoscaler").is_err());
    }

    #[test]
    fn the_oldest_pending_id_comes_from_the_xpending_summary() {
        let summary = Value::Array(vec![
            Value::Int(2),
            bulk("1700000000000-0"),
            bulk("1700000000500-1"),
            Value::Array(vec![]),
        ]);
        assert_eq!(
            parse_oldest_pending(summary),
            Ok(Some("1700000000000-0".into()))
        );
        let none = Value::Array(vec![Value::Int(0), Value::Nil, Value::Nil, Value::Nil]);
        assert_eq!(parse_oldest_pending(none), Ok(None));
        assert!(parse_oldest_pending(Value::Nil).is_err());
        assert!(parse_oldest_pending(Value::Array(vec![])).is_err());
    }
}
