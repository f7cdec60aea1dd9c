//! Interoperability with third-party peers: the Python `websockets` package as client and
//! server, and the chat page in headless Chromium. `scripts/setup-test-deps` installs them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, python, repo_root, run_with_timeout};
use pylon_ws::client::{ClientConfig, connect};
use pylon_ws::{CloseCode, DeflateConfig, Message};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port")
}

/// Runs echo_client.py with `--compression mode` against a node started with
/// `server_args`.
fn run_python_echo_client(server_args: &[&str], mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), server_args);
    let script = repo_root().join("tests/python/echo_client.py");
    let (status, output) = run_with_timeout(
        Command::new(python())
            .arg(script)
            .args(["--compression", mode])
            .arg(server.url("/ws/echo")),
        Duration::from_secs(60),
    );
    assert!(
        status.success(),
        "echo_client.py --compression {mode} failed:\n{output}"
    );
}

#[test]
fn python_client_against_pylon_echo() {
    run_python_echo_client(&[], "none");
}

#[test]
fn python_client_compressed_against_pylon_echo() {
    run_python_echo_client(&[], "deflate");
}

#[test]
fn python_client_compressed_small_window() {
    run_python_echo_client(&["--compression-window-bits", "9"], "deflate");
}

#[test]
fn python_client_against_pylon_without_compression() {
    run_python_echo_client(&["--no-compression"], "expect-none");
}

#[test]
fn python_client_against_pylon_chat() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let script = repo_root().join("tests/python/chat_client.py");
    let (status, output) = run_with_timeout(
        Command::new(python())
            .arg(script)
            .arg(server.url("/ws/chat")),
        Duration::from_secs(60),
    );
    assert!(status.success(), "chat_client.py failed:\n{output}");
}

#[tokio::test]
async fn pylon_client_against_python_server() {
    pylon_client_against_python_server_with("none", ClientConfig::default()).await;
}

#[tokio::test]
async fn pylon_client_compressed_against_python_server() {
    pylon_client_against_python_server_with("deflate", ClientConfig::default()).await;
}

#[tokio::test]
async fn pylon_client_resetting_against_python_server() {
    let config = ClientConfig {
        compression: Some(DeflateConfig {
            no_context_takeover: true,
            peer_no_context_takeover: true,
            max_window_bits: 10,
            min_message_size: 0,
            ..DeflateConfig::default()
        }),
        ..ClientConfig::default()
    };
    pylon_client_against_python_server_with("deflate", config).await;
}

/// Runs the echo checks of the Pylon client against echo_server.py started with
/// `--compression mode`.
async fn pylon_client_against_python_server_with(mode: &str, config: ClientConfig) {
    let port = free_port();
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/echo_server.py"))
        .args(["--port", &port.to_string(), "--compression", mode])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start echo_server.py");
    let stdout = child.stdout.take().expect("piped stdout");
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|line| line.starts_with("READY"))
    });
    let ready = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("echo_server.py ready within 30 s")
        .unwrap();
    assert!(ready, "echo_server.py exited before it was ready");

    let result = async {
        let url = format!("ws://127.0.0.1:{port}/");
        let (mut ws, _) = connect(&url, config).await?;
        let agreed = ws.compression().map(|deflate| deflate.params.to_string());
        if mode == "deflate" {
            assert!(agreed.is_some(), "the Python server declined compression");
        } else {
            assert_eq!(agreed, None);
        }
        let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let repeated = "a line that compresses well with context takeover\n".repeat(3000);
        let messages = [
            Message::text("hello"),
            Message::text("ünïcödé ✓ 𝄞"),
            Message::text(""),
            Message::binary(vec![0u8, 255, 7]),
            Message::binary(big),
            Message::text(repeated.clone()),
            Message::text(repeated),
            Message::binary(vec![0u8; 4 << 20]),
        ];
        for msg in messages {
            ws.send(msg.clone()).await?;
            let echoed = tokio::time::timeout(Duration::from_secs(10), ws.recv())
                .await
                .expect("echo within 10 s")
                .expect("connection open")?;
            assert_eq!(echoed, msg);
        }
        ws.send(Message::Ping(bytes::Bytes::from_static(b"are you there")))
            .await?;
        let pong = tokio::time::timeout(Duration::from_secs(10), ws.recv())
            .await
            .expect("pong within 10 s")
            .expect("connection open")?;
        assert_eq!(
            pong,
            Message::Pong(bytes::Bytes::from_static(b"are you there"))
        );
        ws.close(CloseCode::NORMAL, "bye").await?;
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    result.expect("Pylon client against the Python websockets server");
}

#[test]
fn browser_chat_two_pages_and_restart() {
    let port = free_port();
    let script = repo_root().join("tests/browser/chat.mjs");
    let start = Instant::now();
    let (status, output) = run_with_timeout(
        Command::new("node")
            .arg(script)
            .arg(env!("CARGO_BIN_EXE_pylon"))
            .arg(port.to_string())
            .current_dir(repo_root()),
        Duration::from_secs(180),
    );
    assert!(
        status.success(),
        "browser test failed after {:?}:\n{output}",
        start.elapsed()
    );
}
