//! What `/proc` tells about a process: peak and current resident memory, CPU time.

use anyhow::{Context, Result};

/// Resident memory of a process, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// VmHWM: the peak resident set size since the process started.
    pub peak: u64,
    /// VmRSS: the resident set size now.
    pub current: u64,
}

/// VmHWM and VmRSS from `/proc/PID/status`.
pub fn memory(pid: u32) -> Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    parse_memory(&status).with_context(|| format!("no VmHWM/VmRSS in /proc/{pid}/status"))
}

fn parse_memory(status: &str) -> Option<Memory> {
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 1024)
    };
    Some(Memory {
        peak: kib("VmHWM:")?,
        current: kib("VmRSS:")?,
    })
}

/// How many of the process' open file descriptors are sockets (its connections, mostly
/// to the API server: HTTP/1.1 holds one per request in flight).
pub fn sockets(pid: u32) -> Option<usize> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count(),
    )
}

/// User + system CPU seconds the process has used so far (`/proc/PID/stat` fields 14
/// and 15, in clock ticks of 1/100 s, the value on every Linux architecture we run on).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces; fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_in_bytes() {
        let status =
            "Name:\tottoscaler\nVmPeak:\t 900 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(
            parse_memory(status),
            Some(Memory {
                peak: 2048 * 1024,
                current: 1024 * 1024
            })
        );
        assert_eq!(parse_memory("Name: x\n"), None);
    }

    #[test]
    fn cpu_time_skips_a_command_name_with_spaces() {
        let stat = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn our_own_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        let m = memory(me).expect("own status");
        assert!(m.peak >= m.current && m.current > 0);
        assert!(cpu_seconds(me).is_some());
        assert!(sockets(me).is_some());
    }
}
