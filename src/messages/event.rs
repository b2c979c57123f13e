//! The `ScaleEvent` model (docs/contract.md section 1) and its validation.
//!
//! [`ScaleEvent::from_fields`] turns the raw fields of one stream entry into a validated
//! event, or an [`EventError`] whose text names the field and says what is wrong; the
//! Redis reader dead-letters the entry with that text.

use std::collections::BTreeMap;
use std::time::Instant;

use actix::Message;
use thiserror::Error;

use super::supervisor::{EventAccepted, EventRefused};
use crate::telemetry::TraceParent;

/// Longest task id: it must be a valid Kubernetes label value.
pub const MAX_TASK_ID_LEN: usize = 63;
/// Metadata fields an event may carry (everything not a known field is metadata).
pub const MAX_METADATA_FIELDS: usize = 32;
/// Longest metadata key, `[A-Za-z0-9_]{1,63}`.
pub const MAX_METADATA_KEY_LEN: usize = 63;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Longest template name (templates are keys of the config).
const MAX_TEMPLATE_LEN: usize = 63;

/// What a scale event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleKind {
    /// Run `pod_count` new workers for the task.
    Up { pod_count: u32 },
    /// Cancel `pod_count` unfinished workers of the task; `None` cancels all of them.
    Down { pod_count: Option<u32> },
}

impl ScaleKind {
    /// The `type` field's value, also the `type` label of `ottoscaler_events_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ScaleKind::Up { .. } => "scale_up",
            ScaleKind::Down { .. } => "scale_down",
        }
    }
}

/// A validated scale event, as the Supervisor receives it.
///
/// The Supervisor answers once the event's effect is durable in Kubernetes (every pod of
/// a scale_up created or found, every deletion of a scale_down accepted); only then may
/// the sender acknowledge the stream entry, and it then sends
/// [`EventAcknowledged`](super::supervisor::EventAcknowledged).
#[derive(Debug, Clone, PartialEq, Message)]
#[rtype(result = "Result<EventAccepted, EventRefused>")]
pub struct ScaleEvent {
    /// The stream entry id (`1718000000000-0`); pod names and results derive from it.
    pub event_id: String,
    /// scale_up or scale_down, with its pod count.
    pub kind: ScaleKind,
    /// The Otto task the workers belong to (a valid label value).
    pub task_id: String,
    /// Name of the configured pod template; `default` when the event names none.
    pub template: String,
    /// Its priority class: the `priority` field, else `scheduling.default_priority`.
    pub priority: String,
    /// Who it is fair to: the metadata field `scheduling.tenant_field`, else the task.
    pub tenant: String,
    /// Every field that is not a known one; becomes `OTTO_META_<KEY>` env vars.
    pub metadata: BTreeMap<String, String>,
    /// The producer's unix seconds, informational only.
    pub timestamp: Option<i64>,
    /// The trace this event's work continues. As parsed: the producer's `traceparent`
    /// field, if it sent one. The RedisReader replaces it by its event span's context
    /// before dispatching (or clears it when tracing is off), so the Supervisor's
    /// workers are children of the event span.
    pub trace: Option<TraceParent>,
    /// When ottoscaler read the entry: the start of `ottoscaler_pod_create_seconds`.
    pub read_at: Instant,
}

