//! Interoperability with the Node.js `ws` package as client and server, through the
//! scripts in `tests/node`. `scripts/setup-test-deps` installs `ws` into `node_modules` at
//! the version pinned in `package-lock.json`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use common::{Server, repo_root, run_with_timeout};
use http::header::SEC_WEBSOCKET_EXTENSIONS;
use pylon_ws::client::{ClientConfig, connect};
use pylon_ws::{CloseCode, Message, State, WebSocket};
use tokio::net::TcpStream;

/// Time limit of one send, echo or close step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of a script in `tests/node`, after checking that the `ws` package is installed.
fn node_script(name: &str) -> PathBuf {
    let ws_package = repo_root().join("node_modules/ws/package.json");
    assert!(
        ws_package.exists(),
        "missing {}: run scripts/setup-test-deps first",
        ws_package.display()
    );
    repo_root().join("tests/node").join(name)
}

/// Runs `echo_client.mjs` against a fresh `pylon serve` started with `server_args` and
/// returns its output, after asserting that every check passed.
fn run_ws_client_against_pylon(server_args: &[&str], client_args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), server_args);
    let (status, output) = run_with_timeout(
        Command::new("node")
            .arg(node_script("echo_client.mjs"))
            .arg(server.url("/ws/echo"))
            .args(client_args)
            .env_remove("PYLON_EXPECT_DEFLATE")
            .current_dir(repo_root()),
        Duration::from_secs(120),
    );
    assert!(status.success(), "echo_client.mjs failed:\n{output}");
    assert!(
        output.contains("echo_client: all checks passed"),
        "echo_client.mjs exited 0 without its closing line:\n{output}"
    );
    output
}

#[test]
fn ws_client_against_pylon_echo() {
    let output = run_ws_client_against_pylon(&[], &[]);
    assert!(
        !output.contains("permessage-deflate"),
        "no extension was offered, but the output mentions one:\n{output}"
    );
}

#[test]
fn ws_client_compressed_against_pylon_echo() {
    let output = run_ws_client_against_pylon(&[], &["--compress"]);
    assert!(
        output.contains("permessage-deflate: negotiated"),
        "pylon serve did not agree to the ws client's permessage-deflate offer:\n{output}"
    );
}

#[test]
fn ws_client_offer_declined_by_pylon() {
    let output = run_ws_client_against_pylon(&["--no-compression"], &["--compress"]);
    assert!(
        output.contains("permessage-deflate: offered, declined by the server"),
        "pylon serve --no-compression agreed to permessage-deflate:\n{output}"
    );
}

/// A `tests/node/echo_server.mjs` child process, killed when dropped.
struct NodeEchoServer {
    child: Child,
    port: u16,
    /// Lines of the server's stdout, read by a background thread.
    stdout_lines: mpsc::Receiver<String>,
}

impl NodeEchoServer {
    /// Starts the server on an OS-chosen loopback port and waits for its `READY` line.
    fn start(extra_args: &[&str]) -> NodeEchoServer {
        let mut child = Command::new("node")
            .arg(node_script("echo_server.mjs"))
            .args(["--port", "0"])
            .args(extra_args)
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .spawn()
            .expect("failed to start node tests/node/echo_server.mjs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                eprintln!("[echo_server.mjs] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = NodeEchoServer {
            child,
            port: 0,
            stdout_lines: rx,
        };
        let ready = server.next_line(Duration::from_secs(30));
        server.port = ready
            .strip_prefix("READY ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| {
                panic!("expected `READY <port>` from echo_server.mjs, got {ready:?}")
            });
        server
    }

    fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/", self.port)
    }

    /// Returns the next line of the server's stdout, waiting at most `timeout`.
    fn next_line(&self, timeout: Duration) -> String {
        match self.stdout_lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("echo_server.mjs printed no line within {timeout:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("echo_server.mjs closed its stdout before printing the expected line")
            }
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        common::terminate_child(&mut self.child, "echo_server.mjs", timeout)
    }
}

impl Drop for NodeEchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn describe(message: &Message) -> String {
    let kind = match message {
        Message::Text(_) => "text",
        Message::Binary(_) => "binary",
        Message::Ping(_) => "ping",
        Message::Pong(_) => "pong",
        Message::Close(_) => "close",
    };
    format!("{kind} message of {} bytes", message.len())
}

/// Receives the next message, panicking with `step` in the message if none arrives within
/// `STEP_TIMEOUT`, the connection ends or receiving fails.
async fn recv_within(ws: &mut WebSocket<TcpStream>, step: &str) -> Message {
    match tokio::time::timeout(STEP_TIMEOUT, ws.recv()).await {
        Err(_) => panic!("{step}: nothing received within {STEP_TIMEOUT:?}"),
        Ok(None) => panic!("{step}: the connection ended"),
        Ok(Some(Err(error))) => panic!("{step}: receiving failed: {error}"),
        Ok(Some(Ok(message))) => message,
    }
}

