//! `pylon serve --tls-cert --tls-key` rereads both files on SIGHUP: new handshakes get
//! the new certificate, open WebSockets go on, and an invalid file keeps the old one.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Server, run_with_timeout};
use pylon_ws::client::{ClientConfig, ClientStream, connect_any};
use pylon_ws::{Message, WebSocket};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes a new self-signed pair with `pylon cert` into `dir`.
fn new_pair(dir: &Path) {
    let (status, output) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_pylon"))
            .args(["cert", "--out"])
            .arg(dir),
        Duration::from_secs(30),
    );
    assert!(status.success(), "pylon cert failed:\n{output}");
}

fn send_sighup(server: &Server) {
    let status = Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP failed");
}

/// Connects to `/ws/echo` trusting only the certificate in `ca`.
async fn connect_trusting(
    server: &Server,
    ca: &Path,
) -> Result<WebSocket<ClientStream>, pylon_ws::Error> {
    let mut config = ClientConfig::default();
    config.tls.webpki_roots = false;
    config.tls.add_ca_pem_file(ca).unwrap();
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());
    tokio::time::timeout(STEP_TIMEOUT, connect_any(&url, config))
        .await
        .expect("connect timed out")
        .map(|(ws, _)| ws)
}

/// Retries [`connect_trusting`] until it succeeds, for up to 10 seconds, because the
/// signal is handled asynchronously.
async fn wait_until_trusted(server: &Server, ca: &Path) -> WebSocket<ClientStream> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match connect_trusting(server, ca).await {
            Ok(ws) => return ws,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(err) => panic!("server still presents the old certificate: {err}"),
        }
    }
}

async fn expect_echo(ws: &mut WebSocket<ClientStream>, text: &'static str) {
    tokio::time::timeout(STEP_TIMEOUT, ws.send(Message::text(text)))
        .await
        .expect("send timed out")
        .unwrap();
    let reply = tokio::time::timeout(STEP_TIMEOUT, ws.recv())
        .await
        .expect("no echo in time")
        .expect("connection ended before the echo")
        .unwrap();
    assert_eq!(reply, Message::text(text));
}

#[tokio::test]
async fn sighup_reloads_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first");
    let second = dir.path().join("second");
    new_pair(&first);
    new_pair(&second);
    let live = dir.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let cert = live.join("cert.pem");
    let key = live.join("key.pem");
    std::fs::copy(first.join("cert.pem"), &cert).unwrap();
    std::fs::copy(first.join("key.pem"), &key).unwrap();

    let mut server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let mut open = connect_trusting(&server, &first.join("cert.pem"))
        .await
        .expect("first certificate not served");
    expect_echo(&mut open, "before reload").await;

    std::fs::copy(second.join("cert.pem"), &cert).unwrap();
    std::fs::copy(second.join("key.pem"), &key).unwrap();
    send_sighup(&server);
    let mut renewed = wait_until_trusted(&server, &second.join("cert.pem")).await;
    expect_echo(&mut renewed, "after reload").await;
    let old = connect_trusting(&server, &first.join("cert.pem")).await;
    assert!(old.is_err(), "the old certificate is still served");
    expect_echo(&mut open, "open across reload").await;

    std::fs::write(&cert, "not a certificate\n").unwrap();
    send_sighup(&server);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        server.is_running(),
        "an invalid certificate file stopped the node"
    );
    let mut after_failed = connect_trusting(&server, &second.join("cert.pem"))
        .await
        .expect("an invalid file replaced the working certificate");
    expect_echo(&mut after_failed, "after failed reload").await;
}