/// Why an entry is not a valid event. The text is a sentence a person understands and
/// always names the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    #[error("field `{0}` is missing")]
    Missing(&'static str),
    #[error("field `{field}` is not valid UTF-8")]
    NotUtf8 { field: String },
    #[error("field `type` is {0:?}; expected `scale_up` or `scale_down`")]
    UnknownType(String),
    #[error("field `pod_count` is {value:?}; expected a whole number from {min} to {max}")]
    PodCount { value: String, min: u32, max: u32 },
    #[error(
        "field `task_id` is {0:?}; expected 1 to 63 characters of letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit"
    )]
    TaskId(String),
    #[error("field `template` is {0:?}; no pod template of that name is configured")]
    UnknownTemplate(String),
    #[error("field `timestamp` is {0:?}; expected unix seconds")]
    Timestamp(String),
    #[error("the event has {count} metadata fields; at most {max} are allowed")]
    TooManyFields { count: usize, max: usize },
    #[error("metadata field name {0:?} is invalid; expected 1 to 63 of `A-Z a-z 0-9 _`")]
    MetadataKey(String),
    #[error("metadata field `{key}` is {len} bytes long; at most {max} are allowed")]
    MetadataValue { key: String, len: usize, max: usize },
    #[error("field `{0}` appears more than once")]
    Duplicate(String),
    #[error(
        "field `traceparent` is {value:?}: it {why} (W3C Trace Context: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`)"
    )]
    TraceParent { value: String, why: String },
    #[error("the entry has no fields (it was trimmed or deleted from the stream)")]
    Empty,
    #[error(
        "field `priority` is {value:?}; no priority class of that name is configured (known: {known})"
    )]
    UnknownPriority { value: String, known: String },
    #[error(
        "field `pod_count` is {pod_count}, more than {key} ({cap}) allows: the event could never fit"
    )]
    OverCap {
        pod_count: u32,
        key: String,
        cap: u32,
    },
}

/// What validation needs to know from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLimits {
    /// Largest `pod_count` of a scale_up (`limits.max_pods_per_event`).
    pub max_pods_per_event: u32,
    /// Names of the configured pod templates.
    pub templates: Vec<String>,
    /// Names of the configured priority classes (`[priorities]`).
    pub priorities: Vec<String>,
    /// The class of an event without `priority` (`scheduling.default_priority`).
    pub default_priority: String,
    /// The metadata field naming the tenant (`scheduling.tenant_field`).
    pub tenant_field: String,
    /// `templates.<name>.max_workers` of the capped templates.
    pub template_caps: BTreeMap<String, u32>,
    /// `limits.max_workers_per_task`, if set.
    pub task_cap: Option<u32>,
}

impl Default for EventLimits {
    /// The defaults of the settings: 50 pods, the `default` template, the `normal` class.
    fn default() -> Self {
        EventLimits::from_settings(&crate::settings::Settings::default())
    }
}

impl EventLimits {
    /// What validation needs from `settings`.
    pub fn from_settings(settings: &crate::settings::Settings) -> EventLimits {
        EventLimits {
            max_pods_per_event: settings.limits.max_pods_per_event,
            templates: settings
                .template_names()
                .into_iter()
                .map(String::from)
                .collect(),
            priorities: settings.priorities.keys().cloned().collect(),
            default_priority: settings.scheduling.default_priority.clone(),
            tenant_field: settings.scheduling.tenant_field.clone(),
            template_caps: settings
                .templates
                .iter()
                .filter(|(_, t)| t.max_workers > 0)
                .map(|(n, t)| (n.clone(), t.max_workers))
                .collect(),
            task_cap: Some(settings.limits.max_workers_per_task).filter(|c| *c > 0),
        }
    }
}

