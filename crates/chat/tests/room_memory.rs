//! Heap memory that one joined room costs the node, measured with a counting allocator.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use common::Client;
use pylon_chat::{ChatConfig, Outbound, OutboundError};

/// System allocator that tracks the number of live heap bytes of the whole process.
struct CountingAllocator;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so it
// keeps the `GlobalAlloc` contract that `System` keeps. The counter does not touch memory.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's `layout` contract is passed on unchanged.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's `layout` contract is passed on unchanged.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with `layout`, because every allocation above does.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `System` with `layout`, and `new_size` meets the caller's
        // contract.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new_ptr
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Outbound that drops every event, so that only the node's own state is measured.
struct DiscardingOutbound;

impl Outbound for DiscardingOutbound {
    fn send_text(&self, _text: String) -> Result<(), OutboundError> {
        Ok(())
    }
}

fn connect(test: &common::TestService, conn_id: u64) -> pylon_chat::Session {
    test.service
        .connect(conn_id, Arc::new(DiscardingOutbound) as Arc<dyn Outbound>)
}

/// Joins 200 rooms from 8 connections, each room with one member, and checks the heap
/// growth per room. The budget catches a broker buffer that allocates too many slots up
/// front: a broadcast capacity of 1024 cost about 141 KB per room.
#[tokio::test(flavor = "current_thread")]
async fn joined_room_heap_cost_is_small() {
    const CONNECTIONS: u64 = 8;
    const ROOMS_PER_CONNECTION: u64 = 25;
    const MAX_BYTES_PER_ROOM: isize = 16 * 1024;

    let test = common::TestService::new(ChatConfig::default());

    // Warm up the store, the runtime and the logging paths before the baseline.
    let mut warmup = Client::connect(&test.service, 999);
    warmup.join("warmup", "w").await;
    drop(warmup);
    tokio::task::yield_now().await;

    let mut sessions = Vec::new();
    for conn_id in 0..CONNECTIONS {
        sessions.push(connect(&test, conn_id));
    }
    let baseline = LIVE_BYTES.load(Ordering::Relaxed);
    for (conn_id, session) in sessions.iter_mut().enumerate() {
        for room in 0..ROOMS_PER_CONNECTION {
            let request = format!(
                r#"{{"type":"join","room":"room-{conn_id}-{room}","nick":"user{conn_id}"}}"#
            );
            session.handle_text(&request).await;
        }
    }
    // Let every hub task start and park on its subscription.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let rooms = (CONNECTIONS * ROOMS_PER_CONNECTION) as isize;
    assert_eq!(test.service.room_count(), rooms as usize);

    let per_room = (LIVE_BYTES.load(Ordering::Relaxed) - baseline) / rooms;
    eprintln!("heap per joined room: {per_room} bytes over {rooms} rooms");
    assert!(
        per_room <= MAX_BYTES_PER_ROOM,
        "one joined room costs {per_room} bytes of heap, over the budget of {MAX_BYTES_PER_ROOM}"
    );
}
