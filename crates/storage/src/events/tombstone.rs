//! Tombstones: what a delete leaves behind so that a redelivery of an
//! older event of the task cannot bring it back.
//!
//! A task document carries the stream sequence of the last event applied to
//! it, so a redelivered event at or below it is skipped. A delete removes
//! the document, and that sequence with it: a create delivered again after
//! its delete (JetStream redelivers what it did not see acknowledged, and a
//! consumer created anew replays the stream) would bring the task back, and
//! an update would be dead-lettered as an update of an unknown task. So a
//! delete that carries a stream sequence first writes `gone:<id>` holding
//! it, then removes the document; an event on a task without a document is
//! skipped when its sequence is at or below the tombstone's.
//!
//! Written before the document is removed: a crash in between leaves the
//! document and the tombstone, and the delete, delivered again, still
//! applies (the document's own sequence is below it). A tombstone stays
//! until a later delete of the same id replaces it: a redelivery can come as
//! long as the stream holds the task's events, which without `max_age` is
//! for good; it costs one small key per deleted id. A re-created task's
//! document carries its own, higher sequence, which then decides.

use serde::{Deserialize, Serialize};
use tasks_domain::Timestamp;

use crate::kv::{StoreError, encode};

/// The record under `gone:<id>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    /// Stream sequence of the delete.
    pub stream_seq: u64,
    /// When it was applied (Unix milliseconds).
    pub deleted_at: i64,
}

impl Tombstone {
    /// The record's bytes, for `key`.
    pub fn to_bytes(self, key: &str) -> Result<Vec<u8>, StoreError> {
        encode(key, &self)
    }

    /// The stream sequence in a stored record; an unreadable one counts as
    /// none (the events then apply as they would without it).
    pub fn seq_of(bytes: Option<&[u8]>) -> Option<u64> {
        bytes
            .and_then(|b| serde_json::from_slice::<Tombstone>(b).ok())
            .map(|t| t.stream_seq)
    }
}

/// The tombstone of a delete at `seq`, as of `now`.
pub fn new(seq: u64, now: Timestamp) -> Tombstone {
    Tombstone {
        stream_seq: seq,
        deleted_at: now.millis(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unreadable() -> Result<(), StoreError> {
        let t = new(42, Timestamp(7));
        let bytes = t.to_bytes("gone:t-1")?;
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"streamSeq":42,"deletedAt":7}"#
        );
        assert_eq!(Tombstone::seq_of(Some(&bytes)), Some(42));
        assert_eq!(Tombstone::seq_of(Some(b"{oops")), None);
        assert_eq!(Tombstone::seq_of(None), None);
        Ok(())
    }
}
