//! Fuzzes event validation (`ScaleEvent::from_fields`, CONTRACT.md section 1) with the
//! raw fields of a stream entry, as the Redis reader hands them over.
//!
//! Input: NUL-separated `key \0 value \0 key \0 value ...` (a trailing key without a
//! value gets an empty one), so seeds and the dictionary stay readable. Keys are
//! decoded lossily, like the reader does; values stay bytes.
//!
//! Checked on every input: validation never panics; an accepted event satisfies every
//! rule and its pod names are valid DNS-1123 labels; a refusal names a field and stays
//! short (bounded, whatever the input).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ottoscaler::messages::{EventLimits, ScaleEvent, ScaleKind};
use ottoscaler::pods::pod_name;

const KNOWN: [&str; 5] = ["type", "task_id", "pod_count", "template", "timestamp"];

fn fields(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut parts = data.split(|b| *b == 0);
    let mut out = Vec::new();
    while let Some(key) = parts.next() {
        let value = parts.next().unwrap_or_default();
        out.push((String::from_utf8_lossy(key).into_owned(), value.to_vec()));
    }
    out
}

fn label_value(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
}

fn dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

fuzz_target!(|data: &[u8]| {
    let limits = EventLimits {
        max_pods_per_event: 50,
        templates: vec!["default".into(), "gpu".into()],
    };
    let input = fields(data);
    match ScaleEvent::from_fields("1718000000000-0", &input, &limits) {
        Ok(event) => {
            assert!(label_value(&event.task_id), "{:?}", event.task_id);
            assert!(limits.templates.contains(&event.template));
            assert!(event.metadata.len() <= 32);
            for (k, v) in &event.metadata {
                assert!(!KNOWN.contains(&k.as_str()), "{k}");
                assert!((1..=63).contains(&k.len()), "{k}");
                assert!(
                    k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                    "{k}"
                );
                assert!(v.len() <= 1024);
            }
            let last = match event.kind {
                ScaleKind::Up { pod_count } => {
                    assert!((1..=50).contains(&pod_count));
                    pod_count - 1
                }
                ScaleKind::Down { pod_count } => {
                    assert!(pod_count.is_none_or(|n| n >= 1));
                    0
                }
            };
            for i in [0, last] {
                let name = pod_name(&event.task_id, &event.event_id, i);
                assert!(dns_label(&name), "{name}");
            }
        }
        Err(e) => {
            let message = e.to_string();
            // Bounded whatever the input: bad values are quoted cut to 80 characters
            // (escaped, so up to ~10 bytes each).
            assert!(message.len() <= 1024, "{} bytes", message.len());
            assert!(message.contains("field"), "{message}");
        }
    }
});
