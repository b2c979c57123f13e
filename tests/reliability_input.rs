//! Bad input (docs/contract.md section 1): malformed and hostile events (wrong types, huge
//! and negative numbers, long and non-UTF-8 strings, shell and SQL injection attempts,
//! newlines, unicode, thousands of fields).
//!
//! - At the validation level, a property test checks `ScaleEvent::from_fields` against
//!   an independent reading of the contract's rules: every input either becomes an
//!   event that satisfies every rule (and carries exactly the input's values) or is
//!   refused with a bounded message naming the field; it never panics.
//! - End to end, a sample of hostile entries goes through Redis and the real reader
//!   between valid events: each hostile entry is dead-lettered byte for byte with
//!   `original_id` and the validation's `error`, and every valid event runs.
//!
//! `CHAOS_INPUTS` (property cases), `CHAOS_HOSTILE` (entries through Redis) and
//! `CHAOS_SEED` scale and replay it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use testenv::RedisServer;

use ::ottoscaler::messages::{EventLimits, ScaleEvent, ScaleKind};
use common::chaos::{
    DEAD, PlannedEvent, Run, STREAM, Template, knob, report, seed, templates_toml, verdict_figures,
};
use common::ottoscaler::{Launch, Ottoscaler, temp_dir};

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// The event's own fields; everything else is metadata.
const KNOWN: [&str; 5] = ["type", "task_id", "pod_count", "template", "timestamp"];
/// The templates the end-to-end ottoscaler has (`default` plus this one).
const QUICK: Template = Template::new("quick", "0", 0);
const TEMPLATES: [&str; 2] = ["default", "quick"];
/// `limits.max_pods_per_event`'s default.
const MAX_PODS: u32 = 50;

fn limits() -> EventLimits {
    EventLimits {
        max_pods_per_event: MAX_PODS,
        templates: TEMPLATES.iter().map(|t| t.to_string()).collect(),
        ..EventLimits::default()
    }
}

// ---- generators ----------------------------------------------------------------------

fn hostile_text() -> BoxedStrategy<String> {
    let classics: Vec<&'static str> = vec![
        "$(rm -rf /)",
        "`rm -rf /`",
        "\"; DROP TABLE events; --",
        "'; DROP",
        "a\nb",
        "\r\n",
        "\n",
        "\0",
        "",
        " ",
        "scale_up ",
        " scale_up",
        "SCALE_UP",
        "scale_down\n",
        "scale_up\0",
        "scale_up",
        "scale_down",
        "-1",
        "0",
        "+3",
        "3.0",
        "1e2",
        "0x10",
        "18446744073709551616",
        "4294967296",
        "4294967295",
        "-9223372036854775809",
        "NaN",
        "inf",
        "\u{663}",
        "\u{ff13}",
        "\u{1f4a5}",
        "\u{202e}evil",
        "\u{fc}mlaut",
        "\u{feff}",
        "../../etc/passwd",
        "${jndi:ldap://127.0.0.1/x}",
        "{{7*7}}",
        "<script>alert(1)</script>",
        "default",
        "quick",
        "DEFAULT",
        "default ",
        "a",
        "A.b_c-9",
        "-lead",
        "trail-",
        "has space",
    ];
    prop_oneof![
        4 => prop::sample::select(classics).prop_map(String::from),
        2 => "\\PC{0,80}",
        1 => prop::collection::vec(any::<char>(), 0..100).prop_map(String::from_iter),
        2 => "[ -~]{0,70}",
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => (0u32..=60).prop_map(|n| n.to_string()),
        1 => "[a-zA-Z0-9][-a-zA-Z0-9_.]{0,70}[a-zA-Z0-9]",
        1 => (1000usize..=70_000).prop_map(|n| "x".repeat(n)),
    ]
    .boxed()
}

fn hostile_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        6 => hostile_text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::sample::select(vec![
            vec![0xff],
            vec![0xc3],
            vec![0xed, 0xa0, 0x80],
            vec![b'a', 0xfe, b'b'],
        ]),
        1 => (1020usize..1030).prop_map(|n| vec![b'v'; n]),
    ]
    .boxed()
}

fn hostile_key() -> BoxedStrategy<Vec<u8>> {
    let odd: Vec<&'static str> = vec![
        "image",
        "command",
        "args",
        "serviceAccountName",
        "securityContext",
        "privileged",
        "hostNetwork",
        "original_id",
        "error",
        "OTTO_TASK_ID",
        "Type",
        "TYPE",
        "task-id",
        "pod count",
        "",
        "meta.key",
        "\u{43a}\u{43b}\u{44e}\u{447}",
        "$(id)",
    ];
    prop_oneof![
        4 => prop::sample::select(KNOWN.to_vec()).prop_map(|k| k.as_bytes().to_vec()),
        3 => "[A-Za-z0-9_]{1,63}".prop_map(String::into_bytes),
        1 => "[A-Za-z0-9_]{64,70}".prop_map(String::into_bytes),
        2 => prop::sample::select(odd).prop_map(|k| k.as_bytes().to_vec()),
        1 => hostile_text().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 1..16),
    ]
    .boxed()
}

