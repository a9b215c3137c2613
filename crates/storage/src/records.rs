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
    /// When it was dead-lettered.
    pub at: Timestamp,
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
            at: Timestamp(0),
        };
        let v: serde_json::Value = serde_json::to_value(&d)?;
        assert_eq!(v["payload"], "{}");
        assert_eq!(v["reason"], "id is required");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(serde_json::from_value::<DeadLetter>(v)?, d);
        Ok(())
    }
}
