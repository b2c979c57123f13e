//! Free loopback ports for the servers we start.

use std::net::{Ipv4Addr, TcpListener};

use anyhow::{Context, Result};

/// Asks the kernel for a currently free TCP port on 127.0.0.1.
///
/// The port is released before the server binds it, so another process could take it
/// in between; callers that care retry their start with a new port. The kernel hands
/// out ephemeral ports round-robin, so an immediate reuse is unlikely.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr().context("no local address")?.port())
}
