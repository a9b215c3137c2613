//! Records the writer keeps in the local store: dead letters and the outbox.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tasks_domain::Timestamp;

/// A payload as received: text when it is UTF-8, base64 otherwise, so a
/// record always gives back the exact bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPayload {
    /// The payload, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in base64, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl RawPayload {
    /// Keeps `bytes` losslessly.
    pub fn keep(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => RawPayload {
                payload: Some(s.to_owned()),
                payload_base64: None,
            },
            Err(_) => RawPayload {
                payload: None,
                payload_base64: Some(STANDARD.encode(bytes)),
            },
        }
    }

    /// The original bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.payload, &self.payload_base64) {
            (Some(s), _) => s.clone().into_bytes(),
            (None, Some(b)) => STANDARD.decode(b).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// An event that will never apply, kept with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// NATS subject it arrived on.
    pub subject: String,
    /// The payload as received.
    #[serde(flatten)]
    pub raw: RawPayload,
    /// Correlation id it was handled under.
    pub correlation_id: String,
    /// The task it names, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Every error met on the way, oldest first (retries add to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Retries made before it was dead-lettered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// When the event first arrived, when it differs from `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
    /// When it was dead-lettered.
    pub at: Timestamp,
    /// Set while a replay moves it back to the outbox, so two replays of
    /// the same record cannot both enqueue it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaying: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An event whose write failed for a reason that may pass; replayed later.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxEntry {
    /// NATS subject it arrived on.
    pub subject: String,
    /// The payload as received.
    #[serde(flatten)]
    pub raw: RawPayload,
    /// Correlation id it is handled under.
    pub correlation_id: String,
    /// The task it changes.
    pub task_id: String,
    /// Retries made so far; 0 when the writer defers it (its own failed
    /// write is the first error, not a retry).
    pub attempts: u32,
    /// Not to be retried before this time.
    pub next_attempt_at: Timestamp,
    /// Every error so far, oldest first.
    pub errors: Vec<String>,
    /// When the event first arrived.
    pub received_at: Timestamp,
    /// The retrier tick working on this record (and the task's records
    /// behind it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

/// A retrier tick's hold on an outbox record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Unique per tick.
    pub token: String,
    /// The hold lapses at this time, so a tick that died does not block
    /// the task for ever.
    pub until: Timestamp,
}

impl OutboxEntry {
    /// A record for an event received at `received_at`, due at once, with
    /// no attempts and no errors (an event queued behind others).
    pub fn new(
        subject: &str,
        payload: &[u8],
        correlation_id: &str,
        task_id: &str,
        received_at: Timestamp,
    ) -> Self {
        OutboxEntry {
            subject: subject.to_owned(),
            raw: RawPayload::keep(payload),
            correlation_id: correlation_id.to_owned(),
            task_id: task_id.to_owned(),
            attempts: 0,
            next_attempt_at: received_at,
            errors: Vec::new(),
            received_at,
            claim: None,
        }
    }

    /// The record after a failed try at `now`: the error kept, the next
    /// attempt scheduled by [`crate::retry::delay_after`] (the caller
    /// dead-letters it when that says there is none).
    pub fn failed(mut self, error: String, now: Timestamp) -> Self {
        self.errors.push(error);
        let delay = crate::retry::delay_after(self.attempts).unwrap_or_default();
        self.next_attempt_at = Timestamp(now.millis() + delay);
        self.claim = None;
        self
    }

    /// Whether a tick holds it at `now`.
    pub fn claimed_at(&self, now: Timestamp) -> bool {
        self.claim.as_ref().is_some_and(|c| c.until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_exactly() {
        for bytes in [&b"{\"id\":\"t\"}"[..], b"\x00\xff\xfe", b""] {
            assert_eq!(RawPayload::keep(bytes).bytes(), bytes);
        }
        assert!(RawPayload::keep(b"\xff").payload.is_none());
    }

    #[test]
    fn dead_letters_are_flat_json() -> Result<(), serde_json::Error> {
        let d = DeadLetter {
            subject: "tasks.created".into(),
            raw: RawPayload::keep(b"{}"),
            correlation_id: "c".into(),
            task_id: None,
            reason: "id is required".into(),
            errors: vec![],
            attempts: 0,
            received_at: None,
            at: Timestamp(0),
            replaying: None,
        };
        let v: serde_json::Value = serde_json::to_value(&d)?;
        assert_eq!(v["payload"], "{}");
        assert_eq!(v["reason"], "id is required");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert!(v.get("attempts").is_none() && v.get("receivedAt").is_none());
        assert_eq!(serde_json::from_value::<DeadLetter>(v)?, d);
        Ok(())
    }
}

/// How long after its last observed failure the `tasks` store counts as
/// down: the writer defers at once meanwhile, then tries it again.
pub const CIRCUIT_MILLIS: i64 = 30_000;

/// The `tasks` store's recent failures, kept under
/// [`tasks_domain::keys::TASKS_HEALTH`] in the local store while it fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    /// First failure of this outage.
    pub down_since: Timestamp,
    /// Latest failure.
    pub last_failure_at: Timestamp,
    /// What the latest failure said.
    pub last_error: String,
    /// The retrier tick probing the store, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Claim>,
}

impl StoreHealth {
    /// Whether the store counts as down at `now`.
    pub fn is_down(&self, now: Timestamp) -> bool {
        now.millis() - self.last_failure_at.millis() < CIRCUIT_MILLIS
    }

    /// The record after one more failure at `now` (the probe released).
    pub fn failed(previous: Option<StoreHealth>, error: &str, now: Timestamp) -> Self {
        StoreHealth {
            down_since: previous
                .filter(|h| h.is_down(now))
                .map_or(now, |h| h.down_since),
            last_failure_at: now,
            last_error: error.to_owned(),
            probe: None,
        }
    }
}
