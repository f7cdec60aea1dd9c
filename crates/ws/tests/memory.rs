//! Memory held by idle connections, measured with a counting global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use pylon_ws::{Config, Message, Role, WebSocket};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// System allocator that tracks the bytes currently allocated.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the same arguments, so the allocator
// contract is the system allocator's. The counter does not affect the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged from the caller, who upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged from the caller, who upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged from the caller, who upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONNECTIONS: usize = 64;

/// Budget for one idle server connection: the `WebSocket` value plus its heap. The
/// transport's own kernel and runtime state is not included.
const IDLE_BUDGET: usize = 1024;

/// Encodes a masked client text frame with payload "hi".
fn client_hi_frame() -> Vec<u8> {
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&key);
    frame.extend(b"hi".iter().zip(key).map(|(byte, k)| byte ^ k));
    frame
}

#[tokio::test]
async fn idle_connection_memory_is_small() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut clients = Vec::with_capacity(CONNECTIONS);
    let mut servers = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        clients.push(client);
        servers.push(server);
    }
    let mut sockets: Vec<WebSocket<TcpStream>> = Vec::with_capacity(CONNECTIONS);

    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for server in servers.drain(..) {
        sockets.push(WebSocket::from_raw(
            server,
            Role::Server,
            Config::default(),
            Bytes::new(),
        ));
    }
    // Each connection receives one message, replies, and then waits idle with its
    // keep-alive timer armed.
    let frame = client_hi_frame();
    for (client, ws) in clients.iter_mut().zip(sockets.iter_mut()) {
        client.write_all(&frame).await.unwrap();
        let message = ws.recv().await.unwrap().unwrap();
        assert_eq!(message, Message::text("hi"));
        ws.send(Message::text("hello")).await.unwrap();
        let idle = tokio::time::timeout(Duration::from_millis(1), ws.recv()).await;
        assert!(idle.is_err(), "idle connection returned {idle:?}");
    }
    let heap = (LIVE_BYTES.load(Ordering::Relaxed) - before).max(0) as usize / CONNECTIONS;

    let inline = size_of::<WebSocket<TcpStream>>();
    println!("idle WebSocket<TcpStream>: {inline} bytes inline, {heap} bytes heap");
    assert!(sockets.iter().all(|ws| ws.buffered_len() == 0));
    assert!(
        inline + heap <= IDLE_BUDGET,
        "idle connection holds {inline} bytes inline and {heap} bytes heap, budget {IDLE_BUDGET}"
    );
}

/// Maximum size of the future returned by `WebSocket::send`. A connection task is as
/// large as the largest future it awaits, and tokio 1.54 rounds task allocations up to
/// multiples of 128 bytes, so a few bytes more here can cost 128 per connection.
const MAX_SEND_FUTURE: usize = 64;

#[tokio::test]
async fn send_future_is_small() {
    let (io, _peer) = tokio::io::duplex(64);
    let mut ws = WebSocket::from_raw(io, Role::Server, Config::default(), Bytes::new());
    let send = ws.send(Message::text("x"));
    let size = size_of_val(&send);
    drop(send);
    assert!(
        size <= MAX_SEND_FUTURE,
        "send future is {size} bytes, max {MAX_SEND_FUTURE}"
    );
}
