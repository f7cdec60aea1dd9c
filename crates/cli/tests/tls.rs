//! `pylon serve` over TLS: `--tls-self-signed`, `--tls-cert`/`--tls-key` with a pair from
//! `pylon cert`, the pylon-ws client and the Python `websockets` client over `wss://`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, python, repo_root, run_with_timeout};
use pylon_ws::client::{ClientConfig, ClientStream, connect_any};
use pylon_ws::{CloseCode, Error, Message, State, WebSocket};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn wss_url(server: &Server, path: &str) -> String {
    format!("wss://localhost:{}{path}", server.addr.port())
}

/// Runs `pylon cert --out dir` and returns its exit status and output.
fn run_cert_command(dir: &Path) -> (std::process::ExitStatus, String) {
    run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_pylon"))
            .args(["cert", "--out"])
            .arg(dir),
        Duration::from_secs(30),
    )
}

async fn expect_echo(ws: &mut WebSocket<ClientStream>, message: Message) {
    tokio::time::timeout(STEP_TIMEOUT, ws.send(message.clone()))
        .await
        .expect("send timed out")
        .unwrap();
    let reply = tokio::time::timeout(STEP_TIMEOUT, ws.recv())
        .await
        .expect("no echo in time")
        .expect("connection ended before the echo")
        .unwrap();
    assert_eq!(reply, message);
}

async fn check_echo_and_close(mut ws: WebSocket<ClientStream>) {
    expect_echo(&mut ws, Message::text("hello over wss")).await;
    expect_echo(&mut ws, Message::binary(vec![9u8; 70_000])).await;
    tokio::time::timeout(STEP_TIMEOUT, ws.close(CloseCode::NORMAL, "done"))
        .await
        .expect("close timed out")
        .unwrap();
    assert_eq!(ws.state(), State::Closed);
}

#[tokio::test]
async fn self_signed_serves_wss_echo() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let mut config = ClientConfig::default();
    config.tls.dangerous_accept_any_certificate = true;

    let (ws, response) = connect_any(&wss_url(&server, "/ws/echo"), config)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    check_echo_and_close(ws).await;
}

#[tokio::test]
async fn self_signed_rejected_by_default_client() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);

    let result = connect_any(&wss_url(&server, "/ws/echo"), ClientConfig::default()).await;
    let Err(err) = result else {
        panic!("the default client trusted a self-signed certificate");
    };
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn cert_command_pair_serves_trusted_wss() {
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("tls");
    let (status, output) = run_cert_command(&cert_dir);
    assert!(status.success(), "pylon cert failed:\n{output}");
    assert!(output.contains("SHA-256 fingerprint"), "{output}");
    let cert = cert_dir.join("cert.pem");
    let key = cert_dir.join("key.pem");

    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let mut config = ClientConfig::default();
    config.tls.add_ca_pem_file(&cert).unwrap();
    let (ws, _) = connect_any(&wss_url(&server, "/ws/echo"), config)
        .await
        .unwrap();
    check_echo_and_close(ws).await;
}

#[test]
fn cert_command_keeps_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let (status, output) = run_cert_command(dir.path());
    assert!(status.success(), "first pylon cert failed:\n{output}");
    let first = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();

    let (status, output) = run_cert_command(dir.path());
    assert!(!status.success(), "second pylon cert overwrote the files");
    assert!(output.contains("remove it first"), "{output}");
    let second = std::fs::read_to_string(dir.path().join("cert.pem")).unwrap();
    assert_eq!(first, second);
}

#[test]
fn tls_cert_without_key_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (status, output) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_pylon"))
            .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", "cert.pem"])
            .arg("--data-dir")
            .arg(dir.path()),
        Duration::from_secs(30),
    );
    assert!(
        !status.success(),
        "serve started without --tls-key:\n{output}"
    );
    assert!(output.contains("--tls-key"), "{output}");
}

#[test]
fn python_client_over_wss() {
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("tls");
    let (status, output) = run_cert_command(&cert_dir);
    assert!(status.success(), "pylon cert failed:\n{output}");
    let cert = cert_dir.join("cert.pem");
    let key = cert_dir.join("key.pem");
    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );

    let script = repo_root().join("tests/python/echo_client.py");
    let (status, output) = run_with_timeout(
        Command::new(python())
            .arg(script)
            .arg("--ca-file")
            .arg(&cert)
            .arg(format!("https://127.0.0.1:{}/ws/echo", server.addr.port())),
        Duration::from_secs(60),
    );
    assert!(
        status.success(),
        "echo_client.py over wss failed:\n{output}"
    );
    assert!(output.contains("connected to wss://"), "{output}");
}
