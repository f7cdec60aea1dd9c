//! HTTP/3 WebSocket interop with aioquic 1.7.2 in both directions: the aioquic client
//! in tests/python/h3_ws_client.py against `pylon serve`, and Pylon's HTTP/3 client
//! against the aioquic echo server in tests/python/h3_ws_server.py.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, python, repo_root, run_with_timeout, terminate_child};
use pylon_ws::client::ClientConfig;
use pylon_ws::h3::H3Client;
use pylon_ws::tls::ClientTls;
use pylon_ws::{CloseCode, Message};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn aioquic_client_against_pylon_serve() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let (status, output) = run_with_timeout(
        Command::new(python())
            .arg(repo_root().join("tests/python/h3_ws_client.py"))
            .args(["--port", &server.addr.port().to_string()]),
        Duration::from_secs(60),
    );
    assert!(status.success(), "h3_ws_client.py failed:\n{output}");
    assert!(output.contains("all checks passed"), "{output}");
}

#[tokio::test]
async fn pylon_client_against_aioquic_server() {
    let dir = tempfile::tempdir().unwrap();
    let (status, output) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_pylon"))
            .args(["cert", "--out"])
            .arg(dir.path()),
        Duration::from_secs(30),
    );
    assert!(status.success(), "pylon cert failed:\n{output}");
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");

    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/h3_ws_server.py"))
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--port", "0", "--lifetime", "120"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start h3_ws_server.py");
    let stdout = child.stdout.take().expect("piped stdout");
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("READY ").map(str::to_owned))
    });
    let port: u16 = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("h3_ws_server.py ready within 30 s")
        .unwrap()
        .expect("h3_ws_server.py exited before it was ready")
        .parse()
        .unwrap();

    let mut tls = ClientTls {
        webpki_roots: false,
        ..ClientTls::default()
    };
    tls.add_ca_pem_file(&cert).unwrap();
    let config = ClientConfig {
        tls,
        ..ClientConfig::default()
    };
    let client = H3Client::new(&config.tls, STEP_TIMEOUT).unwrap();
    let url = format!("wss://localhost:{port}/echo");
    let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let messages = [
        Message::text("hello"),
        Message::text("ünïcödé ✓ 𝄞"),
        Message::text(""),
        Message::binary(vec![0u8, 255, 7]),
        Message::binary(big),
    ];
    // Three WebSockets on the one pooled QUIC connection.
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (ws, response) = client.connect(&url, &config).await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            ws.compression().is_none(),
            "the server offers no compression"
        );
        sockets.push(ws);
    }
    for ws in &mut sockets {
        for message in &messages {
            ws.send(message.clone()).await.unwrap();
            let reply = tokio::time::timeout(STEP_TIMEOUT, ws.recv())
                .await
                .expect("no echo within the timeout")
                .expect("websocket ended")
                .expect("websocket failed");
            assert_eq!(&reply, message);
        }
    }
    for mut ws in sockets {
        tokio::time::timeout(STEP_TIMEOUT, ws.close(CloseCode::NORMAL, "done"))
            .await
            .expect("close timed out")
            .unwrap();
    }
    terminate_child(&mut child, "h3_ws_server.py", Duration::from_secs(10));
}
