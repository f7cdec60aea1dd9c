//! Measures `apply_mask` throughput on large buffers.
//!
//! Run with `cargo run --release -p pylon-proto --example mask_throughput [SIZE] [ROUNDS]`.
//! SIZE is the buffer length in bytes (default 1 MiB) and ROUNDS the number of passes
//! (default 100). The buffer starts one byte past an aligned address and the key phase is 3,
//! so the unaligned head and tail paths run too. For instruction counts, run the built
//! binary under `valgrind --tool=callgrind`.

use std::hint::black_box;
use std::time::Instant;

use pylon_proto::mask::apply_mask;

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args
        .next()
        .map_or(1 << 20, |s| s.parse().expect("SIZE must be a byte count"));
    let rounds: usize = args
        .next()
        .map_or(100, |s| s.parse().expect("ROUNDS must be a count"));

    let mut storage: Vec<u8> = (0..size + 1).map(|i| i as u8).collect();
    let buf = &mut storage[1..];
    let key = [0x37, 0xfa, 0x21, 0x3d];

    let start = Instant::now();
    for _ in 0..rounds {
        apply_mask(black_box(&mut *buf), black_box(key), black_box(3));
    }
    let elapsed = start.elapsed();

    let bytes = (size * rounds) as f64;
    println!(
        "{size} bytes x {rounds} rounds: {:.3} ms, {:.2} GiB/s (checksum {})",
        elapsed.as_secs_f64() * 1e3,
        bytes / elapsed.as_secs_f64() / (1u64 << 30) as f64,
        buf.iter().map(|&b| u64::from(b)).sum::<u64>()
    );
}
