//! Per-connection budgets: frames per second (a token bucket) and awareness bytes per second.

/// A token bucket: `rate` messages per second, bursts up to twice that (or `burst`).
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(rate: u32) -> Self {
        Self::with_burst(rate, rate.saturating_mul(2))
    }

    /// A full bucket of `burst`, refilled at `rate` per second.
    pub fn with_burst(rate: u32, burst: u32) -> Self {
        let rate = f64::from(rate.max(1));
        let burst = f64::from(burst.max(1));
        RateLimit {
            rate,
            burst,
            tokens: burst,
            last: tokio::time::Instant::now(),
        }
    }

    /// Takes one message; `false` when the limit is exceeded.
    pub fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A token bucket of bytes: `rate` per second, bursts up to twice that.
#[derive(Debug)]
pub struct ByteBudget {
    rate: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl ByteBudget {
    /// A full budget.
    pub fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        ByteBudget {
            rate,
            tokens: rate * 2.0,
            last: tokio::time::Instant::now(),
        }
    }

    /// Spends `n` bytes; `false` (nothing spent) when the budget does not hold them.
    pub fn spend(&mut self, n: usize) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.rate;
        self.last = now;
        self.tokens = (self.tokens + refill).min(self.rate * 2.0);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}
