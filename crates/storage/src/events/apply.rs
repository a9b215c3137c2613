//! Applying one task event to the `tasks` store: read-merge-write with
//! compare-and-swap, the membership stamp, cache invalidation, optional
//! read-back. The one path for direct writes ([`crate::Writer::handle`]) and
//! retries ([`crate::Retrier`]).

use std::time::Instant;

use tasks_domain::event::{Event, EventKind};
use tasks_domain::{StreamPos, Task, Timestamp, keys, merge};

use crate::events::tombstone::{self, Tombstone};
use crate::feed::{Change, Journal};
use crate::kv::{AtomicKv, StoreError};
use crate::read::page_cache;

/// Compare-and-swap attempts before an update is deferred to the outbox.
pub const CAS_ATTEMPTS: usize = 8;

/// Why applying an event failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The event can never apply as it is.
    Permanent(String),
    /// A `tasks` store call failed; trying again later may work.
    Unavailable(String),
    /// Compare-and-swap kept losing to other writers; the store works.
    Contended(String),
    /// The delivery's lease ended before the write ([`Writer::commit_until`]):
    /// another instance may hold the event now, so nothing is written here.
    Fenced(String),
}

/// Applies events to the `tasks` store, keeping dead letters and the outbox
/// in the `local` store: the stores and the environment (clock, ids, log)
/// that message handling (`events/writer.rs`) and the retrier share.
pub struct Writer<'a, T: AtomicKv, L: AtomicKv> {
    /// Task documents.
    pub tasks: &'a T,
    /// Dead letters, the outbox and pending counters: always the local store.
    pub local: &'a L,
    /// The current time.
    pub clock: &'a dyn Fn() -> Timestamp,
    /// A fresh unique string (correlation ids, record keys, stamps).
    pub unique: &'a dyn Fn() -> String,
    /// Where log lines go.
    pub log: &'a dyn Fn(&str),
    /// Read every written document back and log whether it matches
    /// (`[cid] KV verify task:t-1 → ok|mismatch`): the `verify_writes` variable.
    pub verify_writes: bool,
    /// Where each change that reached the `tasks` store and each counted
    /// outcome go; the caller commits it to the feed (see [`crate::feed`]).
    pub journal: &'a Journal,
    /// Until when the events handled are surely this instance's (the
    /// trigger's delivery lease, `spin-nats-lease-until-ms`); after it no
    /// store write is made for them: the trigger has them delivered again,
    /// to whichever instance holds them then. `None`: no lease (core NATS,
    /// the retrier).
    pub commit_until: Option<Timestamp>,
}

