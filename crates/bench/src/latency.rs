//! Latency recording in HDR histograms and the percentile summary of a run.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency a histogram tracks: one hour, in nanoseconds. Larger values are
/// recorded as this value.
const MAX_TRACKABLE_NS: u64 = 3_600 * 1_000_000_000;

/// Significant decimal digits kept for every recorded value (0.1 % relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// Samples a [`LatencyBatch`] collects before it takes a shard lock.
const BATCH_LEN: usize = 256;

/// Creates an empty histogram of nanosecond values.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Latency histograms shared by many connections.
///
/// A histogram of this range takes a few hundred KiB, too much for one per connection
/// when there are thousands of them. Connections instead record into one of a few shards,
/// in batches, so that the shard locks are rarely contended.
#[derive(Debug)]
pub(crate) struct LatencyRecorder {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl LatencyRecorder {
    pub(crate) fn new(shards: usize) -> Self {
        LatencyRecorder {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
        }
    }

    /// Creates a batch that flushes into the shard for connection `index`.
    pub(crate) fn batch(&self, index: usize) -> LatencyBatch<'_> {
        LatencyBatch {
            shard: &self.shards[index % self.shards.len()],
            samples: Vec::with_capacity(BATCH_LEN),
        }
    }

    /// Merges every shard into one histogram.
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            total
                .add(&*shard)
                .expect("shards have the same bounds as the total");
        }
        total
    }
}

/// Latency samples of one connection waiting to be added to a shard.
#[derive(Debug)]
pub(crate) struct LatencyBatch<'a> {
    shard: &'a Mutex<Histogram<u64>>,
    samples: Vec<u64>,
}

impl LatencyBatch<'_> {
    pub(crate) fn record(&mut self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.samples.push(nanos.max(1));
        if self.samples.len() == BATCH_LEN {
            self.flush();
        }
    }

    pub(crate) fn flush(&mut self) {
        if self.samples.is_empty() {
            return;
        }
        let mut shard = self.shard.lock().unwrap_or_else(PoisonError::into_inner);
        for &nanos in &self.samples {
            shard.saturating_record(nanos);
        }
        drop(shard);
        self.samples.clear();
    }
}

impl Drop for LatencyBatch<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latency percentiles of a run, in microseconds.
///
/// Values come from an HDR histogram that keeps 3 significant digits, so each is within
/// 0.1 % of the exact sample. All fields are 0 when nothing was recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl LatencySummary {
    pub(crate) fn from_histogram(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let micros = |nanos: u64| round_tenth(nanos as f64 / 1_000.0);
        LatencySummary {
            p50: micros(histogram.value_at_quantile(0.50)),
            p90: micros(histogram.value_at_quantile(0.90)),
            p99: micros(histogram.value_at_quantile(0.99)),
            p999: micros(histogram.value_at_quantile(0.999)),
            max: micros(histogram.max()),
            mean: round_tenth(histogram.mean() / 1_000.0),
        }
    }

    /// Writes a two-line table: `title` with the column names, then the values.
    pub(crate) fn write_table(
        &self,
        f: &mut std::fmt::Formatter<'_>,
        title: &str,
    ) -> std::fmt::Result {
        writeln!(
            f,
            "{title:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "p50", "p90", "p99", "p99.9", "max", "mean"
        )?;
        writeln!(
            f,
            "{:<14}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}{:>10.1}",
            "", self.p50, self.p90, self.p99, self.p999, self.max, self.mean
        )
    }
}

/// Rounds to one decimal, which is below the histogram's precision for values above
/// 100 µs and keeps the JSON short.
pub(crate) fn round_tenth(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_empty_histogram_is_zero() {
        let recorder = LatencyRecorder::new(2);
        let summary = LatencySummary::from_histogram(&recorder.merged());
        assert_eq!(summary, LatencySummary::default());
    }

    #[test]
    fn batches_merge_across_shards() {
        let recorder = LatencyRecorder::new(3);
        for index in 0..4 {
            let mut batch = recorder.batch(index);
            for micros in 1..=250 {
                batch.record(Duration::from_micros(micros));
            }
        }
        let merged = recorder.merged();
        assert_eq!(merged.len(), 1_000);
        let summary = LatencySummary::from_histogram(&merged);
        assert!((summary.p50 - 125.0).abs() <= 0.5, "{summary:?}");
        assert!((summary.max - 250.0).abs() <= 0.5, "{summary:?}");
        assert!((summary.mean - 125.5).abs() <= 0.5, "{summary:?}");
    }

    #[test]
    fn record_saturates_at_trackable_max() {
        let recorder = LatencyRecorder::new(1);
        recorder.batch(0).record(Duration::from_secs(10 * 3_600));
        let merged = recorder.merged();
        assert_eq!(merged.len(), 1);
        assert!(merged.max() >= MAX_TRACKABLE_NS / 2, "{}", merged.max());
    }
}
