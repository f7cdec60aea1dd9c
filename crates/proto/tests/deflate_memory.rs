//! Heap memory of the permessage-deflate compressor and decompressor, measured with a
//! counting global allocator. Run with `--nocapture` to print the table that
//! docs/websocket.md quotes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::BytesMut;
use pylon_proto::{
    Config, Connection, DeflateConfig, DeflateParams, Limits, Message, PerMessageDeflate,
    ProtocolError, Role,
};

/// System allocator that tracks, per thread, the bytes currently allocated and their peak.
/// Counting per thread keeps the test harness's own threads out of the figures.
struct Counting;

thread_local! {
    static LIVE_BYTES: Cell<isize> = const { Cell::new(0) };
    static PEAK_BYTES: Cell<isize> = const { Cell::new(0) };
}

fn add(delta: isize) {
    // `try_with` fails only while the thread is being torn down; those frees are not measured.
    let _ = LIVE_BYTES.try_with(|live_bytes| {
        let live = live_bytes.get() + delta;
        live_bytes.set(live);
        let _ = PEAK_BYTES.try_with(|peak| peak.set(peak.get().max(live)));
    });
}

// SAFETY: every method forwards to `System` with the same arguments, so the allocator
// contract is the system allocator's. The counters do not affect the returned memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded unchanged from the caller, who upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size() as isize);
        // SAFETY: forwarded unchanged from the caller, who upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        add(-(layout.size() as isize));
        // SAFETY: forwarded unchanged from the caller, who upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size as isize - layout.size() as isize);
        // SAFETY: forwarded unchanged from the caller, who upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE_BYTES.with(Cell::get)
}

fn connection(role: Role, bits: u8, reset: bool, limits: Limits) -> Connection {
    let params = DeflateParams {
        server_no_context_takeover: reset,
        client_no_context_takeover: reset,
        server_max_window_bits: Some(bits),
        client_max_window_bits: Some(bits),
    };
    let local = DeflateConfig {
        min_message_size: 0,
        ..DeflateConfig::default()
    };
    Connection::new(
        role,
        Config {
            limits,
            deflate: Some(PerMessageDeflate::new(role, params, &local)),
            ..Config::default()
        },
    )
}

/// Returns the bytes that a server keeps after sending one message (its compressor) and
/// that a client keeps after receiving it (its decompressor).
fn retained_after_one_message(bits: u8, reset: bool) -> (isize, isize) {
    let mut server = connection(Role::Server, bits, reset, Limits::default());
    let mut client = connection(Role::Client, bits, reset, Limits::default());
    let message = Message::text("a compressible message, ".repeat(40));
    // Cloned before counting, because the first clone of a `Bytes` allocates.
    let sent = message.clone();
    let mut wire = BytesMut::with_capacity(4096);

    let before = live();
    server.encode(sent, &mut wire).unwrap();
    let compressor = live() - before;

    let before = live();
    let received = client.decode(&mut wire).unwrap();
    let intact = received.as_ref() == Some(&message);
    // The received message's buffer is not part of the decompressor.
    drop(received);
    let decompressor = live() - before;
    assert!(intact, "{bits} bits: message changed in transit");
    (compressor, decompressor)
}

#[test]
fn compression_context_memory() {
    println!("window bits | compressor bytes | decompressor bytes");
    let mut previous = (0, 0);
    for bits in 9..=15u8 {
        let (compressor, decompressor) = retained_after_one_message(bits, false);
        println!("{bits:>11} | {compressor:>16} | {decompressor:>18}");
        assert!(compressor > 0, "{bits} bits: no compressor kept");
        assert!(decompressor > 0, "{bits} bits: no decompressor kept");
        assert!(compressor >= previous.0, "{bits} bits: compressor shrank");
        assert!(
            decompressor >= previous.1,
            "{bits} bits: decompressor shrank"
        );
        previous = (compressor, decompressor);
    }
    // Upper bounds with room for allocator differences: zlib-rs 0.6 sizes its buffers
    // from the window and a memory level of 8.
    assert!(
        previous.0 < 400 << 10,
        "compressor at 15 bits: {} bytes",
        previous.0
    );
    assert!(
        previous.1 < 64 << 10,
        "decompressor at 15 bits: {} bytes",
        previous.1
    );

    for bits in [9, 15] {
        let (compressor, decompressor) = retained_after_one_message(bits, true);
        println!("{bits:>11} | {compressor:>16} | {decompressor:>18} (no context takeover)");
        assert_eq!(
            compressor, 0,
            "{bits} bits: compressor kept without takeover"
        );
        assert_eq!(
            decompressor, 0,
            "{bits} bits: decompressor kept without takeover"
        );
    }
}

#[test]
fn no_context_before_first_message() {
    let before = live();
    let server = connection(Role::Server, 15, false, Limits::default());
    assert_eq!(live() - before, 0);
    drop(server);
}

#[test]
fn zip_bomb_memory_is_bounded() {
    let limit = 1 << 20;
    let mut sender = connection(Role::Server, 15, true, Limits::default());
    let mut wire = BytesMut::new();
    sender
        .encode(Message::binary(vec![0u8; 16 << 20]), &mut wire)
        .unwrap();
    drop(sender);
    let compressed = wire.len();

    let limits = Limits {
        max_frame_size: limit,
        max_message_size: limit,
    };
    let mut receiver = connection(Role::Client, 15, false, limits);
    let before = live();
    PEAK_BYTES.with(|peak| peak.set(before));
    let err = receiver.decode(&mut wire).unwrap_err();
    let peak = PEAK_BYTES.with(Cell::get) - before;
    println!("{compressed} compressed bytes, peak {peak} bytes while decoding");
    assert!(
        matches!(err, ProtocolError::MessageTooLarge { .. }),
        "{err:?}"
    );
    // The message buffer grows by doubling up to the limit plus one byte, and the last
    // growth copies it, so the peak is about twice the limit plus the decompressor.
    assert!(
        peak < 2 * limit as isize + (128 << 10),
        "peak {peak} bytes for a {limit}-byte limit"
    );
}