/// A valid event: scale_up or scale_down, a label-value task id, maybe a template,
/// a timestamp and a little metadata.
fn valid_event() -> BoxedStrategy<Fields> {
    (
        any::<bool>(),
        1u32..=MAX_PODS,
        "[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?",
        prop::option::of(prop::sample::select(TEMPLATES.to_vec())),
        prop::option::of(any::<i64>()),
        prop::collection::btree_map("[A-Za-z0-9_]{1,20}", "[ -~]{0,40}", 0..5),
    )
        .prop_map(|(up, count, task, template, timestamp, meta)| {
            let mut f: Fields = vec![
                (
                    b"type".to_vec(),
                    if up { "scale_up" } else { "scale_down" }.into(),
                ),
                (b"task_id".to_vec(), task.into_bytes()),
                (b"pod_count".to_vec(), count.to_string().into_bytes()),
            ];
            if let Some(t) = template {
                f.push((b"template".to_vec(), t.as_bytes().to_vec()));
            }
            if let Some(ts) = timestamp {
                f.push((b"timestamp".to_vec(), ts.to_string().into_bytes()));
            }
            // Metadata keys must not collide with the event's own fields.
            f.extend(
                meta.into_iter()
                    .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
                    .map(|(k, v)| (k.into_bytes(), v.into_bytes())),
            );
            f
        })
        .boxed()
}

/// Malformed and hostile entries: valid events with one field changed, added, removed
/// or renamed; piles of random fields; events with thousands of metadata fields.
fn entries() -> BoxedStrategy<Fields> {
    prop_oneof![
        5 => (
            valid_event(),
            any::<prop::sample::Index>(),
            hostile_key(),
            hostile_value(),
            0u8..4,
        )
            .prop_map(|(mut f, at, key, value, how)| {
                let i = at.index(f.len());
                match how {
                    0 => f[i].1 = value,
                    1 => f.insert(i, (key, value)),
                    2 => {
                        f.remove(i);
                    }
                    _ => f[i].0 = key,
                }
                f
            }),
        3 => prop::collection::vec((hostile_key(), hostile_value()), 1..12),
        1 => (valid_event(), 30usize..3000).prop_map(|(mut f, n)| {
            f.extend((0..n).map(|i| (format!("m{i}").into_bytes(), b"v".to_vec())));
            f
        }),
    ]
    .boxed()
}

// ---- the contract, read independently ------------------------------------------------

/// What a valid entry must become.
#[derive(Debug, PartialEq)]
struct Expected {
    kind: ScaleKind,
    task_id: String,
    template: String,
    metadata: BTreeMap<String, String>,
    timestamp: Option<i64>,
}

fn label_value(s: &str) -> bool {
    let b = s.as_bytes();
    let ok_inner = |c: &u8| c.is_ascii_alphanumeric() || b"-_.".contains(c);
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(ok_inner)
}