impl ScaleEvent {
    /// Validates the raw fields of stream entry `event_id` (docs/contract.md section 1).
    pub fn from_fields(
        event_id: &str,
        fields: &[(String, Vec<u8>)],
        limits: &EventLimits,
    ) -> Result<ScaleEvent, EventError> {
        if fields.is_empty() {
            return Err(EventError::Empty);
        }
        let mut known: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        let metadata_count = fields
            .iter()
            .filter(|(k, _)| known_field(k).is_none())
            .count();
        if metadata_count > MAX_METADATA_FIELDS {
            return Err(EventError::TooManyFields {
                count: metadata_count,
                max: MAX_METADATA_FIELDS,
            });
        }
        for (key, raw) in fields {
            match known_field(key) {
                Some(name) => {
                    let value = std::str::from_utf8(raw)
                        .map_err(|_| EventError::NotUtf8 { field: name.into() })?;
                    if known.insert(name, value.to_string()).is_some() {
                        return Err(EventError::Duplicate(name.into()));
                    }
                }
                None => {
                    if !valid_metadata_key(key) {
                        return Err(EventError::MetadataKey(truncated(key)));
                    }
                    if raw.len() > MAX_METADATA_VALUE_BYTES {
                        return Err(EventError::MetadataValue {
                            key: key.clone(),
                            len: raw.len(),
                            max: MAX_METADATA_VALUE_BYTES,
                        });
                    }
                    let value = std::str::from_utf8(raw)
                        .map_err(|_| EventError::NotUtf8 { field: key.clone() })?;
                    if metadata.insert(key.clone(), value.to_string()).is_some() {
                        return Err(EventError::Duplicate(key.clone()));
                    }
                }
            }
        }

        let kind_raw = known.get("type").ok_or(EventError::Missing("type"))?;
        let task_id = known.get("task_id").ok_or(EventError::Missing("task_id"))?;
        if !valid_task_id(task_id) {
            return Err(EventError::TaskId(truncated(task_id)));
        }
        let pod_count = known
            .get("pod_count")
            .map(|v| parse_pod_count(v, limits.max_pods_per_event, kind_raw))
            .transpose()?;
        let kind = match kind_raw.as_str() {
            "scale_up" => ScaleKind::Up {
                pod_count: pod_count.ok_or(EventError::Missing("pod_count"))?,
            },
            "scale_down" => ScaleKind::Down { pod_count },
            other => return Err(EventError::UnknownType(truncated(other))),
        };
        let template = match known.get("template") {
            None => "default".to_string(),
            Some(t) if t.len() <= MAX_TEMPLATE_LEN && limits.templates.iter().any(|n| n == t) => {
                t.clone()
            }
            Some(t) => return Err(EventError::UnknownTemplate(truncated(t))),
        };
        let priority = match known.get("priority") {
            None => limits.default_priority.clone(),
            Some(p) if limits.priorities.iter().any(|n| n == p) => p.clone(),
            Some(p) => {
                return Err(EventError::UnknownPriority {
                    value: truncated(p),
                    known: limits.priorities.join(", "),
                });
            }
        };
        if let ScaleKind::Up { pod_count } = kind {
            let caps = [
                limits
                    .template_caps
                    .get(&template)
                    .map(|cap| (format!("templates.{template}.max_workers"), *cap)),
                limits
                    .task_cap
                    .map(|cap| ("limits.max_workers_per_task".to_string(), cap)),
            ];
            if let Some((key, cap)) = caps.into_iter().flatten().find(|(_, cap)| pod_count > *cap) {
                return Err(EventError::OverCap {
                    pod_count,
                    key,
                    cap,
                });
            }
        }
        let tenant = metadata
            .get(&limits.tenant_field)
            .filter(|t| !t.is_empty())
            .cloned()
            .unwrap_or_else(|| task_id.clone());
        let timestamp = known
            .get("timestamp")
            .map(|t| {
                t.trim()
                    .parse::<i64>()
                    .map_err(|_| EventError::Timestamp(truncated(t)))
            })
            .transpose()?;
        let trace = known
            .get("traceparent")
            .map(|t| {
                TraceParent::parse(t.trim()).map_err(|why| EventError::TraceParent {
                    value: truncated(t),
                    why,
                })
            })
            .transpose()?;

        Ok(ScaleEvent {
            event_id: event_id.to_string(),
            kind,
            task_id: task_id.clone(),
            template,
            priority,
            tenant,
            metadata,
            timestamp,
            trace,
            read_at: Instant::now(),
        })
    }
}

/// Whether `key` is one of the event's own fields (not metadata).
pub fn is_known_field(key: &str) -> bool {
    known_field(key).is_some()
}

