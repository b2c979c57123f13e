//! A minimal HTTP/1.0 GET for ottoscaler's `/readyz` and `/metrics` on loopback (the
//! harness needs no HTTP client crate for two endpoints).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Time to connect; the server is on loopback, so this only trips when nobody listens.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for the whole response; `/metrics` with 10,000 workers is still small.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET path` on `addr`: (status, body).
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .with_context(|| format!("connecting to {addr} timed out"))?
        .with_context(|| format!("cannot connect to {addr}"))?;
    let exchange = async {
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(RESPONSE_TIMEOUT, exchange)
        .await
        .with_context(|| format!("GET {path} on {addr} timed out"))??;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("GET {path} on {addr}: malformed response");
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("GET {path} on {addr}: no status in {head:?}"))?;
    Ok((status, body.to_string()))
}