/// A whole number written in ASCII digits (optional `+`, surrounding whitespace
/// tolerated), or None.
fn whole_number(s: &str) -> Option<u128> {
    let t = s.trim();
    let digits = t.strip_prefix('+').unwrap_or(t);
    if digits.is_empty() || digits.len() > 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// docs/contract.md section 1, rule by rule: the expected event, or the first broken rule.
fn contract(fields: &[(String, Vec<u8>)]) -> Result<Expected, String> {
    if fields.is_empty() {
        return Err("no fields".into());
    }
    let mut keys = BTreeSet::new();
    for (k, _) in fields {
        if !keys.insert(k) {
            return Err(format!("field {k:?} twice"));
        }
    }
    let text = |name: &str| -> Result<Option<String>, String> {
        match fields.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) => String::from_utf8(v.clone())
                .map(Some)
                .map_err(|_| format!("{name} not UTF-8")),
        }
    };
    let metadata: Vec<&(String, Vec<u8>)> = fields
        .iter()
        .filter(|(k, _)| !KNOWN.contains(&k.as_str()))
        .collect();
    if metadata.len() > 32 {
        return Err("more than 32 metadata fields".into());
    }
    let mut meta = BTreeMap::new();
    for (k, v) in metadata {
        let key_ok = (1..=63).contains(&k.len())
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !key_ok {
            return Err(format!("metadata key {k:?}"));
        }
        if v.len() > 1024 {
            return Err(format!("metadata {k} too long"));
        }
        let v = String::from_utf8(v.clone()).map_err(|_| format!("metadata {k} not UTF-8"))?;
        meta.insert(k.clone(), v);
    }
    let kind = text("type")?.ok_or("type missing")?;
    let task_id = text("task_id")?.ok_or("task_id missing")?;
    if !label_value(&task_id) {
        return Err("task_id not a label value".into());
    }
    let count = text("pod_count")?
        .map(|c| whole_number(&c).ok_or("pod_count not a whole number"))
        .transpose()?;
    let kind = match kind.as_str() {
        "scale_up" => match count {
            Some(n) if (1..=u128::from(MAX_PODS)).contains(&n) => ScaleKind::Up {
                pod_count: u32::try_from(n).map_err(|_| "pod_count")?,
            },
            Some(_) => return Err("scale_up pod_count out of range".into()),
            None => return Err("scale_up without pod_count".into()),
        },
        // No upper bound in the contract; u32 is the implementation's (documented in
        // the error: "from 1 to 4294967295").
        "scale_down" => match count {
            None => ScaleKind::Down { pod_count: None },
            Some(n) if (1..=u128::from(u32::MAX)).contains(&n) => ScaleKind::Down {
                pod_count: Some(u32::try_from(n).map_err(|_| "pod_count")?),
            },
            Some(_) => return Err("scale_down pod_count out of range".into()),
        },
        _ => return Err("unknown type".into()),
    };
    let template = match text("template")? {
        None => "default".to_string(),
        Some(t) if TEMPLATES.contains(&t.as_str()) => t,
        Some(_) => return Err("unknown template".into()),
    };
    let timestamp = text("timestamp")?
        .map(|t| t.trim().parse::<i64>().map_err(|_| "timestamp"))
        .transpose()?;
    Ok(Expected {
        kind,
        task_id,
        template,
        metadata: meta,
        timestamp,
    })
}

/// The fields as the reader hands them to validation: keys as (lossy) text.
fn as_read(fields: &Fields) -> Vec<(String, Vec<u8>)> {
    fields
        .iter()
        .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
        .collect()
}

/// Whether a refusal's message names what is wrong: one of the entry's fields (in
/// backquotes), or the metadata.
fn names_a_field(message: &str, input: &[(String, Vec<u8>)]) -> bool {
    KNOWN
        .iter()
        .copied()
        .chain(input.iter().map(|(k, _)| k.as_str()))
        .any(|k| message.contains(&format!("field `{k}`")))
        || message.contains("metadata field")
        || message.contains("no fields")
}

fn check(fields: &Fields, accepted: &AtomicUsize) -> Result<(), TestCaseError> {
    let input = as_read(fields);
    let got = ScaleEvent::from_fields("1700000000000-7", &input, &limits());
    match (got, contract(&input)) {
        (Ok(event), Ok(expected)) => {
            accepted.fetch_add(1, Ordering::Relaxed);
            let actual = Expected {
                kind: event.kind,
                task_id: event.task_id.clone(),
                template: event.template.clone(),
                metadata: event.metadata.clone(),
                timestamp: event.timestamp,
            };
            prop_assert_eq!(actual, expected);
            prop_assert_eq!(event.event_id, "1700000000000-7");
        }
        (Err(e), Err(_)) => {
            let message = e.to_string();
            prop_assert!(
                names_a_field(&message, &input),
                "names no field: {message:?}"
            );
            prop_assert!(
                message.len() <= 1024,
                "{} bytes: {message:?}",
                message.len()
            );
        }
        (Ok(event), Err(rule)) => {
            return Err(TestCaseError::fail(format!(
                "accepted an event that breaks the contract ({rule}): {event:?}"
            )));
        }
        (Err(e), Ok(expected)) => {
            return Err(TestCaseError::fail(format!(
                "refused a valid event ({e}): {expected:?}"
            )));
        }
    }
    Ok(())
}

fn runner(seed: u64, cases: u32) -> TestRunner {
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = seed.to_le_bytes()[i % 8];
    }
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

