//! Request rate limit of one connection.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::RateLimit;

/// Token bucket in its GCRA form: instead of a token count it stores the time at which the
/// bucket is full again, which needs no floating point and no refill timer.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    limit: RateLimit,
    /// Time that one token takes to refill, `1 s / requests_per_second`.
    interval: Duration,
    /// `interval * (burst - 1)`: how far `full_at` may lie ahead of now for a request to
    /// pass.
    tolerance: Duration,
    /// Time at which every token is back. In the past when the bucket is full.
    full_at: Instant,
}

impl TokenBucket {
    pub(crate) fn new(limit: RateLimit) -> Self {
        let limit = RateLimit {
            requests_per_second: limit.requests_per_second.max(1),
            burst: limit.burst.max(1),
        };
        let interval = Duration::from_secs(1) / limit.requests_per_second;
        Self {
            limit,
            interval,
            tolerance: interval * (limit.burst - 1),
            full_at: Instant::now(),
        }
    }

    /// Returns the limit, with values below 1 raised to 1.
    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token. When the bucket is empty it takes nothing and returns the time
    /// until the next token is available.
    pub(crate) fn try_take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let full_at = self.full_at.max(now);
        let ahead = full_at - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        self.full_at = full_at + self.interval;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_rate() {
        let mut bucket = TokenBucket::new(RateLimit {
            requests_per_second: 4,
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(bucket.try_take(), Ok(()));
        }
        assert_eq!(bucket.try_take(), Err(Duration::from_millis(250)));

        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(bucket.try_take(), Err(Duration::from_millis(150)));
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(bucket.try_take(), Ok(()));
        assert_eq!(bucket.try_take(), Err(Duration::from_millis(250)));

        // A long pause refills the burst but no more.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(bucket.try_take(), Ok(()));
        }
        assert!(bucket.try_take().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn zero_limits_count_as_one() {
        let mut bucket = TokenBucket::new(RateLimit {
            requests_per_second: 0,
            burst: 0,
        });
        assert_eq!(bucket.try_take(), Ok(()));
        assert_eq!(bucket.try_take(), Err(Duration::from_secs(1)));
    }
}
