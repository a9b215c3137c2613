//! The outbox and the dead letters in the local store: adding deferred
//! events, burying the ones that will never apply, listing dead letters and
//! putting one back.
//!
//! Each outbox record is its own key, `outbox:<seq>:<task id>`, numbered by one
//! counter, so the outbox sorts in the order events were deferred. A record
//! is only ever deleted by the retrier tick that applied or buried it, so a
//! crash at any point can repeat work but never lose an event.
//!
//! Each task with records has a counter `pending:<id>` that the writer reads
//! on its normal path (one `get`): above zero, newer events for the task
//! queue behind the records instead of applying directly. The counter is
//! raised after a record is written and lowered after records are applied
//! (before they are deleted), so a race leaves it too high for a moment
//! (an event waits one tick longer) rather than too low. The retrier
//! reconciles counters with the records each tick.

use tasks_domain::{Timestamp, cursor, event, keys};

use crate::records::{DeadLetter, OutboxEntry};
use crate::{AtomicKv, KeyValue, StoreError};

fn encode<T: serde::Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Other(format!("encoding {key}: {e}")))
}

/// Adds `entry` to the outbox under a fresh `outbox:<seq>` key and counts
/// it for its task. Returns the key.
pub fn enqueue<L: AtomicKv>(local: &L, entry: &OutboxEntry) -> Result<String, StoreError> {
    let key = keys::outbox(local.increment(keys::OUTBOX_SEQ, 1)?, &entry.task_id);
    local.set_many(vec![(key.clone(), encode(&key, entry)?)])?;
    // The record is safe from here on. A failed count only weakens the
    // ordering check until the retrier's next reconcile.
    let _ = local.increment(&keys::pending(&entry.task_id), 1);
    Ok(key)
}

/// Writes a dead letter for an outbox record; returns its key.
pub fn bury(
    local: &dyn KeyValue,
    entry: &OutboxEntry,
    reason: String,
    now: Timestamp,
    unique: &str,
) -> Result<String, StoreError> {
    let key = keys::dead_letter(now.millis(), unique);
    let record = DeadLetter {
        subject: entry.subject.clone(),
        raw: entry.raw.clone(),
        correlation_id: entry.correlation_id.clone(),
        task_id: Some(entry.task_id.clone()),
        reason,
        errors: entry.errors.clone(),
        attempts: entry.attempts,
        received_at: Some(entry.received_at),
        at: now,
        replaying: None,
    };
    local.set_many(vec![(key.clone(), encode(&key, &record)?)])?;
    Ok(key)
}

/// One page of dead letters, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterPage {
    /// `(id, record)`; the id is the key without `dlq:`.
    pub items: Vec<(String, DeadLetter)>,
    /// Opaque cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// Lists dead letters after `cursor` (from a previous page), `limit` at a
/// time. A record that no longer parses is listed with its problem as the
/// reason rather than hidden.
pub fn list_dead_letters(
    local: &dyn KeyValue,
    cursor: Option<&str>,
    limit: usize,
) -> Result<DeadLetterPage, tasks_domain::ReadError> {
    let after = cursor.map(cursor::decode).transpose()?;
    let unavailable = |e: StoreError| tasks_domain::ReadError::Unavailable(e.to_string());
    let mut ids: Vec<String> = local
        .list_keys()
        .map_err(unavailable)?
        .into_iter()
        .filter_map(|k| keys::dead_letter_id(&k).map(str::to_owned))
        .filter(|id| after.as_ref().is_none_or(|a| id > a))
        .collect();
    ids.sort_unstable();
    let more = ids.len() > limit;
    ids.truncate(limit);
    let wanted: Vec<String> = ids
        .iter()
        .map(|id| keys::DLQ_PREFIX.to_owned() + id)
        .collect();
    let values = local.get_many(&wanted).map_err(unavailable)?;
    let items = ids
        .into_iter()
        .zip(values)
        .filter_map(|(id, v)| {
            let v = v?; // deleted since the listing
            let record = serde_json::from_slice(&v).unwrap_or_else(|e| unreadable(&id, &e));
            Some((id, record))
        })
        .collect::<Vec<_>>();
    let next_cursor = match (more, items.last()) {
        (true, Some((id, _))) => Some(cursor::encode(id)),
        _ => None,
    };
    Ok(DeadLetterPage { items, next_cursor })
}

fn unreadable(id: &str, e: &serde_json::Error) -> DeadLetter {
    DeadLetter {
        subject: String::new(),
        raw: crate::records::RawPayload::keep(b""),
        correlation_id: String::new(),
        task_id: None,
        reason: format!("dead-letter record {id} is unreadable: {e}"),
        errors: Vec::new(),
        attempts: 0,
        received_at: None,
        at: Timestamp(0),
        replaying: None,
    }
}

/// How long a replay in progress holds a dead letter; a replay that died
/// half-way (its store failed) frees the record after this.
const REPLAY_HOLD_MILLIS: i64 = 60_000;

/// Why a dead letter could not be replayed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// No dead letter has this id.
    #[error("no dead letter {0}")]
    NotFound(String),
    /// Replaying it could only fail the same way again, or it is already
    /// being replayed.
    #[error("{0}")]
    Conflict(String),
    /// The local store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Puts dead letter `id` back into the outbox as a new record, due at once,
/// with its correlation id and original arrival time, then removes the dead
/// letter. Returns the outbox key.
pub fn replay_dead_letter<L: AtomicKv>(
    local: &L,
    id: &str,
    now: Timestamp,
) -> Result<String, ReplayError> {
    let key = keys::DLQ_PREFIX.to_owned() + id;
    if keys::dead_letter_id(&key) != Some(id) || id.contains('/') {
        return Err(ReplayError::NotFound(id.to_owned()));
    }
    let (cas, current) = local.cas_read(&key)?;
    let Some(bytes) = current else {
        return Err(ReplayError::NotFound(id.to_owned()));
    };
    let mut record: DeadLetter = serde_json::from_slice(&bytes)
        .map_err(|e| ReplayError::Conflict(format!("dead letter {id} is unreadable: {e}")))?;
    if let Some(since) = record
        .replaying
        .filter(|t| now.millis() - t.millis() < REPLAY_HOLD_MILLIS)
    {
        return Err(ReplayError::Conflict(format!(
            "dead letter {id} is already being replayed (since {since})"
        )));
    }
    let payload = record.raw.bytes();
    let ev = event::parse(&record.subject, &payload).map_err(|r| {
        ReplayError::Conflict(format!(
            "dead letter {id} cannot be replayed: the event itself is invalid ({})",
            r.reason
        ))
    })?;
    record.replaying = Some(now);
    if !local.cas_write(cas, encode(&key, &record)?)? {
        return Err(ReplayError::Conflict(format!(
            "dead letter {id} changed while replaying; try again"
        )));
    }
    let mut entry = OutboxEntry::new(
        &record.subject,
        &payload,
        &record.correlation_id,
        &ev.id,
        record.received_at.unwrap_or(record.at),
    );
    entry.next_attempt_at = now;
    let outbox_key = enqueue(local, &entry)?;
    local.delete_many(vec![key])?;
    Ok(outbox_key)
}
