//! Readiness and liveness probes: the spec read from the pod (pure), the kubelet's
//! threshold logic (pure), and the HTTP and TCP checks. Exec probes run in a sandbox
//! of the container (see the pod task).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::expand::ConfigError;

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// GET `path` on the pod IP; 200-399 is a success.
    Http {
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    /// A TCP connection to the pod IP is accepted.
    Tcp { port: u16 },
    /// The command exits 0 (run in a sandbox like the container's).
    Exec { command: Vec<String> },
}

/// A probe with the kubelet's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// The check.
    pub check: Check,
    /// `initialDelaySeconds` (0).
    pub initial_delay: Duration,
    /// `periodSeconds` (10).
    pub period: Duration,
    /// `timeoutSeconds` (1).
    pub timeout: Duration,
    /// `failureThreshold` (3).
    pub failure_threshold: u32,
    /// `successThreshold` (1).
    pub success_threshold: u32,
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(
        value
            .and_then(|v| u64::try_from(v).ok())
            .filter(|v| *v > 0)
            .unwrap_or(default),
    )
}

fn count(value: Option<i32>, default: u32) -> u32 {
    value
        .and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

/// A port given by number or by the name of a container port.
fn port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, ConfigError> {
    let number = match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => match name.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| p.container_port),
        },
    };
    number
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| ConfigError(format!("probe port {port:?} is not a container port")))
}

/// Reads a probe of the pod spec.
pub fn spec(probe: &Probe, ports: &[ContainerPort]) -> Result<ProbeSpec, ConfigError> {
    let check = if let Some(http) = &probe.http_get {
        if http.scheme.as_deref().is_some_and(|s| s != "HTTP") {
            return Err(ConfigError(
                "HTTPS probes are not supported by kubesim".into(),
            ));
        }
        Check::Http {
            port: port(&http.port, ports)?,
            path: http.path.clone().unwrap_or_else(|| "/".into()),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        Check::Tcp {
            port: port(&tcp.port, ports)?,
        }
    } else if let Some(exec) = &probe.exec {
        Check::Exec {
            command: exec.command.clone().unwrap_or_default(),
        }
    } else {
        return Err(ConfigError(
            "only httpGet, tcpSocket and exec probes are supported".into(),
        ));
    };
    Ok(ProbeSpec {
        check,
        initial_delay: Duration::from_secs(
            probe
                .initial_delay_seconds
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(0),
        ),
        period: seconds(probe.period_seconds, 10),
        timeout: seconds(probe.timeout_seconds, 1),
        failure_threshold: count(probe.failure_threshold, 3),
        success_threshold: count(probe.success_threshold, 1),
    })
}

/// The result of a probe over time: it turns to failure after `failureThreshold`
/// failures in a row and back to success after `successThreshold` successes in a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// The current result.
    pub ok: bool,
    streak: u32,
}

impl Tracker {
    /// A readiness probe starts failed: the container is not ready until it passes.
    pub fn readiness() -> Tracker {
        Tracker {
            ok: false,
            streak: 0,
        }
    }

    /// A liveness probe starts passed.
    pub fn liveness() -> Tracker {
        Tracker {
            ok: true,
            streak: 0,
        }
    }

    /// Takes in one probe outcome; returns whether the result changed.
    pub fn observe(&mut self, success: bool, spec: &ProbeSpec) -> bool {
        if success == self.ok {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if success {
            spec.success_threshold
        } else {
            spec.failure_threshold
        };
        if self.streak >= needed {
            self.ok = success;
            self.streak = 0;
            return true;
        }
        false
    }
}

/// GET `path` from `ip:port` within `timeout`: a status of 200-399 is a success.
pub async fn http_get(
    ip: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect((ip, port)).await.ok()?;
        let mut request = format!(
            "GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nUser-Agent: kube-probe/kubesim\r\nAccept: */*\r\nConnection: close\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = stream.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Some(status_ok(&head))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Whether an HTTP response starting with `head` has a 2xx or 3xx status.
pub fn status_ok(head: &[u8]) -> bool {
    let line = String::from_utf8_lossy(head);
    let code = line
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    code.is_some_and(|c| (200..400).contains(&c))
}

/// A TCP connection to `ip:port` is accepted within `timeout`.
pub async fn tcp_open(ip: &str, port: u16, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, TcpStream::connect((ip, port))).await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction};

    fn http_probe() -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("http".into()),
                ..HTTPGetAction::default()
            }),
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..Probe::default()
        }
    }

    #[test]
    fn probe_specs_take_named_ports_and_the_kubelet_defaults() {
        let ports = vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..ContainerPort::default()
        }];
        let s = spec(&http_probe(), &ports).unwrap();
        assert_eq!(
            s.check,
            Check::Http {
                port: 8080,
                path: "/readyz".into(),
                headers: vec![]
            }
        );
        assert_eq!(s.period, Duration::from_secs(5));
        assert_eq!(s.timeout, Duration::from_secs(1));
        assert_eq!((s.failure_threshold, s.success_threshold), (2, 1));
        assert_eq!(s.initial_delay, Duration::ZERO);
        assert!(spec(&http_probe(), &[]).is_err(), "unknown port name");
        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["redis-cli".into(), "ping".into()]),
            }),
            ..Probe::default()
        };
        let s = spec(&exec, &[]).unwrap();
        assert_eq!(s.period, Duration::from_secs(10));
        assert_eq!(s.failure_threshold, 3);
    }

    fn thresholds(failure: u32, success: u32) -> ProbeSpec {
        ProbeSpec {
            check: Check::Tcp { port: 1 },
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failure_threshold: failure,
            success_threshold: success,
        }
    }

    #[test]
    fn results_flip_only_after_the_thresholds() {
        let spec = thresholds(3, 2);
        let mut ready = Tracker::readiness();
        assert!(!ready.observe(true, &spec));
        assert!(!ready.ok);
        assert!(ready.observe(true, &spec), "2 successes make it ready");
        assert!(ready.ok);
        assert!(!ready.observe(false, &spec));
        assert!(!ready.observe(false, &spec));
        assert!(!ready.observe(true, &spec), "a success resets the failures");
        assert!(!ready.observe(false, &spec));
        assert!(!ready.observe(false, &spec));
        assert!(ready.observe(false, &spec), "3 failures in a row");
        assert!(!ready.ok);

        let mut alive = Tracker::liveness();
        assert!(alive.ok);
        let spec = thresholds(1, 1);
        assert!(alive.observe(false, &spec));
        assert!(!alive.ok);
    }

    #[test]
    fn http_status_lines_are_judged_like_the_kubelet() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.1 302 Found\r\n"));
        assert!(!status_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_ok(b"garbage"));
        assert!(!status_ok(b""));
    }
}
