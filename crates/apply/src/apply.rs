//! Applying one task event to the `tasks` store: read-merge-write with
//! compare-and-swap, the membership stamp, cache invalidation, optional
//! read-back. The one path for direct writes ([`crate::Writer::handle`]) and
//! retries (`tasks_retry::Retrier`).

use std::time::Instant;

use tasks_domain::event::{Event, EventKind};
use tasks_domain::{StreamPos, Task, Timestamp, keys, merge};

use crate::tombstone::{self, Tombstone};
use tasks_feed as feed;
use tasks_feed::{Change, FeedStore, Journal, Reserved};
use tasks_kv::{AtomicKv, StoreError};
use tasks_read::page_cache;

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
    /// The `feed` store failed before the write (taking the change's number,
    /// or reading whether an earlier call's change reached it): nothing is
    /// written, so no change goes unrecorded; the event is delivered again.
    NoFeed(String),
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
    /// outcome go; the caller commits it to the feed (see [`tasks_feed`]).
    pub journal: &'a Journal,
    /// The `feed` store: the numbers of stream events' changes are taken
    /// before their writes ([`Journal::reserve`]).
    pub feed: &'a dyn FeedStore,
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

    /// Writes what the journal recorded to the feed ([`Journal::commit`]),
    /// unless the delivery's lease is over: then whoever holds the events
    /// now records their changes (an event found applied whose change
    /// missed the feed is recorded then), and writing them here as well
    /// would count them twice.
    pub fn commit_journal(&self) -> Result<Option<u64>, Failure> {
        self.fence()?;
        self.journal
            .commit(self.feed)
            .map_err(|e| Failure::NoFeed(format!("writing the change feed failed: {e}")))
    }

    /// Applies a parsed event as of `now` (the event's own time on replay).
    /// The one code path for direct writes and retries. `seq` is the event's
    /// stream sequence when it came from a JetStream stream: an event at or
    /// below the one last applied to the task (or, when the task has no
    /// document, at or below its tombstone's) is a redelivery, skipped:
    /// `Ok(false)`. A delete with a sequence leaves a tombstone
    /// ([`crate::tombstone`]). Each change written goes to the journal.
    pub fn apply(
        &self,
        ev: &Event,
        cid: &str,
        now: Timestamp,
        seq: Option<StreamPos>,
    ) -> Result<bool, Failure> {
        let key = keys::task(&ev.id);
        if ev.kind == EventKind::Deleted {
            let deleted = change(ev, None, None, cid, now);
            let reserved = match seq {
                Some(seq) => match self.tombstone_before_delete(ev, cid, seq, now, &deleted)? {
                    Delete::Write(reserved) => Some(reserved),
                    Delete::Skip => return Ok(false),
                    Delete::Refilled => return Ok(true),
                },
                None => None,
            };
            self.fence()?;
            let start = Instant::now();
            self.tasks
                .delete_many(vec![key.clone()])
                .map_err(|e| self.store_failed(cid, "DELETE", &key, start, e))?;
            self.log_ok(cid, "DELETE", &key, start);
            self.restamp(cid, &ev.id);
            self.pages_changed(cid);
            self.verify(cid, &key, None);
            match reserved {
                Some(reserved) => self.journal.changed_in(reserved),
                None => self.journal.changed(deleted),
            }
            return Ok(true);
        }
        // The feed number of this event's change, taken at its first write.
        let mut slot: Option<u64> = None;
        for attempt in 1..=CAS_ATTEMPTS {
            let start = Instant::now();
            let (cas, current) = self
                .tasks
                .cas_read(&key)
                .map_err(|e| self.store_failed(cid, "GET", &key, start, e))?;
            let existing = match current.as_deref().map(Task::from_json) {
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
            let gone_record = match (&existing, seq) {
                (None, Some(_)) => self.tombstone_record(cid, &ev.id)?,
                _ => None,
            };
            let gone = Tombstone::pos_of(gone_record.as_deref());
            if self.applied_already(ev, cid, seq, existing.as_ref(), gone) {
                let record = if existing.is_some() {
                    current.as_deref()
                } else {
                    gone_record.as_deref()
                };
                return self.refill_if_lost(cid, record, seq);
            }
            let next = merged(ev, existing.as_ref(), now, seq).map_err(Failure::Permanent)?;
            self.fence()?;
            let made = change(ev, Some(&next), existing.as_ref(), cid, now);
            let reserved = match seq {
                Some(pos) => {
                    let slot = match slot {
                        Some(slot) => slot,
                        None => *slot.insert(self.take_number(cid, &ev.id)?),
                    };
                    Some(reserve(slot, pos, made.clone()))
                }
                None => None,
            };
            let doc = self.stored(&next, reserved.as_ref());
            let record = |reserved: Option<Reserved>| match reserved {
                Some(reserved) => self.journal.changed_in(reserved),
                None => self.journal.changed(made.clone()),
            };
            let start = Instant::now();
            if existing.is_none() {
                // A new id: the document and the new membership stamp go in one
                // set-many, one transaction (one commit instead of two). Two
                // concurrent creates of the same new id are last-writer-wins;
                // updates below keep full compare-and-swap.
                let pairs = vec![(key.clone(), doc.clone()), self.new_stamp()];
                self.tasks
                    .set_many(pairs)
                    .map_err(|e| self.store_failed(cid, "PUT", &key, start, e))?;
                self.log_ok(cid, "PUT", &key, start);
                self.pages_changed(cid);
                self.verify(cid, &key, Some(&doc));
                record(reserved);
                return Ok(true);
            }
            match self.tasks.cas_write(cas, doc.clone()) {
                Ok(true) => {
                    self.log_ok(cid, "PUT", &key, start);
                    self.pages_changed(cid);
                    self.verify(cid, &key, Some(&doc));
                    match existing {
                        None => {}
                        Some(_) if ev.kind == EventKind::Created => (self.log)(&format!(
                            "[{cid}] CREATE task={} existed: overwrote the given fields, kept createdAt (version {})",
                            ev.id, next.version
                        )),
                        Some(_) => {}
                    }
                    record(reserved);
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
    /// tombstone in one call; [`Delete::Skip`] when the delete is a
    /// redelivery (the task was re-created by a later event, or deleted at or
    /// after `seq` already; [`Delete::Refilled`] when its change had not
    /// reached the feed), else takes the change's feed number, writes the
    /// tombstone (keeping the change) and returns [`Delete::Write`], for the
    /// document to be removed next.
    fn tombstone_before_delete(
        &self,
        ev: &Event,
        cid: &str,
        seq: StreamPos,
        now: Timestamp,
        deleted: &Change,
    ) -> Result<Delete, Failure> {
        let key = keys::task(&ev.id);
        let gone_key = keys::tombstone(&ev.id);
        let start = Instant::now();
        let mut found = self
            .tasks
            .get_many(&[key.clone(), gone_key.clone()])
            .map_err(|e| self.store_failed(cid, "GET", &key, start, e))?
            .into_iter();
        let doc = found.next().flatten();
        let existing = doc.as_deref().and_then(|b| Task::from_json(b).ok());
        let gone_record = found.next().flatten();
        let gone = Tombstone::pos_of(gone_record.as_deref());
        if self.applied_already(ev, cid, Some(seq), existing.as_ref(), gone) {
            let record = if existing.is_some() { doc } else { gone_record };
            return Ok(
                match self.refill_if_lost(cid, record.as_deref(), Some(seq))? {
                    true => Delete::Refilled,
                    false => Delete::Skip,
                },
            );
        }
        self.fence()?;
        let reserved = reserve(self.take_number(cid, &ev.id)?, seq, deleted.clone());
        let mut kept = self.journal.kept_for(&ev.id);
        kept.push(reserved.clone());
        let record = tombstone::new(seq, now)
            .keeping(kept)
            .to_bytes(&gone_key)
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        let start = Instant::now();
        let written = (keys::TOMBSTONES_WRITTEN.to_owned(), b"1".to_vec());
        self.tasks
            .set_many(vec![(gone_key.clone(), record), written])
            .map_err(|e| self.store_failed(cid, "PUT", &gone_key, start, e))?;
        self.log_ok(cid, "PUT", &gone_key, start);
        Ok(Delete::Write(reserved))
    }

    /// Task `id`'s tombstone, if it has one.
    fn tombstone_record(&self, cid: &str, id: &str) -> Result<Option<Vec<u8>>, Failure> {
        let key = keys::tombstone(id);
        let start = Instant::now();
        self.tasks
            .get(&key)
            .map_err(|e| self.store_failed(cid, "GET", &key, start, e))
    }

    /// Takes the feed number of the change a write is about to make.
    fn take_number(&self, cid: &str, id: &str) -> Result<u64, Failure> {
        self.journal.reserve(self.feed, 1).map_err(|e| {
            (self.log)(&format!(
                "[{cid}] KV INCREMENT {} — FAILED: {e}; task={id} not written",
                keys::FEED_HEAD
            ));
            Failure::NoFeed(format!("taking a change feed number failed: {e}"))
        })
    }

    /// `task` as stored: with the reserved changes this call made to it
    /// so far and `reserved` (see [`tasks_feed`]).
    fn stored(&self, task: &Task, reserved: Option<&Reserved>) -> Vec<u8> {
        let mut kept = self.journal.kept_for(&task.id);
        kept.extend(reserved.cloned());
        feed::stored_doc(task, &kept)
    }

    /// Logs a change recorded for an earlier call that ended before the feed.
    pub(super) fn log_refilled(&self, cid: &str, r: &Reserved) {
        (self.log)(&format!(
            "[{cid}] FEED change {} of task={} (stream sequence {}) recorded now: the call that applied it ended before the feed",
            r.slot, r.change.id, r.stream_seq
        ));
    }

    /// For an event at `seq` skipped as applied already, `record` being the
    /// task's document or tombstone: when the call that applied it kept its
    /// change there and died before the change reached the feed, records it
    /// for its slot now and returns `true` (it counts as applied).
    pub(super) fn refill_if_lost(
        &self,
        cid: &str,
        record: Option<&[u8]>,
        seq: Option<StreamPos>,
    ) -> Result<bool, Failure> {
        let Some(pos) = seq else { return Ok(false) };
        let kept: Vec<Reserved> = feed::kept(record)
            .into_iter()
            .filter(|r| r.pos() == pos && !self.journal.holds(r.slot))
            .collect();
        if kept.is_empty() {
            return Ok(false);
        }
        let lost = feed::lost(self.feed, &kept).map_err(|e| {
            (self.log)(&format!(
                "[{cid}] KV GET feed — FAILED: {e}; cannot tell whether stream sequence {} reached the feed",
                pos.seq
            ));
            Failure::NoFeed(format!("reading the change feed failed: {e}"))
        })?;
        let mut refilled = false;
        for (r, lost) in kept.into_iter().zip(lost) {
            if lost {
                self.log_refilled(cid, &r);
                self.journal.refill(r);
                refilled = true;
            }
        }
        Ok(refilled)
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
    /// [`tasks_read::page_cache`]).
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

/// What [`Writer::tombstone_before_delete`] found.
enum Delete {
    /// Remove the document; the change is this reserved one.
    Write(Reserved),
    /// Applied already.
    Skip,
    /// Applied already; its change had not reached the feed and is recorded now.
    Refilled,
}

/// The reserved change `change`, of the event at `pos`, in feed slot `slot`.
pub(super) fn reserve(slot: u64, pos: StreamPos, change: Change) -> Reserved {
    Reserved {
        slot,
        stream_seq: pos.seq,
        stream_epoch: pos.epoch,
        change,
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