impl<T: AtomicKv, L: AtomicKv> Writer<'_, T, L> {
    /// `Err` once the delivery's lease is over ([`Writer::commit_until`]):
    /// checked before every write, so an instance paused or cut off from
    /// the server past `ack_wait` writes nothing when it resumes.
    pub fn fence(&self) -> Result<(), Failure> {
        match self.commit_until {
            Some(until) if (self.clock)() >= until => Err(Failure::Fenced(format!(
                "not written: the delivery's lease ended at {until} (this instance was paused or cut off \
                 from NATS past ack_wait); the event is delivered again"
            ))),
            _ => Ok(()),
        }
    }

    /// Applies a parsed event as of `now` (the event's own time on replay).
    /// The one code path for direct writes and retries. `seq` is the event's
    /// stream sequence when it came from a JetStream stream: an event at or
    /// below the one last applied to the task (or, when the task has no
    /// document, at or below its tombstone's) is a redelivery, skipped:
    /// `Ok(false)`. A delete with a sequence leaves a tombstone
    /// ([`crate::events::tombstone`]). Each change written goes to the journal.
    pub fn apply(
        &self,
        ev: &Event,
        cid: &str,
        now: Timestamp,
        seq: Option<StreamPos>,
    ) -> Result<bool, Failure> {
        let key = keys::task(&ev.id);
        if ev.kind == EventKind::Deleted {
            if let Some(seq) = seq
                && !self.tombstone_before_delete(ev, cid, seq, now)?
            {
                return Ok(false);
            }
            self.fence()?;
            let start = Instant::now();
            self.tasks
                .delete_many(vec![key.clone()])
                .map_err(|e| self.store_failed(cid, "DELETE", &key, start, e))?;
            self.log_ok(cid, "DELETE", &key, start);
            self.restamp(cid, &ev.id);
            self.pages_changed(cid);
            self.verify(cid, &key, None);
            self.journal.changed(change(ev, None, None, cid, now));
            return Ok(true);
        }
        for attempt in 1..=CAS_ATTEMPTS {
            let start = Instant::now();
            let (cas, current) = self
                .tasks
                .cas_read(&key)
                .map_err(|e| self.store_failed(cid, "GET", &key, start, e))?;
            let existing = match current.map(|b| Task::from_json(&b)) {
                None => None,
                Some(Ok(t)) => Some(t),
                Some(Err(e)) if ev.kind == EventKind::Updated => {
                    return Err(Failure::Permanent(format!(
                        "stored task {:?} is unreadable: {e}",
                        ev.id
                    )));
                }
                Some(Err(e)) => {
                    (self.log)(&format!(
                        "[{cid}] CREATE task={} replaces an unreadable document: {e}",
                        ev.id
                    ));
                    None
                }
            };
            let gone = match (&existing, seq) {
                (None, Some(_)) => self.tombstone_pos(cid, &ev.id)?,
                _ => None,
            };
            if self.applied_already(ev, cid, seq, existing.as_ref(), gone) {
                return Ok(false);
            }
            let next = merged(ev, existing.as_ref(), now, seq).map_err(Failure::Permanent)?;
            self.fence()?;
            let start = Instant::now();
            if existing.is_none() {
                // A new id: the document and the new membership stamp go in one
                // set-many, one transaction (one commit instead of two). Two
                // concurrent creates of the same new id are last-writer-wins;
                // updates below keep full compare-and-swap.
                let pairs = vec![(key.clone(), next.to_json()), self.new_stamp()];
                self.tasks
                    .set_many(pairs)
                    .map_err(|e| self.store_failed(cid, "PUT", &key, start, e))?;
                self.log_ok(cid, "PUT", &key, start);
                self.pages_changed(cid);
                self.verify(cid, &key, Some(&next.to_json()));
                self.journal
                    .changed(change(ev, Some(&next), None, cid, now));
                return Ok(true);
            }
            match self.tasks.cas_write(cas, next.to_json()) {
                Ok(true) => {
                    self.log_ok(cid, "PUT", &key, start);
                    self.pages_changed(cid);
                    self.verify(cid, &key, Some(&next.to_json()));
                    match existing {
                        None => {}
                        Some(_) if ev.kind == EventKind::Created => (self.log)(&format!(
                            "[{cid}] CREATE task={} existed: overwrote the given fields, kept createdAt (version {})",
                            ev.id, next.version
                        )),
                        Some(_) => {}
                    }
                    let before = existing.as_ref();
                    self.journal
                        .changed(change(ev, Some(&next), before, cid, now));
                    return Ok(true);
                }
                Ok(false) => (self.log)(&format!(
                    "[{cid}] KV CAS {key} — conflict, attempt {attempt}/{CAS_ATTEMPTS}; re-reading"
                )),
                Err(e) => return Err(self.store_failed(cid, "PUT", &key, start, e)),
            }
        }
        Err(Failure::Contended(format!(
            "compare-and-swap on {key} lost {CAS_ATTEMPTS} times in a row"
        )))
    }

    /// Whether `ev`, from stream sequence `seq`, is a redelivery of an event
    /// applied already: at or below the sequence `existing` keeps or, when
    /// the task has no document, at or below its tombstone's (`gone`); logs
    /// the skip.
    pub(super) fn applied_already(
        &self,
        ev: &Event,
        cid: &str,
        seq: Option<StreamPos>,
        existing: Option<&Task>,
        gone: Option<StreamPos>,
    ) -> bool {
        let last = match existing {
            Some(t) => t.stream_pos(),
            None => gone,
        };
        let Some((pos, last)) = seq.zip(last) else {
            return false;
        };
        if !pos.at_or_before(last) {
            return false;
        }
        let (seq, last_seq) = (pos.seq, last.seq);
        let across = if pos.epoch != last.epoch && pos.epoch.is_some() && last.epoch.is_some() {
            " of an older incarnation of the stream"
        } else {
            ""
        };
        let why = if existing.is_some() {
            format!("stream sequence {seq}{across} is applied already (last {last_seq})")
        } else {
            format!("stream sequence {seq}{across} is older than the task's delete (at {last_seq})")
        };
        (self.log)(&format!(
            "[{cid}] SKIP {} task={} — {why}",
            ev.kind.verb(),
            ev.id
        ));
        true
    }

    /// For a delete at stream sequence `seq`: reads the task and its
    /// tombstone in one call; `false` when the delete is a redelivery (the
    /// task was re-created by a later event, or deleted at or after `seq`
    /// already), else writes the tombstone and returns `true`, for the
    /// document to be removed next.
    fn tombstone_before_delete(
        &self,
        ev: &Event,
        cid: &str,
        seq: StreamPos,
        now: Timestamp,
    ) -> Result<bool, Failure> {
        let key = keys::task(&ev.id);
        let gone_key = keys::tombstone(&ev.id);
        let start = Instant::now();
        let mut found = self
            .tasks
            .get_many(&[key.clone(), gone_key.clone()])
            .map_err(|e| self.store_failed(cid, "GET", &key, start, e))?
            .into_iter();
        let existing = found
            .next()
            .flatten()
            .and_then(|b| Task::from_json(&b).ok());
        let gone = Tombstone::pos_of(found.next().flatten().as_deref());
        if self.applied_already(ev, cid, Some(seq), existing.as_ref(), gone) {
            return Ok(false);
        }
        let record = tombstone::new(seq, now)
            .to_bytes(&gone_key)
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        self.fence()?;
        let start = Instant::now();
        let written = (keys::TOMBSTONES_WRITTEN.to_owned(), b"1".to_vec());
        self.tasks
            .set_many(vec![(gone_key.clone(), record), written])
            .map_err(|e| self.store_failed(cid, "PUT", &gone_key, start, e))?;
        self.log_ok(cid, "PUT", &gone_key, start);
        Ok(true)
    }

    /// Where task `id`'s delete stood in its stream, if it has a tombstone.
    fn tombstone_pos(&self, cid: &str, id: &str) -> Result<Option<StreamPos>, Failure> {
        let key = keys::tombstone(id);
        let start = Instant::now();
        let found = self
            .tasks
            .get(&key)
            .map_err(|e| self.store_failed(cid, "GET", &key, start, e))?;
        Ok(Tombstone::pos_of(found.as_deref()))
    }

    /// With `verify_writes`, reads `key` back and logs whether it holds
    /// `expected` (`None`: deleted). A read that fails is logged as such;
    /// the write stands either way.
    pub(super) fn verify(&self, cid: &str, key: &str, expected: Option<&[u8]>) {
        if !self.verify_writes {
            return;
        }
        let verdict = match self.tasks.get(key) {
            Ok(found) if found.as_deref() == expected => "ok".to_owned(),
            Ok(None) => "mismatch (absent)".to_owned(),
            Ok(Some(found)) => match Task::from_json(&found) {
                Ok(t) => format!("mismatch (holds version {})", t.version),
                Err(_) => "mismatch (unreadable)".to_owned(),
            },
            Err(e) => format!("failed: {e}"),
        };
        (self.log)(&format!("[{cid}] KV verify {key} → {verdict}"));
    }

    /// Invalidates cached listing pages after a task write committed (see
    /// [`crate::read::page_cache`]).
    pub(super) fn pages_changed(&self, cid: &str) {
        if let Err(e) = page_cache::invalidate(self.local) {
            (self.log)(&format!(
                "[{cid}] KV DELETE {} — FAILED: {e}; cached listing pages may be stale until the next write",
                keys::PAGE_CACHE_GEN
            ));
        }
    }

    pub(super) fn log_ok(&self, cid: &str, op: &str, key: &str, start: Instant) {
        (self.log)(&format!(
            "[{cid}] KV {op} {key} — OK ({} ms)",
            start.elapsed().as_millis()
        ));
    }

    fn store_failed(
        &self,
        cid: &str,
        op: &str,
        key: &str,
        start: Instant,
        e: StoreError,
    ) -> Failure {
        (self.log)(&format!(
            "[{cid}] KV {op} {key} — FAILED ({} ms): {e}",
            start.elapsed().as_millis()
        ));
        Failure::Unavailable(format!("KV {op} {key} failed: {e}"))
    }

    /// A fresh membership stamp pair (see docs/listing-index.md).
    pub(super) fn new_stamp(&self) -> (String, Vec<u8>) {
        let stamp = format!("{}-{}", (self.clock)().millis(), (self.unique)());
        (keys::TASKS_STAMP.to_owned(), stamp.into_bytes())
    }

    /// Tells listing indexes the set of ids changed (after a delete).
    fn restamp(&self, cid: &str, id: &str) {
        if let Err(e) = self.tasks.set_many(vec![self.new_stamp()]) {
            (self.log)(&format!(
                "[{cid}] KV PUT {} — FAILED: {e}; listings may miss the change to task={id} until the next create or delete",
                keys::TASKS_STAMP
            ));
        }
    }
}

