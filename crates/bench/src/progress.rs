//! Live counters that a running benchmark updates and a progress display reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a running benchmark, shared between its tasks and a progress display.
///
/// Every counter only grows during a run. Reads are relaxed, so a display may see the
/// counters of a moment slightly apart from each other.
#[derive(Debug, Default)]
pub struct Progress {
    connected: AtomicU64,
    failed: AtomicU64,
    messages: AtomicU64,
    errors: AtomicU64,
}

impl Progress {
    /// Creates counters at zero.
    pub fn new() -> Self {
        Progress::default()
    }

    /// Number of connections opened so far.
    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// Number of connection attempts that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Number of echoes received and verified so far, including those of the warmup.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Number of errors so far: mismatched or missing echoes and rejected sends.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn add_connected(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_failed(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_message(&self) {
        self.messages.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_errors(&self, count: u64) {
        if count > 0 {
            self.errors.fetch_add(count, Ordering::Relaxed);
        }
    }
}