async fn send_within(ws: &mut WebSocket<TcpStream>, step: &str, message: Message) {
    match tokio::time::timeout(STEP_TIMEOUT, ws.send(message)).await {
        Err(_) => panic!("{step}: send not finished within {STEP_TIMEOUT:?}"),
        Ok(Err(error)) => panic!("{step}: sending failed: {error}"),
        Ok(Ok(())) => {}
    }
}

async fn check_echo(ws: &mut WebSocket<TcpStream>, name: &str, message: Message) {
    send_within(ws, name, message.clone()).await;
    let echoed = recv_within(ws, name).await;
    assert_eq!(
        describe(&echoed),
        describe(&message),
        "{name}: the echo differs in type or size"
    );
    assert!(
        echoed == message,
        "{name}: echo of the {} differs from what was sent",
        describe(&message)
    );
}

/// Drives echo_server.mjs with Pylon's client: echoes of text, binary, empty and 1 MiB
/// messages, a ping, and a close handshake whose code both sides must see. With
/// `server_deflate`, the server accepts a permessage-deflate offer.
fn run_pylon_client_against_ws_server(server_deflate: bool) {
    let server_args: &[&str] = if server_deflate { &["--compress"] } else { &[] };
    let mut server = NodeEchoServer::start(server_args);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    runtime.block_on(async {
        let (mut ws, response) = connect(&server.url(), ClientConfig::default())
            .await
            .expect("connect to echo_server.mjs");
        let extensions = response.headers().get(SEC_WEBSOCKET_EXTENSIONS);
        if server_deflate {
            // Pylon's client offers permessage-deflate by default.
            let agreed = extensions
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default();
            assert!(
                agreed.starts_with("permessage-deflate"),
                "echo_server.mjs --compress did not agree to permessage-deflate: {extensions:?}"
            );
        } else {
            assert_eq!(
                extensions, None,
                "echo_server.mjs without --compress agreed to an extension"
            );
        }

        let big_binary: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        // 4-byte characters make frame and read boundaries likely to split a code point.
        let big_text = "ab🚀".repeat((1 << 20) / 6);
        let messages = [
            ("ASCII text", Message::text("hello, ws")),
            ("multi-byte UTF-8 text", Message::text("ünïcödé ✓ 𝄞 日本語")),
            ("empty text", Message::text("")),
            ("binary", Message::binary((0..=255u8).collect::<Vec<u8>>())),
            ("empty binary", Message::binary(Vec::new())),
            ("1 MiB binary", Message::binary(big_binary)),
            ("1 MiB UTF-8 text", Message::text(big_text)),
        ];
        for (name, message) in messages {
            check_echo(&mut ws, name, message).await;
        }

        let payload = Bytes::from_static(b"pylon-ping");
        send_within(&mut ws, "ping", Message::Ping(payload.clone())).await;
        let pong = recv_within(&mut ws, "ping").await;
        assert_eq!(
            pong,
            Message::Pong(payload),
            "ping: expected a pong with the same payload"
        );

        // `WebSocket::close` discards the peer's close frame, so send the close frame and
        // read until the connection ends to see which code the server returned.
        let close = Message::close(CloseCode::NORMAL, "echo checks done");
        send_within(&mut ws, "close", close).await;
        let mut server_close = None;
        loop {
            match tokio::time::timeout(STEP_TIMEOUT, ws.recv()).await {
                Err(_) => panic!("close: handshake not finished within {STEP_TIMEOUT:?}"),
                Ok(None) => break,
                Ok(Some(Err(error))) => panic!("close: receiving failed: {error}"),
                Ok(Some(Ok(Message::Close(frame)))) => server_close = Some(frame),
                Ok(Some(Ok(other))) => panic!("close: unexpected {}", describe(&other)),
            }
        }
        let server_close = server_close.expect("close: the server sent no close frame");
        let code = server_close.map(|frame| frame.code);
        assert_eq!(
            code,
            Some(CloseCode::NORMAL),
            "close: expected the server to return code 1000"
        );
        assert_eq!(ws.state(), State::Closed, "close: handshake not finished");
    });

    assert_eq!(
        server.next_line(STEP_TIMEOUT),
        r#"CLOSED code=1000 clean=true reason="echo checks done""#,
        "echo_server.mjs did not see the close code and reason that the client sent"
    );
    let status = server.terminate(Duration::from_secs(10));
    assert!(
        status.success(),
        "echo_server.mjs exited with {status} on SIGTERM"
    );
}

#[test]
fn pylon_client_against_ws_server() {
    run_pylon_client_against_ws_server(false);
}

#[test]
fn pylon_client_against_deflate_ws_server() {
    run_pylon_client_against_ws_server(true);
}
