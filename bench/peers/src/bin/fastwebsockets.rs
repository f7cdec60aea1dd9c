//! Echo server on fastwebsockets, upgraded through a hyper 1 HTTP/1.1 server: returns every
//! text and binary message unchanged.

use std::convert::Infallible;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = pylon_bench_peers::listen_addr()?;
    let listener = TcpListener::bind(addr).await?;
    eprintln!("fastwebsockets echo listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .with_upgrades();
            if let Err(error) = connection.await {
                eprintln!("HTTP connection failed: {error}");
            }
        });
    }
}

async fn handle(mut request: Request<Incoming>) -> Result<Response<Empty<Bytes>>, Infallible> {
    if !upgrade::is_upgrade_request(&request) {
        let mut response = Response::new(Empty::new());
        *response.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return Ok(response);
    }
    match upgrade::upgrade(&mut request) {
        Ok((response, upgraded)) => {
            tokio::spawn(async move {
                if let Err(error) = echo(upgraded).await {
                    eprintln!("connection failed: {error}");
                }
            });
            Ok(response)
        }
        Err(error) => {
            eprintln!("WebSocket upgrade failed: {error}");
            let mut response = Response::new(Empty::new());
            *response.status_mut() = StatusCode::BAD_REQUEST;
            Ok(response)
        }
    }
}

async fn echo(upgraded: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    // FragmentCollector reassembles fragmented messages. The WebSocket replies to pings and
    // close frames itself (auto_pong and auto_close are on by default).
    let mut ws = FragmentCollector::new(upgraded.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            OpCode::Continuation | OpCode::Ping | OpCode::Pong => {}
        }
    }
}
