//! Echo server on wtx: returns every text and binary message unchanged.

use tokio::net::{TcpListener, TcpStream};
use wtx::collection::Vector;
use wtx::web_socket::{OpCode, WebSocketAcceptor, WebSocketPayloadOrigin};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = pylon_bench_peers::listen_addr()?;
    let listener = TcpListener::bind(addr).await?;
    eprintln!("wtx echo listening on {addr}");
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = echo(stream).await {
                eprintln!("connection failed: {error:?}");
            }
        });
    }
}

async fn echo(stream: TcpStream) -> wtx::Result<()> {
    stream.set_nodelay(true)?;
    // The default acceptor negotiates no compression. wtx replies to pings and close frames inside
    // read_frame, then hands the control frame to the caller as well.
    let mut ws = WebSocketAcceptor::default().accept(stream).await?;
    let mut buffer = Vector::new();
    let (mut common, mut reader, mut writer) = ws.split_mut();
    loop {
        let mut frame = reader
            .read_frame(&mut buffer, &mut common, WebSocketPayloadOrigin::Adaptive)
            .await?;
        match frame.op_code() {
            OpCode::Text | OpCode::Binary => writer.write_frame(&mut common, &mut frame).await?,
            OpCode::Close => return Ok(()),
            OpCode::Continuation | OpCode::Ping | OpCode::Pong => {}
        }
    }
}
