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
//! skipped when its sequence is at or below the tombstone's. The first
//! tombstone also writes `meta:tombstones`; until it exists a batch does not
//! look for tombstones at all.
//!
//! Written before the document is removed: a crash in between leaves the
//! document and the tombstone, and the delete, delivered again, still
//! applies (the document's own sequence is below it). A tombstone stays
//! until a later delete of the same id replaces it: a redelivery can come as
//! long as the stream holds the task's events, which without `max_age` is
//! for good; it costs one small key per deleted id. A re-created task's
//! document carries its own, higher sequence, which then decides.
//!
//! Like a task document, a tombstone keeps the changes of the call that
//! wrote it with their feed numbers (`journal`, see [`tasks_feed`]), so a
//! delete whose change missed the feed is recorded when delivered again.

use serde::{Deserialize, Serialize};
use tasks_domain::{StreamPos, Timestamp};

use tasks_feed::Reserved;
use tasks_kv::{StoreError, encode};

/// The record under `gone:<id>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    /// Stream sequence of the delete.
    pub stream_seq: u64,
    /// The epoch of its stream ([`StreamPos`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_epoch: Option<u64>,
    /// When it was applied (Unix milliseconds).
    pub deleted_at: i64,
    /// The reserved changes of the call that wrote it (see [`tasks_feed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub journal: Vec<Reserved>,
}

impl Tombstone {
    /// The record's bytes, for `key`.
    pub fn to_bytes(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        encode(key, self)
    }

    /// The same, keeping the reserved changes `journal`.
    pub fn keeping(self, journal: Vec<Reserved>) -> Self {
        Tombstone { journal, ..self }
    }

    /// The delete's position in a stored record; an unreadable one counts
    /// as none (the events then apply as they would without it).
    pub fn pos_of(bytes: Option<&[u8]>) -> Option<StreamPos> {
        bytes
            .and_then(|b| serde_json::from_slice::<Tombstone>(b).ok())
            .map(|t| StreamPos {
                epoch: t.stream_epoch,
                seq: t.stream_seq,
            })
    }
}

/// The tombstone of a delete at `pos`, as of `now`.
pub fn new(pos: StreamPos, now: Timestamp) -> Tombstone {
    Tombstone {
        stream_seq: pos.seq,
        stream_epoch: pos.epoch,
        deleted_at: now.millis(),
        journal: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unreadable() -> Result<(), StoreError> {
        let at = StreamPos {
            epoch: Some(9),
            seq: 42,
        };
        let bytes = new(at, Timestamp(7)).to_bytes("gone:t-1")?;
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            r#"{"streamSeq":42,"streamEpoch":9,"deletedAt":7}"#
        );
        assert_eq!(Tombstone::pos_of(Some(&bytes)), Some(at));
        let older = br#"{"streamSeq":42,"deletedAt":7}"#;
        assert_eq!(Tombstone::pos_of(Some(older)), Some(StreamPos::seq(42)));
        assert_eq!(Tombstone::pos_of(Some(b"{oops")), None);
        assert_eq!(Tombstone::pos_of(None), None);
        Ok(())
    }
}
