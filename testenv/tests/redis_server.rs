//! The real redis-server, started per test on a free loopback port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use testenv::RedisServer;

/// Sends one inline command and returns the first reply line (plus the bulk payload
/// for `$` replies).
fn command(port: u16, line: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set timeout");
    stream
        .write_all(format!("{line}\r\n").as_bytes())
        .expect("send");
    let mut reader = BufReader::new(stream);
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("reply");
    if let Some(len) = reply
        .strip_prefix('$')
        .and_then(|l| l.trim().parse::<usize>().ok())
    {
        let mut payload = vec![0; len + 2];
        reader.read_exact(&mut payload).expect("bulk payload");
        return String::from_utf8_lossy(&payload[..len]).into_owned();
    }
    reply.trim_end().to_string()
}

#[test]
fn redis_server_answers_on_its_port_and_is_killed_on_drop() {
    let server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(command(port, "PING"), "+PONG");
    let pid = server.pid().expect("running");
    drop(server);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "redis {pid} survived drop"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port still open"
    );
}

#[test]
fn without_aof_data_is_gone_after_start_again() {
    let mut server = RedisServer::start();
    assert_eq!(command(server.port(), "SET k v"), "+OK");
    server.stop();
    server.start_again();
    assert_eq!(command(server.port(), "EXISTS k"), ":0");
}

#[test]
fn with_aof_data_survives_a_stop_and_even_a_kill_on_the_same_port() {
    let mut server = RedisServer::start_with_aof();
    let port = server.port();
    assert_eq!(command(port, "SET before-stop 1"), "+OK");
    server.stop();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped");
    server.start_again();
    assert_eq!(server.port(), port, "same port after start_again");
    assert_eq!(command(port, "GET before-stop"), "1");

    assert_eq!(command(port, "SET before-kill 2"), "+OK");
    server.kill();
    server.start_again();
    assert_eq!(command(port, "GET before-kill"), "2");
}
