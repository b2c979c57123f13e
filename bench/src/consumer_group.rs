//! A Redis consumer group seen from outside: created for KEDA's ScaledJob, read and
//! acknowledged one entry at a time by the harness playing KEDA's job agent, and asked
//! which entries of a run were never acknowledged (ottoscaler's group and KEDA's).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use redis::aio::MultiplexedConnection;
use serde_json::Value;

/// Every Redis command here gets this long.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// Pending entries listed at most (far more than a run sends).
const PENDING_MAX: u32 = 100_000;

/// `XGROUP CREATE stream group $ MKSTREAM` (the group exists before the scaler looks);
/// an existing group is left as it is.
pub async fn create(con: &mut MultiplexedConnection, stream: &str, group: &str) -> Result<()> {
    let created: redis::RedisResult<String> = tokio::time::timeout(
        COMMAND_TIMEOUT,
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(group)
            .arg("$")
            .arg("MKSTREAM")
            .query_async(con),
    )
    .await
    .context("XGROUP CREATE timed out")?;
    match created {
        Ok(_) => Ok(()),
        Err(err) if err.to_string().contains("BUSYGROUP") => Ok(()),
        Err(err) => bail!("XGROUP CREATE {stream} {group}: {err}"),
    }
}

/// One `XREADGROUP GROUP group agent COUNT 1 STREAMS stream >` and its XACK; false
/// when no entry was left.
pub async fn read_and_ack(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
) -> Result<bool> {
    let reply = query(
        con,
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg("agent")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg(stream)
            .arg(">"),
    )
    .await?;
    let Some(id) = first_entry_id(&reply) else {
        return Ok(false);
    };
    query(con, redis::cmd("XACK").arg(stream).arg(group).arg(&id)).await?;
    Ok(true)
}

/// How many entries `group` has pending (XPENDING's summary); 0 without the group.
pub async fn pending(con: &mut MultiplexedConnection, stream: &str, group: &str) -> Result<usize> {
    let summary = query(con, redis::cmd("XPENDING").arg(stream).arg(group)).await;
    match summary {
        Ok(summary) => Ok(summary
            .get(0)
            .and_then(Value::as_i64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)),
        Err(err) if format!("{err:#}").contains("NOGROUP") => Ok(0),
        Err(err) => Err(err),
    }
}

/// The entries of `ids` that `group` has not acknowledged: never delivered (after its
/// last-delivered id) or pending. All of them when the group does not exist.
pub async fn unacked(
    con: &mut MultiplexedConnection,
    stream: &str,
    group: &str,
    ids: &[String],
) -> Result<Vec<String>> {
    let groups = query(con, redis::cmd("XINFO").arg("GROUPS").arg(stream)).await?;
    let Some(last) = groups
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| field(g, "name").and_then(Value::as_str) == Some(group))
        .and_then(|g| field(g, "last-delivered-id")?.as_str().map(str::to_string))
    else {
        return Ok(ids.to_vec());
    };
    let pending = query(
        con,
        redis::cmd("XPENDING")
            .arg(stream)
            .arg(group)
            .arg("-")
            .arg("+")
            .arg(PENDING_MAX),
    )
    .await?;
    let pending: HashSet<&str> = pending
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get(0)?.as_str())
        .collect();
    Ok(not_acked(ids, &last, &pending))
}

/// Entries after `last_delivered`, or pending.
fn not_acked(ids: &[String], last_delivered: &str, pending: &HashSet<&str>) -> Vec<String> {
    let last = key(last_delivered);
    ids.iter()
        .filter(|id| pending.contains(id.as_str()) || key(id) > last)
        .cloned()
        .collect()
}

/// A stream entry id (`<ms>-<seq>`) as numbers, for ordering; None sorts first.
fn key(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// `key`'s value in one group of an XINFO GROUPS reply: a flat `[k, v, k, v...]`
/// (RESP2) or `[[k, v], ...]` (a RESP3 map).
fn field<'a>(group: &'a Value, key: &str) -> Option<&'a Value> {
    let items = group.as_array()?;
    if items.iter().all(Value::is_array) {
        items
            .iter()
            .find(|pair| pair.get(0).and_then(Value::as_str) == Some(key))?
            .get(1)
    } else {
        items
            .chunks(2)
            .find(|pair| pair[0].as_str() == Some(key))?
            .get(1)
    }
}

/// `cmd` (its first word named in errors), as JSON.
async fn query(con: &mut MultiplexedConnection, cmd: &redis::Cmd) -> Result<Value> {
    let name = cmd
        .args_iter()
        .next()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "a Redis command".to_string(),
        })
        .unwrap_or_default();
    let value: redis::Value = tokio::time::timeout(COMMAND_TIMEOUT, cmd.query_async(con))
        .await
        .with_context(|| format!("{name} timed out"))?
        .with_context(|| format!("{name} failed"))?;
    Ok(to_json(&value))
}

/// A Redis reply as JSON (bulk strings as strings), enough to walk stream replies.
fn to_json(value: &redis::Value) -> Value {
    match value {
        redis::Value::BulkString(b) => Value::from(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Value::from(s.as_str()),
        redis::Value::Int(i) => Value::from(*i),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            Value::Array(items.iter().map(to_json).collect())
        }
        redis::Value::Map(pairs) => Value::Array(
            pairs
                .iter()
                .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The id of the first entry of an XREADGROUP reply: `[[stream, [[id, fields]]]]`
/// (RESP2) or `[[stream, [[id, fields]]]]` from a RESP3 map; None when it is empty.
fn first_entry_id(reply: &Value) -> Option<String> {
    reply
        .get(0)?
        .get(1)?
        .get(0)?
        .get(0)?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_entry_id_is_read_from_an_xreadgroup_reply() {
        let reply = json!([["bench:k1:events", [["1700-0", ["type", "scale_up"]]]]]);
        assert_eq!(first_entry_id(&reply).as_deref(), Some("1700-0"));
        assert_eq!(first_entry_id(&Value::Null), None);
        assert_eq!(first_entry_id(&json!([["s", []]])), None);
    }

    #[test]
    fn group_fields_are_found_in_both_reply_shapes() {
        let flat = json!(["name", "g", "last-delivered-id", "5-0", "lag", 0]);
        let map = json!([["name", "g"], ["last-delivered-id", "5-0"]]);
        for group in [flat, map] {
            assert_eq!(field(&group, "last-delivered-id"), Some(&json!("5-0")));
            assert_eq!(field(&group, "consumers"), None);
        }
    }

    #[test]
    fn entries_pending_or_never_delivered_are_not_acked() {
        let ids: Vec<String> = ["9-0", "10-0", "10-1", "11-0"].map(String::from).to_vec();
        let pending: HashSet<&str> = ["9-0"].into_iter().collect();
        // 10-1 was delivered and acknowledged; 11-0 is after the last delivered id
        // (compared as numbers: 9 < 10 < 11).
        assert_eq!(not_acked(&ids, "10-1", &pending), vec!["9-0", "11-0"]);
    }
}
