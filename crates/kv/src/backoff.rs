//! The retry schedule, one home for everything that retries: an event the
//! `tasks` store could not take (an outbox record) and a flush Cloudflare
//! refused. The first try's failure waits 1 s; retries 1–4 failing wait
//! 3 s, 10 s, 20 s, 30 s; the fifth failed retry gives up (a dead letter).

use serde::{Deserialize, Serialize};
use tasks_domain::Timestamp;

/// Retries of one job before it gives up.
pub const MAX_ATTEMPTS: u32 = 5;

/// Wait before each retry: after the first try's failure 1 s, then after
/// failed retries 1–4: 3 s, 10 s, 20 s, 30 s.
pub const SCHEDULE_MILLIS: [i64; MAX_ATTEMPTS as usize] = [1_000, 3_000, 10_000, 20_000, 30_000];

/// The wait after `retries` failed retries (0: the first try failed), or
/// `None` when the job has had all its retries.
pub fn delay_after(retries: u32) -> Option<i64> {
    SCHEDULE_MILLIS.get(retries as usize).copied()
}

/// Where a failing job stands: kept in its record (flattened into an outbox
/// record, alone as the flush state) as `attempts`, `nextAttemptAt`, `errors`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Retries made so far; the first try is not one.
    #[serde(rename = "attempts")]
    pub retries: u32,
    /// Not to be tried again before this time.
    pub next_attempt_at: Timestamp,
    /// Every error so far, oldest first.
    pub errors: Vec<String>,
}

/// What follows a failed retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after this many milliseconds (`next_attempt_at` is set).
    RetryIn(i64),
    /// That was the last retry: dead-letter the job.
    GiveUp,
}

impl Backoff {
    /// Due at `at`, nothing tried yet.
    pub fn due(at: Timestamp) -> Self {
        Backoff {
            retries: 0,
            next_attempt_at: at,
            errors: Vec::new(),
        }
    }

    /// The first try failed at `now` with `error`: kept, the first retry
    /// scheduled. Returns the wait in milliseconds.
    pub fn first_failed(&mut self, now: Timestamp, error: String) -> i64 {
        self.schedule(now, error).unwrap_or_default()
    }

    /// A retry failed at `now` with `error`: counted and kept, and the next
    /// one scheduled unless that was the last.
    pub fn retry_failed(&mut self, now: Timestamp, error: String) -> Next {
        self.retries += 1;
        match self.schedule(now, error) {
            Some(delay) => Next::RetryIn(delay),
            None => Next::GiveUp,
        }
    }

    fn schedule(&mut self, now: Timestamp, error: String) -> Option<i64> {
        self.errors.push(error);
        let delay = delay_after(self.retries)?;
        self.next_attempt_at = Timestamp(now.millis() + delay);
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_1_3_10_20_30_seconds_then_give_up() {
        let mut b = Backoff::due(Timestamp(0));
        assert_eq!(b.first_failed(Timestamp(0), "e0".into()), 1_000);
        assert_eq!(b.next_attempt_at, Timestamp(1_000));
        let mut waits = Vec::new();
        while let Next::RetryIn(d) = b.retry_failed(Timestamp(100), format!("e{}", b.retries + 1)) {
            waits.push(d);
        }
        assert_eq!(waits, [3_000, 10_000, 20_000, 30_000]);
        assert_eq!(b.retries, MAX_ATTEMPTS);
        assert_eq!(b.errors, ["e0", "e1", "e2", "e3", "e4", "e5"]);
    }

    #[test]
    fn stored_as_attempts_next_attempt_at_errors() -> Result<(), serde_json::Error> {
        let b = Backoff {
            retries: 2,
            next_attempt_at: Timestamp(0),
            errors: vec!["x".into()],
        };
        let v = serde_json::to_value(&b)?;
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["nextAttemptAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(serde_json::from_value::<Backoff>(v)?, b);
        Ok(())
    }
}
