//! `wss://` between the pylon-ws client and server, with a self-signed certificate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use pylon_ws::client::{self, ClientConfig, ClientStream};
use pylon_ws::server::{self, ServerConfig, TlsStream};
use pylon_ws::tls::{self, SelfSigned, TlsAcceptor};
use pylon_ws::{CloseCode, CloseFrame, Config, Error, Message, State, WebSocket};
use tokio::net::{TcpListener, TcpStream};

const TEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Starts a TLS echo server on 127.0.0.1 that accepts up to `connections` connections.
async fn spawn_tls_echo(acceptor: TlsAcceptor, connections: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let config = ServerConfig::default();
                let ws_config = config.ws.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let config = config.clone();
                    async move {
                        match server::upgrade(&mut req, &config) {
                            Ok((response, pending)) => {
                                tokio::spawn(async move {
                                    if let Ok(ws) = pending.finish::<TlsStream>().await {
                                        echo(ws).await;
                                    }
                                });
                                Ok::<_, Infallible>(response)
                            }
                            Err(err) => Ok(server::reject(&err)),
                        }
                    }
                });
                let _ = server::serve_tls_connection(stream, &acceptor, service, &ws_config).await;
            });
        }
    });
    addr
}

/// Text that makes the echo server close the connection with code 4000.
const CLOSE_REQUEST: &str = "close with 4000";

async fn echo(mut ws: WebSocket<TlsStream>) {
    while let Some(Ok(message)) = ws.recv().await {
        if message == Message::text(CLOSE_REQUEST) {
            let _ = ws.close(CloseCode(4000), "server says bye").await;
            break;
        }
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && ws.send(message).await.is_err()
        {
            break;
        }
    }
}

fn trusting(cert: &SelfSigned) -> ClientConfig {
    let mut config = ClientConfig::default();
    config.tls.ca_certs.push(cert.cert_der.clone());
    config
}

