//! The outbox in the local store: adding deferred events, burying the ones
//! that will never apply, and putting a dead letter back.
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
//!
//! This crate holds what keeps events from being lost: the outbox (here),
//! [`dead_letters`] (what will never apply, kept for an operator) and
//! [`health`] (the `tasks` store's circuit and the retrier's probe).

pub mod dead_letters;
pub mod health;

use serde::{Deserialize, Serialize};
use tasks_domain::{Timestamp, event, keys};

use crate::dead_letters::{DeadLetter, Filed, RawPayload};
use tasks_kv::backoff::Backoff;
use tasks_kv::lease::Claim;
use tasks_kv::{AtomicKv, StoreError, encode};

/// How long a cron retrier run's claims on a task's records and on the
/// probe last (the writer's ticks claim for less: `tasks-retry`'s
/// `WRITER_CLAIM_MILLIS`).
pub const CLAIM_MILLIS: i64 = 30_000;

/// An event whose write failed for a reason that may pass, or that waits
/// behind such an event; replayed by the retrier.
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
    /// Its place on the retry schedule. Retries count from 0 when the
    /// writer defers it (its own failed write is the first try, not a retry).
    #[serde(flatten)]
    pub backoff: Backoff,
    /// When the event first arrived.
    pub received_at: Timestamp,
    /// Its sequence in a JetStream stream, if it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
    /// The epoch of that stream ([`tasks_domain::StreamPos`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_epoch: Option<u64>,
    /// The retrier run working on this record (and the task's records
    /// behind it), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim: Option<Claim>,
}

impl OutboxEntry {
    /// A record for an event received at `received_at`, due at once, with
    /// no retries and no errors (an event queued behind others).
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
            backoff: Backoff::due(received_at),
            received_at,
            stream_seq: None,
            stream_epoch: None,
            claim: None,
        }
    }

    /// Whether it is due at `now`.
    pub fn due_at(&self, now: Timestamp) -> bool {
        self.backoff.next_attempt_at <= now
    }

    /// Whether a retrier run holds it at `now`.
    pub fn claimed_at(&self, now: Timestamp) -> bool {
        self.claim.as_ref().is_some_and(|c| c.live_at(now))
    }

    /// Its dead letter at `now` for `reason`, with every error and retry so far.
    pub fn dead_letter(&self, reason: String, now: Timestamp) -> DeadLetter {
        DeadLetter {
            task_id: Some(self.task_id.clone()),
            errors: self.backoff.errors.clone(),
            attempts: self.backoff.retries,
            stream_seq: self.stream_seq,
            stream_epoch: self.stream_epoch,
            received_at: Some(self.received_at),
            ..DeadLetter::new(
                &self.subject,
                self.raw.clone(),
                &self.correlation_id,
                reason,
                now,
            )
        }
    }
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

/// Writes the dead letter of outbox record `key`; returns where, under a key that
/// carries the record's outbox sequence number so the records buried in one
/// run keep their order. A stream event filed already (the same event
/// parked twice: a call cancelled half-way and made again, a redelivery) is
/// not buried twice: the earlier dead letter is returned; one
/// replayed from the dead letters and failing again is buried again (see
/// [`DeadLetter::file_once`]).
pub fn bury<L: AtomicKv>(
    local: &L,
    key: &str,
    entry: &OutboxEntry,
    reason: String,
    now: Timestamp,
) -> Result<Filed, StoreError> {
    let dead = keys::dead_letter(now.millis(), keys::outbox_seq(key).unwrap_or(key));
    entry.dead_letter(reason, now).file_once(local, &dead, true)
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
    let key = keys::dead_letter_with_id(id);
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
    entry.backoff.next_attempt_at = now;
    entry.stream_seq = record.stream_seq;
    entry.stream_epoch = record.stream_epoch;
    let outbox_key = enqueue(local, &entry)?;
    // A delivery of the same stream event again is not filed again; the
    // replay failing again is (see [`DeadLetter::file_once`]).
    if let Some(seen) = record.seen_marker() {
        local.set_many(vec![(seen, keys::dead_letter_replayed(&key).into_bytes())])?;
    }
    local.delete_many(vec![key])?;
    Ok(outbox_key)
}
