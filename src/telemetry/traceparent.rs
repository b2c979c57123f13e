//! W3C Trace Context `traceparent` values (<https://www.w3.org/TR/trace-context/>):
//! what a producer may send in an event's `traceparent` field, and what ottoscaler
//! passes to a worker pod as `TRACEPARENT`.
//!
//! `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase, neither id all
//! zeros. A later version (`01`..`fe`) is read by its first four parts, as the
//! specification asks; version `ff` is invalid.

use std::fmt;

/// The length of a version-00 `traceparent`.
const LEN_V00: usize = 55;

/// One trace context: which trace, which span in it, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    /// The span this context points at (the parent of whatever continues it).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value; the error says what is wrong with it.
    pub fn parse(value: &str) -> Result<TraceParent, String> {
        if !value.is_ascii() {
            // Also what makes the byte-offset slices below safe.
            return Err("has characters that are not ASCII".into());
        }
        let bytes = value.as_bytes();
        if bytes.len() < LEN_V00 {
            return Err(format!(
                "is {} characters long; expected {LEN_V00}",
                bytes.len()
            ));
        }
        let version = hex_part::<1>(&value[0..2], "version")?[0];
        if version == 0xff {
            return Err("has version ff, which is invalid".into());
        }
        if version == 0 && bytes.len() != LEN_V00 {
            return Err(format!(
                "is {} characters long; version 00 has exactly {LEN_V00}",
                bytes.len()
            ));
        }
        if bytes.len() > LEN_V00 && bytes[LEN_V00] != b'-' {
            return Err("has more after the flags without a `-` separator".into());
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err("expected `-` between version, trace id, parent id and flags".into());
        }
        let trace_id = hex_part::<16>(&value[3..35], "trace id")?;
        let span_id = hex_part::<8>(&value[36..52], "parent id")?;
        let flags = hex_part::<1>(&value[53..55], "flags")?[0];
        if trace_id == [0; 16] {
            return Err("has an all-zero trace id".into());
        }
        if span_id == [0; 8] {
            return Err("has an all-zero parent id".into());
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The trace id as 32 lowercase hex digits (the results' `trace_id`).
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        hex(&self.span_id)
    }

    /// Whether the trace is sampled (flags bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// The version-00 form, as a worker's `TRACEPARENT` gets it.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            self.trace_id_hex(),
            self.span_id_hex(),
            self.flags
        )
    }
}

/// `N` bytes from `2 * N` lowercase hex digits (uppercase is invalid in a traceparent).
fn hex_part<const N: usize>(digits: &str, part: &str) -> Result<[u8; N], String> {
    let err = || format!("has a {part} that is not {} lowercase hex digits", 2 * N);
    let raw = digits.as_bytes();
    if raw.len() != 2 * N {
        return Err(err());
    }
    let mut out = [0u8; N];
    for (i, pair) in raw.chunks_exact(2).enumerate() {
        let high = nibble(pair[0]).ok_or_else(err)?;
        let low = nibble(pair[1]).ok_or_else(err)?;
        out[i] = high << 4 | low;
    }
    Ok(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_parses_and_prints_back() {
        let tp = TraceParent::parse(GOOD).expect("valid");
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id_hex(), "00f067aa0ba902b7");
        assert!(tp.sampled());
        assert_eq!(tp.to_string(), GOOD);
        let unsampled = TraceParent::parse(&GOOD.replace("-01", "-00")).expect("valid");
        assert!(!unsampled.sampled());
    }

    #[test]
    fn a_later_version_is_read_by_its_first_four_parts() {
        let tp = TraceParent::parse(&format!("cc{}-what-comes-later", &GOOD[2..]))
            .expect("forward compatible");
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.to_string(), GOOD);
        assert!(TraceParent::parse(&format!("cc{}x", &GOOD[2..])).is_err());
    }

    #[test]
    fn invalid_values_are_refused_with_a_reason() {
        let cases = [
            ("", "characters long"),
            ("00-4bf92f", "characters long"),
            (&format!("{GOOD}-"), "version 00 has exactly 55"),
            (&format!("ff{}", &GOOD[2..]), "version ff"),
            (&GOOD.to_uppercase(), "lowercase hex"),
            (&GOOD.replace("4bf92f", "4bf92g"), "trace id"),
            (&GOOD.replace("00f067aa", "00f067ax"), "parent id"),
            (&GOOD.replace("-01", "-0z"), "flags"),
            (&GOOD.replacen('-', "_", 1), "expected `-`"),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "all-zero trace id",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                "all-zero parent id",
            ),
            (
                "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "version",
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01ü",
                "ASCII",
            ),
            (
                "ü0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                "ASCII",
            ),
        ];
        for (value, expected) in cases {
            match TraceParent::parse(value) {
                Ok(tp) => panic!("{value:?} parsed as {tp:?}"),
                Err(why) => assert!(why.contains(expected), "{value:?}: {why}"),
            }
        }
    }
}