async fn expect_echo(ws: &mut WebSocket<ClientStream>, message: Message) {
    ws.send(message.clone()).await.unwrap();
    let reply = within("echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, message);
}

#[tokio::test]
async fn wss_echo_with_trusted_ca() {
    let cert = tls::self_signed_localhost().unwrap();
    let addr = spawn_tls_echo(cert.acceptor().unwrap(), 1).await;
    let url = format!("wss://localhost:{}/echo", addr.port());

    let (mut ws, response) = within("connect", client::connect_any(&url, trusting(&cert)))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert!(matches!(ws.get_ref(), ClientStream::Tls(_)));

    expect_echo(&mut ws, Message::text("hello over TLS")).await;
    expect_echo(&mut ws, Message::binary(vec![0u8, 1, 2, 255])).await;
    // Larger than one TLS record (16 KiB), so the message spans several records.
    expect_echo(&mut ws, Message::binary(vec![7u8; 100_000])).await;

    within("close", ws.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
    assert_eq!(ws.state(), State::Closed);
    assert!(within("end of stream", ws.recv()).await.is_none());
}

#[tokio::test]
async fn wss_server_close_code_reaches_client() {
    let cert = tls::self_signed_localhost().unwrap();
    let addr = spawn_tls_echo(cert.acceptor().unwrap(), 1).await;
    let url = format!("wss://127.0.0.1:{}/", addr.port());

    let (mut ws, _) = within("connect", client::connect_any(&url, trusting(&cert)))
        .await
        .unwrap();
    ws.send(Message::text(CLOSE_REQUEST)).await.unwrap();
    let first = within("close frame", ws.recv()).await.unwrap().unwrap();
    let expected = Message::Close(Some(CloseFrame::new(CloseCode(4000), "server says bye")));
    assert_eq!(first, expected);
    assert!(within("end of stream", ws.recv()).await.is_none());
    assert_eq!(ws.state(), State::Closed);
}

#[tokio::test]
async fn wss_rejects_untrusted_certificate_by_default() {
    let cert = tls::self_signed_localhost().unwrap();
    let addr = spawn_tls_echo(cert.acceptor().unwrap(), 1).await;
    let url = format!("wss://localhost:{}/", addr.port());

    let result = within(
        "connect",
        client::connect_any(&url, ClientConfig::default()),
    )
    .await;
    let Err(err) = result else {
        panic!("connect to an untrusted certificate succeeded");
    };
    assert!(matches!(err, Error::Tls(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(message.contains("ClientConfig::tls.ca_certs"), "{message}");
}

#[tokio::test]
async fn wss_rejects_certificate_of_other_ca() {
    let server_cert = tls::self_signed_localhost().unwrap();
    let other_cert = tls::self_signed_localhost().unwrap();
    let addr = spawn_tls_echo(server_cert.acceptor().unwrap(), 1).await;
    let url = format!("wss://localhost:{}/", addr.port());

    let result = within("connect", client::connect_any(&url, trusting(&other_cert))).await;
    assert!(matches!(result, Err(Error::Tls(_))), "{result:?}");
}

#[tokio::test]
async fn wss_dangerous_mode_accepts_untrusted_certificate() {
    let cert = tls::self_signed_localhost().unwrap();
    let addr = spawn_tls_echo(cert.acceptor().unwrap(), 1).await;
    let url = format!("wss://localhost:{}/", addr.port());
    let mut config = ClientConfig::default();
    config.tls.dangerous_accept_any_certificate = true;

    let (mut ws, _) = within("connect", client::connect_any(&url, config))
        .await
        .unwrap();
    expect_echo(&mut ws, Message::text("unverified")).await;
}

#[tokio::test]
async fn ca_pem_file_is_trusted() {
    let cert = tls::self_signed_localhost().unwrap();
    let dir = std::env::temp_dir().join(format!("pylon-ws-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, &cert.cert_pem).unwrap();
    let addr = spawn_tls_echo(cert.acceptor().unwrap(), 1).await;

    let mut config = ClientConfig::default();
    config.tls.add_ca_pem_file(&ca_path).unwrap();
    let url = format!("wss://localhost:{}/", addr.port());
    let (mut ws, _) = within("connect", client::connect_any(&url, config))
        .await
        .unwrap();
    expect_echo(&mut ws, Message::text("trusted from a file")).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn server_pem_files_load() {
    let cert = tls::self_signed_localhost().unwrap();
    let dir = std::env::temp_dir().join(format!("pylon-ws-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();

    assert!(tls::acceptor_from_pem_files(&cert_path, &key_path).is_ok());
    let swapped = tls::acceptor_from_pem_files(&key_path, &cert_path);
    assert!(
        matches!(swapped, Err(Error::TlsConfig(_))),
        "swapped files were accepted"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn plain_client_to_tls_server_fails() {
    let cert = tls::self_signed_localhost().unwrap();
    let addr = spawn_tls_echo(cert.acceptor().unwrap(), 1).await;
    let url = format!("ws://127.0.0.1:{}/", addr.port());

    let result = within(
        "connect",
        client::connect_any(&url, ClientConfig::default()),
    )
    .await;
    assert!(
        result.is_err(),
        "a plain upgrade to a TLS listener succeeded"
    );
}

#[tokio::test]
async fn tls_handshake_times_out() {
    let cert = tls::self_signed_localhost().unwrap();
    let acceptor = cert.acceptor().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The client connects over TCP and never starts the TLS handshake.
    let _silent = TcpStream::connect(addr).await.unwrap();
    let (stream, _) = listener.accept().await.unwrap();
    let config = Config {
        handshake_timeout: Duration::from_millis(200),
        ..Config::default()
    };
    let service = service_fn(|_req: Request<Incoming>| async {
        Ok::<_, Infallible>(hyper::Response::new(
            http_body_util::Empty::<bytes::Bytes>::new(),
        ))
    });

    let result = within(
        "TLS handshake timeout",
        server::serve_tls_connection(stream, &acceptor, service, &config),
    )
    .await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
}

#[test]
fn fingerprint_is_colon_separated_sha256() {
    let cert = tls::self_signed_localhost().unwrap();
    let fingerprint = cert.sha256_fingerprint();
    assert_eq!(fingerprint.len(), 32 * 3 - 1, "{fingerprint}");
    assert!(
        fingerprint
            .split(':')
            .all(|byte| byte.len() == 2 && byte.chars().all(|c| c.is_ascii_hexdigit())),
        "{fingerprint}"
    );
}
