//! Interoperability with third-party peers: the Python `websockets` package as client and
//! server, and the chat page in headless Chromium. `scripts/setup-test-deps` installs them.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Server, python, repo_root, run_with_timeout};
use pylon_ws::client::{ClientConfig, connect};
use pylon_ws::{CloseCode, Message};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind an ephemeral port")
}

#[test]
fn python_client_against_pylon_echo() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let script = repo_root().join("tests/python/echo_client.py");
    let (status, output) = run_with_timeout(
        Command::new(python())
            .arg(script)
            .arg(server.url("/ws/echo")),
        Duration::from_secs(60),
    );
    assert!(status.success(), "echo_client.py failed:\n{output}");
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
    let port = free_port();
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/echo_server.py"))
        .args(["--port", &port.to_string()])
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
        let (mut ws, _) = connect(&url, ClientConfig::default()).await?;
        let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
        let messages = [
            Message::text("hello"),
            Message::text("ünïcödé ✓ 𝄞"),
            Message::text(""),
            Message::binary(vec![0u8, 255, 7]),
            Message::binary(big),
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