/// The known fields, as `'static` names; anything else is metadata.
fn known_field(key: &str) -> Option<&'static str> {
    match key {
        "type" => Some("type"),
        "task_id" => Some("task_id"),
        "pod_count" => Some("pod_count"),
        "template" => Some("template"),
        "timestamp" => Some("timestamp"),
        "traceparent" => Some("traceparent"),
        "priority" => Some("priority"),
        _ => None,
    }
}

fn parse_pod_count(value: &str, max_up: u32, kind: &str) -> Result<u32, EventError> {
    // scale_down has no upper bound of its own: it cancels at most what runs.
    let max = if kind == "scale_up" { max_up } else { u32::MAX };
    let err = || EventError::PodCount {
        value: truncated(value),
        min: 1,
        max,
    };
    let n: u64 = value.trim().parse().map_err(|_| err())?;
    if n == 0 || n > u64::from(max) {
        return Err(err());
    }
    u32::try_from(n).map_err(|_| err())
}

/// A valid Kubernetes label value of 1 to 63 characters:
/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`.
pub fn valid_task_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    bytes.len() <= MAX_TASK_ID_LEN
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_metadata_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_METADATA_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Quotes at most 80 characters of a bad value in an error, so a hostile 1 MB field does
/// not become a 1 MB log line.
fn truncated(value: &str) -> String {
    const MAX: usize = 80;
    match value.char_indices().nth(MAX) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}...", &value[..cut]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> EventLimits {
        EventLimits {
            max_pods_per_event: 50,
            templates: vec!["default".into(), "gpu".into()],
            priorities: vec!["high".into(), "normal".into()],
            template_caps: BTreeMap::from([("gpu".to_string(), 4)]),
            ..EventLimits::default()
        }
    }

    #[test]
    fn priority_names_a_configured_class_and_defaults_to_the_default_class() {
        let seed = [("type", "scale_up"), ("pod_count", "1"), ("task_id", "t")];
        assert_eq!(parse(&seed).expect("valid").priority, "normal");
        let mut high = seed.to_vec();
        high.push(("priority", "high"));
        let e = parse(&high).expect("valid");
        assert_eq!(e.priority, "high");
        assert!(e.metadata.is_empty(), "priority is a field, not metadata");
        let mut unknown = seed.to_vec();
        unknown.push(("priority", "urgent"));
        assert_eq!(
            error_text(&unknown),
            "field `priority` is \"urgent\"; no priority class of that name is configured (known: high, normal)"
        );
    }

    #[test]
    fn the_tenant_is_the_tenant_field_else_the_task() {
        let seed = [("type", "scale_up"), ("pod_count", "1"), ("task_id", "t-1")];
        assert_eq!(parse(&seed).expect("valid").tenant, "t-1");
        let mut team = seed.to_vec();
        team.push(("tenant", "team-a"));
        let e = parse(&team).expect("valid");
        assert_eq!(e.tenant, "team-a");
        assert_eq!(
            e.metadata.get("tenant").map(String::as_str),
            Some("team-a"),
            "still metadata"
        );
        let mut empty = seed.to_vec();
        empty.push(("tenant", ""));
        assert_eq!(parse(&empty).expect("valid").tenant, "t-1");
    }

    #[test]
    fn a_scale_up_larger_than_its_template_or_task_cap_is_refused_naming_the_cap() {
        let gpu = [
            ("type", "scale_up"),
            ("pod_count", "5"),
            ("task_id", "t"),
            ("template", "gpu"),
        ];
        assert_eq!(
            error_text(&gpu),
            "field `pod_count` is 5, more than templates.gpu.max_workers (4) allows: the event could never fit"
        );
        let task_capped = EventLimits {
            task_cap: Some(10),
            ..limits()
        };
        let big = fields(&[("type", "scale_up"), ("pod_count", "11"), ("task_id", "t")]);
        let err = ScaleEvent::from_fields("1-0", &big, &task_capped).map(|e| e.kind);
        assert!(
            matches!(&err, Err(e) if e.to_string().contains("limits.max_workers_per_task (10)")),
            "{err:?}"
        );
        let fits = [
            ("type", "scale_up"),
            ("pod_count", "4"),
            ("task_id", "t"),
            ("template", "gpu"),
        ];
        assert!(parse(&fits).is_ok());
        let down = [
            ("type", "scale_down"),
            ("pod_count", "40"),
            ("task_id", "t"),
            ("template", "gpu"),
        ];
        assert!(parse(&down).is_ok(), "a scale_down has no cap");
    }

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<ScaleEvent, EventError> {
        ScaleEvent::from_fields("1-0", &fields(pairs), &limits())
    }

    fn error_text(pairs: &[(&str, &str)]) -> String {
        match parse(pairs) {
            Ok(e) => panic!("expected an error, got {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_seed_event_is_valid() {
        let e = parse(&[
            ("type", "scale_up"),
            ("pod_count", "3"),
            ("task_id", "task-123"),
        ])
        .expect("seed event");
        assert_eq!(e.kind, ScaleKind::Up { pod_count: 3 });
        assert_eq!(e.task_id, "task-123");
        assert_eq!(e.template, "default");
        assert!(e.metadata.is_empty());
        assert_eq!(e.event_id, "1-0");
    }

    #[test]
    fn unknown_fields_become_metadata() {
        let e = parse(&[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
            ("branch", "main"),
            ("commit_sha", "abc"),
            ("template", "gpu"),
            ("timestamp", "1718000000"),
        ])
        .expect("valid");
        assert_eq!(e.metadata.len(), 2);
        assert_eq!(e.metadata["branch"], "main");
        assert_eq!(e.template, "gpu");
        assert_eq!(e.timestamp, Some(1_718_000_000));
    }

    #[test]
    fn type_is_required_and_must_be_known() {
        assert_eq!(
            error_text(&[("pod_count", "1"), ("task_id", "t")]),
            "field `type` is missing"
        );
        assert!(
            error_text(&[
                ("type", "scale_sideways"),
                ("pod_count", "1"),
                ("task_id", "t")
            ])
            .starts_with("field `type` is \"scale_sideways\"")
        );
    }

    #[test]
    fn pod_count_rules_for_scale_up() {
        for bad in ["abc", "0", "-1", "51", "1000000000000", "1.5", ""] {
            let text = error_text(&[("type", "scale_up"), ("pod_count", bad), ("task_id", "t")]);
            assert!(text.starts_with("field `pod_count`"), "{bad}: {text}");
            assert!(text.contains("from 1 to 50"), "{bad}: {text}");
        }
        assert_eq!(
            error_text(&[("type", "scale_up"), ("task_id", "t")]),
            "field `pod_count` is missing"
        );
        let e = parse(&[("type", "scale_up"), ("pod_count", "50"), ("task_id", "t")]);
        assert_eq!(e.map(|e| e.kind), Ok(ScaleKind::Up { pod_count: 50 }));
    }

    #[test]
    fn pod_count_is_optional_for_scale_down() {
        let all = parse(&[("type", "scale_down"), ("task_id", "t")]).map(|e| e.kind);
        assert_eq!(all, Ok(ScaleKind::Down { pod_count: None }));
        let two = parse(&[("type", "scale_down"), ("task_id", "t"), ("pod_count", "2")]);
        assert_eq!(
            two.map(|e| e.kind),
            Ok(ScaleKind::Down { pod_count: Some(2) })
        );
        let zero = error_text(&[("type", "scale_down"), ("task_id", "t"), ("pod_count", "0")]);
        assert!(zero.starts_with("field `pod_count`"), "{zero}");
    }

    #[test]
    fn task_id_must_be_a_label_value() {
        let long = "a".repeat(64);
        for bad in [
            "",
            "has space",
            "-lead",
            "trail-",
            "ümlaut",
            "a/b",
            long.as_str(),
        ] {
            let text = error_text(&[("type", "scale_up"), ("pod_count", "1"), ("task_id", bad)]);
            assert!(text.starts_with("field `task_id`"), "{bad:?}: {text}");
        }
        for good in ["a", "A.b_c-9", &"z".repeat(63)] {
            assert!(valid_task_id(good), "{good}");
        }
        assert_eq!(
            error_text(&[("type", "scale_up"), ("pod_count", "1")]),
            "field `task_id` is missing"
        );
    }

    #[test]
    fn template_must_be_configured() {
        let text = error_text(&[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
            ("template", "tpu"),
        ]);
        assert!(
            text.contains("field `template`") && text.contains("\"tpu\""),
            "{text}"
        );
    }

    #[test]
    fn metadata_limits() {
        let mut many = vec![("type", "scale_up"), ("pod_count", "1"), ("task_id", "t")];
        let keys: Vec<String> = (0..33).map(|i| format!("k{i}")).collect();
        many.extend(keys.iter().map(|k| (k.as_str(), "v")));
        assert_eq!(
            error_text(&many),
            "the event has 33 metadata fields; at most 32 are allowed"
        );
        many.truncate(3 + 32);
        assert!(parse(&many).is_ok());

        let text = error_text(&[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
            ("bad-key", "v"),
        ]);
        assert!(
            text.starts_with("metadata field name \"bad-key\""),
            "{text}"
        );

        let huge = "x".repeat(1025);
        let text = error_text(&[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
            ("blob", &huge),
        ]);
        assert_eq!(
            text,
            "metadata field `blob` is 1025 bytes long; at most 1024 are allowed"
        );
    }

    #[test]
    fn non_utf8_and_duplicates_and_empty_are_named() {
        let mut f = fields(&[("type", "scale_up"), ("pod_count", "1")]);
        f.push(("task_id".into(), vec![0xff, 0xfe]));
        let err = ScaleEvent::from_fields("1-0", &f, &limits());
        assert_eq!(
            err.map_err(|e| e.to_string()),
            Err("field `task_id` is not valid UTF-8".into())
        );

        let text = error_text(&[
            ("type", "scale_up"),
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
        ]);
        assert_eq!(text, "field `type` appears more than once");

        let empty = ScaleEvent::from_fields("1-0", &[], &limits());
        assert_eq!(empty, Err(EventError::Empty));
    }

    #[test]
    fn traceparent_is_a_reserved_field_not_metadata() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = parse(&[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
            ("traceparent", tp),
        ])
        .expect("valid");
        assert!(e.metadata.is_empty(), "{:?}", e.metadata);
        assert_eq!(e.trace.map(|t| t.to_string()).as_deref(), Some(tp));
        let none = parse(&[("type", "scale_up"), ("pod_count", "1"), ("task_id", "t")]);
        assert_eq!(none.map(|e| e.trace), Ok(None));
    }

    #[test]
    fn an_invalid_traceparent_is_an_error_naming_the_field() {
        let text = error_text(&[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
            ("traceparent", "00-not-a-trace"),
        ]);
        assert!(
            text.starts_with("field `traceparent` is \"00-not-a-trace\": it is 14 characters long"),
            "{text}"
        );
        let twice = error_text(&[
            ("type", "scale_up"),
            ("pod_count", "1"),
            ("task_id", "t"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
        ]);
        assert_eq!(twice, "field `traceparent` appears more than once");
    }

    #[test]
    fn errors_quote_at_most_80_characters() {
        let long = "q".repeat(10_000);
        let text = error_text(&[("type", &long), ("pod_count", "1"), ("task_id", "t")]);
        assert!(text.len() < 200, "{}", text.len());
    }
}