/// The feed's record of `ev` leaving the task as `after` (none: deleted),
/// from `before` when it was read.
pub(super) fn change(
    ev: &Event,
    after: Option<&Task>,
    before: Option<&Task>,
    cid: &str,
    now: Timestamp,
) -> Change {
    Change {
        kind: ev.kind.into(),
        id: ev.id.clone(),
        version: after.map(|t| t.version),
        status: after.map(|t| t.status),
        // A delete does not read the task first (one by one): none, whichever path.
        previous_status: before.filter(|_| after.is_some()).map(|t| t.status),
        at: now,
        correlation_id: cid.to_owned(),
    }
}

/// The task a create or update makes of `existing` as of `now`, carrying
/// the event's stream sequence; `Err` (a reason to dead-letter it) for an
/// update of an unknown task. The merge rules' one use for writes, direct
/// (`apply`) or batched (`events/batch.rs`).
pub(super) fn merged(
    ev: &Event,
    existing: Option<&Task>,
    now: Timestamp,
    seq: Option<StreamPos>,
) -> Result<Task, String> {
    let mut next = match (ev.kind, existing) {
        (EventKind::Updated, None) => return Err(format!("update of unknown task {:?}", ev.id)),
        (EventKind::Updated, Some(old)) => merge::updated(old, &ev.fields, now),
        _ => merge::created(existing, &ev.id, &ev.fields, now),
    };
    if let Some(pos) = seq {
        next.stream_seq = Some(pos.seq);
        next.stream_epoch = pos.epoch;
    }
    Ok(next)
}