#[test]
fn every_input_becomes_a_contract_valid_event_or_a_refusal_naming_the_field() {
    let cases = u32::try_from(knob("CHAOS_INPUTS", 2000)).unwrap_or(u32::MAX);
    let seed = seed("input_validation");
    let tried = AtomicUsize::new(0);
    let accepted = AtomicUsize::new(0);
    let result = runner(seed, cases).run(&entries(), |fields| {
        tried.fetch_add(1, Ordering::Relaxed);
        check(&fields, &accepted)
    });
    let tried = tried.load(Ordering::Relaxed);
    let accepted = accepted.load(Ordering::Relaxed);
    report(
        "input_validation",
        &[
            ("inputs", tried.to_string()),
            ("accepted", accepted.to_string()),
            ("refused", (tried - accepted).to_string()),
            ("disagreements", usize::from(result.is_err()).to_string()),
            ("seed", seed.to_string()),
        ],
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Generates `n` entries that validation refuses.
fn hostile_sample(seed: u64, n: usize) -> Vec<Fields> {
    let mut runner = runner(seed, 1);
    let strategy = entries();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let fields = strategy
            .new_tree(&mut runner)
            .expect("a generated entry")
            .current();
        if ScaleEvent::from_fields("0-1", &as_read(&fields), &limits()).is_err() {
            out.push(fields);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_are_dead_lettered_with_a_reason_and_never_disturb_valid_events() {
    let test = "hostile_entries";
    let n = knob("CHAOS_HOSTILE", 50);
    let seed = seed(test);
    let env = testenv::shared();
    let ns = env.namespace("hostile").await;
    let redis = RedisServer::start();
    let dir = temp_dir(test);
    let mut run = Run::new(test, env.client(), &ns, &redis.url()).await;
    let mut otto =
        Ottoscaler::start(Launch::new(redis.port(), &ns, &dir).config(&templates_toml(&[QUICK])));
    tokio::task::block_in_place(|| otto.wait_ready(Duration::from_secs(60)));

    // Hostile entries, a valid event after every fifth.
    let mut hostile: Vec<(String, Fields)> = Vec::new();
    for (i, fields) in hostile_sample(seed, n).into_iter().enumerate() {
        let id = run
            .redis
            .xadd(STREAM, &fields)
            .await
            .unwrap_or_else(|e| panic!("XADD of hostile entry {i} failed: {e}"));
        hostile.push((id, fields));
        if i % 5 == 4 {
            run.send(&PlannedEvent {
                task_id: format!("valid-after-{i}"),
                pod_count: 1,
                template: QUICK,
                at: Duration::ZERO,
            })
            .await;
        }
    }
    let mut verdict = run
        .wait_for_end(&mut [&mut otto], Duration::from_secs(90))
        .await;
    let dead = run.redis.entries(DEAD).await.expect("dead letters");

    // Every hostile entry is dead-lettered once, byte for byte, with its id and the
    // validation's reason.
    let mut problems = Vec::new();
    let by_original: BTreeMap<Vec<u8>, &common::chaos::Entry> = dead
        .iter()
        .filter_map(|e| {
            let n = e.fields.len();
            (n >= 2 && e.fields[n - 2].0 == b"original_id").then(|| (e.fields[n - 2].1.clone(), e))
        })
        .collect();
    if by_original.len() != dead.len() {
        problems.push(format!(
            "{} dead letters do not end with original_id, error",
            dead.len() - by_original.len()
        ));
    }
    for (id, fields) in &hostile {
        let Some(letter) = by_original.get(id.as_bytes()) else {
            problems.push(format!("hostile entry {id} was not dead-lettered"));
            continue;
        };
        let n = letter.fields.len();
        if letter.fields[..n - 2] != fields[..] {
            problems.push(format!(
                "dead letter of {id} does not carry the original fields"
            ));
        }
        let (key, reason) = &letter.fields[n - 1];
        let expected = ScaleEvent::from_fields(id, &as_read(fields), &limits())
            .err()
            .map(|e| e.to_string());
        if key != b"error" || Some(String::from_utf8_lossy(reason).into_owned()) != expected {
            problems.push(format!(
                "dead letter of {id}: error {:?}, expected {expected:?}",
                String::from_utf8_lossy(reason)
            ));
        }
    }
    let counted = otto.metric("ottoscaler_events_total{type=\"invalid\",result=\"dead_lettered\"}");
    if counted != Some(n as f64) {
        problems.push(format!(
            "dead-lettered events counted: {counted:?}, not {n}"
        ));
    }
    if otto.log().contains("redis reader restarting") {
        problems.push("the reader was restarted".into());
    }
    let figures_verdict = verdict.clone();
    let mut figures = verdict_figures(&figures_verdict, run.started.elapsed().as_secs_f64());
    figures.extend([
        ("inputs", n.to_string()),
        ("hostile_dead_lettered", by_original.len().to_string()),
        ("problems", problems.len().to_string()),
        ("seed", seed.to_string()),
    ]);
    report(test, &figures);
    assert!(
        problems.is_empty(),
        "{}\nottoscaler log tail:\n{}",
        problems.join("\n"),
        otto.log_tail(6000)
    );
    // The dead letters are expected here; everything else must be clean.
    verdict.dead_letters.clear();
    run.assert_clean(&verdict, &[&otto]).await;
    let _ = std::fs::remove_dir_all(&dir);
}
