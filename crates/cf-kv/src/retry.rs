//! Retry policy. The client never sleeps on its own: without a [`Sleeper`]
//! every transient failure goes straight back to the caller (whose
//! [`RetryPolicy::delay_for`] says how long to wait); with one, the client
//! retries per the policy.

use std::time::Duration;

use crate::error::Error;

/// Waits. Injected so components use their host's clock and tests record
/// the waits instead of taking them.
pub trait Sleeper {
    /// Blocks for `d`.
    fn sleep(&self, d: Duration);
}

/// Sleeps the current thread (`std::thread::sleep`, which WASI 0.2 supports).
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadSleeper;

impl Sleeper for ThreadSleeper {
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// How often and how long to wait after a transient failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub max_retries: u32,
    /// The first wait when the server named none; doubled on each retry.
    pub base_delay: Duration,
    /// The longest wait: a backoff is capped here, and a longer
    /// `Retry-After` (Cloudflare's 5-minute block) ends the retries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry) after
    /// `err`, or `None` when the error is permanent or the retries are spent.
    pub fn delay_for(&self, err: &Error, retry: u32) -> Option<Duration> {
        if !err.is_transient() || retry >= self.max_retries {
            return None;
        }
        match err.retry_after() {
            Some(asked) if asked > self.max_delay => None,
            Some(asked) => Some(asked),
            None => Some(self.backoff(retry)),
        }
    }

    /// `base_delay * 2^retry`, capped at `max_delay`.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transient(retry_after: Option<u64>) -> Error {
        Error::Transient {
            status: Some(429),
            retry_after: retry_after.map(Duration::from_secs),
            message: String::new(),
        }
    }

    #[test]
    fn delays() {
        let p = RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        };
        let ms = Duration::from_millis;
        assert_eq!(p.delay_for(&transient(None), 0), Some(ms(100)));
        assert_eq!(p.delay_for(&transient(None), 2), Some(ms(400)));
        assert_eq!(p.delay_for(&transient(None), 3), None);
        assert_eq!(p.delay_for(&transient(Some(2)), 0), Some(ms(2000)));
        assert_eq!(p.delay_for(&transient(Some(300)), 0), None);
        assert_eq!(p.delay_for(&Error::Invalid(String::new()), 0), None);
        assert_eq!(p.backoff(40), ms(5000));
    }
}
