//! Talking to the test's redis-server the way an operator would: with the real
//! `redis-cli` binary.

use std::collections::BTreeMap;

/// Runs `redis-cli -p PORT ARGS...` and returns its trimmed stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    run(port, None, args)
}

/// `redis-cli` authenticated with `password` (through REDISCLI_AUTH, not argv).
pub fn redis_cli_auth(port: u16, password: &str, args: &[&str]) -> String {
    run(port, Some(password), args)
}

fn run(port: u16, password: Option<&str>, args: &[&str]) -> String {
    let mut command = std::process::Command::new("redis-cli");
    command.arg("-p").arg(port.to_string()).args(args);
    if let Some(password) = password {
        command.env("REDISCLI_AUTH", password);
    }
    let out = command.output().expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `XADD stream * field value ...` with redis-cli; the new entry's id.
pub fn xadd(port: u16, stream: &str, fields: &[(&str, &str)]) -> String {
    let mut args = vec!["XADD", stream, "*"];
    for (field, value) in fields {
        args.extend([*field, *value]);
    }
    let id = redis_cli(port, &args);
    assert!(is_entry_id(&id), "XADD answered {id:?}");
    id
}

/// Is `line` a stream entry id (`<ms>-<seq>`)?
pub fn is_entry_id(line: &str) -> bool {
    line.split_once('-').is_some_and(|(ms, seq)| {
        ms.len() >= 10
            && ms.bytes().all(|b| b.is_ascii_digit())
            && !seq.is_empty()
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

/// Every entry of `stream` as its field map (`XRANGE stream - +`).
pub fn entries(port: u16, stream: &str) -> Vec<BTreeMap<String, String>> {
    let raw = redis_cli(port, &["--raw", "XRANGE", stream, "-", "+"]);
    let lines: Vec<&str> = raw.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    // Each entry is an id line, then field and value lines until the next id.
    while i < lines.len() {
        let mut fields = BTreeMap::new();
        i += 1;
        while i + 1 < lines.len() && !is_entry_id(lines[i]) {
            fields.insert(lines[i].to_string(), lines[i + 1].to_string());
            i += 2;
        }
        out.push(fields);
    }
    out
}

/// How many entries of `stream` are pending (delivered, not acknowledged) in `group`.
pub fn pending(port: u16, stream: &str, group: &str) -> u64 {
    redis_cli(port, &["XPENDING", stream, group])
        .lines()
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
