//! Handling a batch of messages (one JetStream pull) in few store calls,
//! with the same outcome as handling them one by one ([`Writer::handle`]):
//!
//! 1. one local read: the pending counter of every task the batch touches
//!    and the `tasks` store's health;
//! 2. one read of every task document the batch touches, with their
//!    tombstones when the messages carry stream sequences;
//! 3. the events of each task folded in memory, in order (stream-sequence
//!    skips, merges, updates of unknown tasks refused);
//! 4. when the batch holds events applied already whose records keep
//!    their changes, one read of the feed (did those changes reach it?);
//!    one increment of the feed head for the numbers of the changes to
//!    write (see [`tasks_feed`]);
//! 5. the commit: one `set-many` of the tombstones of deleted tasks, then
//!    one `delete-many` for them, one `set-many` for
//!    tasks new to the store (with the membership stamp, last), and a
//!    compare-and-swap per task that existed (the rule for updates);
//! 6. in message order: dead letters, and the outbox for what could not
//!    be committed.
//!
//! Whatever does not fit the fast path goes through [`Writer::handle`] one
//! message at a time, in order: a task with events waiting in the outbox
//! (they queue behind them), a store marked down or a call the trigger
//! cancelled (deferred), an unreadable stored document, a compare-and-swap
//! that lost to another writer.

use std::collections::HashMap;
use std::time::Instant;

use tasks_domain::event::{self, Event, EventKind};
use tasks_domain::{StreamPos, Task, Timestamp, keys};

use crate::apply::{Failure, Writer, change, merged, reserve};
use crate::tombstone::{self, Tombstone};
use crate::writer::{Handled, Incoming, applied_or_skipped};
use tasks_feed as feed;
use tasks_feed::{Change, Reserved};
use tasks_kv::{AtomicKv, StoreError, decode_counter};
use tasks_outbox::health::{self, StoreHealth};

/// What the fast path decided for one message.
enum Plan {
    /// Applied once its task commits (`change`, in feed slot `reserved`
    /// when it has a stream position), or skipped as applied already
    /// (`None`; `refill`: its change, kept by the task's record, did not
    /// reach the feed).
    Apply {
        cid: String,
        id: String,
        change: Option<Change>,
        reserved: Option<Box<Reserved>>,
        refill: Option<Box<Reserved>>,
    },
    /// Refused for good: a dead letter.
    Reject {
        cid: String,
        task_id: Option<String>,
        reason: String,
    },
    /// Handled on its own through [`Writer::handle`].
    Alone,
}

/// What the fast path made of one message, written to the `tasks` store
/// but not yet recorded locally (see [`Writer::fold_and_commit`]).
pub enum Planned {
    /// Its task committed: written (`wrote`), or found applied already.
    Applied {
        /// The message's correlation id.
        cid: String,
        /// The task.
        id: String,
        /// Whether its change was written (`false`: applied already).
        wrote: bool,
    },
    /// Refused for good: a dead letter, with this reason.
    Reject {
        /// The message's correlation id.
        cid: String,
        /// The task, when the message names one.
        task_id: Option<String>,
        /// Why it can never apply.
        reason: String,
    },
    /// Its task's write failed (or was not tried after a failure) with this
    /// error: the store may be down.
    Failed {
        /// The message's correlation id.
        cid: String,
        /// The task.
        id: String,
        /// The store's error.
        error: String,
    },
    /// Not on the fast path, or its task lost a compare-and-swap: handled
    /// on its own, in order.
    Alone,
}

/// What the fast path did with a batch.
pub enum Folded {
    /// Each message's outcome, in order.
    Done(Vec<Planned>),
    /// The documents could not be read (this error): nothing was written.
    Unread(String),
    /// The feed store failed before any write (see [`Failure::NoFeed`]):
    /// nothing was written.
    NoFeed(String),
}

/// The tasks `parsed` touches, each once, in order of first appearance.
pub fn task_ids(parsed: &[Result<Event, event::Rejection>]) -> Vec<&str> {
    let mut ids: Vec<&str> = Vec::new();
    for ev in parsed.iter().flatten() {
        if !ids.contains(&ev.id.as_str()) {
            ids.push(&ev.id);
        }
    }
    ids
}

/// One task's state across the batch.
struct Fold {
    /// The document as read (bytes), if it existed.
    original: Option<Vec<u8>>,
    /// After the events so far.
    state: Option<Task>,
    /// Indexes (into the batch) of its events on the fast path.
    events: Vec<usize>,
    /// Whether some event changed it (a skipped redelivery does not).
    changed: bool,
    /// The sequence of its tombstone, as read or left by a delete of the
    /// batch.
    gone: Option<StreamPos>,
    /// A tombstone to write (a delete of the batch with a sequence).
    tombstone: Option<StreamPos>,
    /// The reserved changes its document and tombstone keep, as read.
    kept: Vec<Reserved>,
    /// Those its records keep once written (see [`tasks_feed`]).
    keep: Vec<Reserved>,
}

/// How a task's commit went.
enum Committed {
    Ok,
    /// The store failed: its events go to the outbox with this error.
    Failed(String),
    /// Lost a compare-and-swap: its events go through [`Writer::handle`].
    Contended,
}

impl<T: AtomicKv, L: AtomicKv> Writer<'_, T, L> {
    /// Handles `msgs` in order; one outcome per message, in the same order,
    /// each as [`Writer::handle`] would give it. After the first message that
    /// could not be recorded (`Err`), nothing more is recorded: the later
    /// ones are `Err` too, unless applied already (a redelivery skips them
    /// by stream sequence).
    pub fn handle_batch(&self, msgs: &[Incoming]) -> Vec<Result<Handled, StoreError>> {
        let now = (self.clock)();
        if msgs.len() < 2 || msgs.iter().any(|m| m.handler_timed_out_ms.is_some()) {
            return self.one_by_one(msgs);
        }
        let parsed: Vec<Result<Event, event::Rejection>> = msgs
            .iter()
            .map(|m| event::parse(m.subject, m.payload))
            .collect();
        let ids = task_ids(&parsed);
        let Some((behind, health)) = self.batch_local_state(&ids) else {
            return self.one_by_one(msgs);
        };
        if health.as_ref().is_some_and(|h| h.writer_defers(now)) {
            return self.one_by_one(msgs);
        }
        let fast: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| behind.get(*id).copied().unwrap_or(0) == 0)
            .collect();
        let at = vec![now; msgs.len()];
        let planned = match self.fold_and_commit(msgs, &parsed, &fast, &at, health) {
            Folded::Unread(_) => return self.one_by_one(msgs),
            Folded::NoFeed(reason) => {
                (self.log)(&format!(
                    "KV feed — FAILED: {reason}; the batch of {} is not written and is delivered again",
                    msgs.len()
                ));
                return msgs.iter().map(|_| not_numbered(&reason)).collect();
            }
            Folded::Done(planned) => planned,
        };

        // Record, in message order.
        let mut outcomes = Vec::with_capacity(msgs.len());
        let mut failed = false;
        for ((msg, planned), ev) in msgs.iter().zip(planned).zip(&parsed) {
            let outcome = match planned {
                Planned::Applied { cid, id, wrote } => {
                    self.counted(msg, applied_or_skipped(wrote));
                    Ok(Handled::Applied {
                        correlation_id: cid,
                        task_id: id,
                    })
                }
                _ if failed => not_recorded(),
                Planned::Failed { cid, id, error } => self.defer(msg, &cid, id, error, now),
                Planned::Reject {
                    cid,
                    task_id,
                    reason,
                } => self.dead_letter(msg, &cid, task_id, reason, now),
                Planned::Alone => self.handle_parsed(msg, ev.clone()),
            };
            failed |= outcome.is_err();
            outcomes.push(outcome);
        }
        outcomes
    }

    /// The fast path of a batch, shared by [`Writer::handle_batch`] and the
    /// retrier's replay: reads the documents of the tasks in `fast` (and
    /// their tombstones), folds their events in memory in order (message
    /// `i` as of `at[i]`), numbers their changes in the feed, commits each
    /// task, and puts each change that reached the store in the journal.
    /// Nothing is recorded in the local store (dead letters, outbox): the
    /// caller does that with what [`Planned`] says of each message.
    pub fn fold_and_commit(
        &self,
        msgs: &[Incoming],
        parsed: &[Result<Event, event::Rejection>],
        fast: &[&str],
        at: &[Timestamp],
        health: Option<StoreHealth>,
    ) -> Folded {
        let start = Instant::now();
        let mut keys: Vec<String> = fast.iter().map(|id| keys::task(id)).collect();
        let sequenced = msgs.iter().any(|m| m.stream_sequence.is_some());
        if sequenced {
            keys.push(keys::TOMBSTONES_WRITTEN.to_owned());
        }
        let read = self.tasks.get_many(&keys).and_then(|mut docs| {
            // The tombstones, in a second read, once the store has any.
            let any_tombstone = sequenced && docs.pop().flatten().is_some();
            let gones = if any_tombstone {
                let gone_keys: Vec<String> = fast.iter().map(|id| keys::tombstone(id)).collect();
                self.tasks.get_many(&gone_keys)?
            } else {
                Vec::new()
            };
            let mut gones = gones.into_iter();
            Ok(docs
                .into_iter()
                .map(|d| (d, gones.next().flatten()))
                .collect::<Vec<_>>())
        });
        let docs = match read {
            Ok(docs) => docs,
            Err(e) => {
                (self.log)(&format!(
                    "KV GET-MANY {} tasks — FAILED ({} ms): {e}",
                    keys.len(),
                    start.elapsed().as_millis(),
                ));
                let first = keys.first().map_or("", String::as_str);
                return Folded::Unread(match keys.len() {
                    1 => format!("KV GET {first} failed: {e}"),
                    n => format!("KV GET-MANY {first} and {} more failed: {e}", n - 1),
                });
            }
        };
        let mut folds: HashMap<&str, Fold> = HashMap::new();
        for (id, (doc, gone)) in fast.iter().zip(docs) {
            let mut kept = feed::kept(doc.as_deref());
            kept.extend(feed::kept(gone.as_deref()));
            let gone = Tombstone::pos_of(gone.as_deref());
            let state = match doc.as_deref().map(Task::from_json) {
                None => None,
                Some(Ok(t)) => Some(t),
                // An unreadable document: the one-by-one path says what happens.
                Some(Err(_)) => continue,
            };
            folds.insert(
                id,
                Fold {
                    original: doc,
                    state,
                    events: Vec::new(),
                    changed: false,
                    gone,
                    tombstone: None,
                    kept,
                    keep: Vec::new(),
                },
            );
        }

        // Fold each task's events, in order.
        let mut plans = Vec::with_capacity(msgs.len());
        // The slots an earlier message of this batch refills: the same
        // stream event twice in one batch (a retrier replay of the record a
        // timed-out call parked and of its redelivery, queued behind it)
        // records its lost change once, and counts as applied once.
        let mut refilling: Vec<u64> = Vec::new();
        for (i, ((msg, ev), now)) in msgs.iter().zip(parsed).zip(at).enumerate() {
            let plan = match ev {
                Err(r) => Plan::Reject {
                    cid: self.correlation_id(r.correlation_id.as_deref(), msg),
                    task_id: r.task_id.clone(),
                    reason: r.reason.clone(),
                },
                Ok(ev) => match folds.get_mut(ev.id.as_str()) {
                    None => Plan::Alone,
                    Some(fold) => {
                        let cid = self.correlation_id(ev.correlation_id.as_deref(), msg);
                        (self.log)(&format!(
                            "[{cid}] {} task={}{}",
                            ev.kind.verb(),
                            ev.id,
                            msg.at()
                        ));
                        match self.fold(fold, ev, &cid, *now, msg.stream_pos()) {
                            Ok(change) => {
                                fold.events.push(i);
                                let pos = msg.stream_pos();
                                let refill = match (&change, pos) {
                                    (None, Some(pos)) => {
                                        let ours = |r: &Reserved| {
                                            self.journal.holds(r.slot)
                                                || refilling.contains(&r.slot)
                                        };
                                        let found = fold
                                            .kept
                                            .iter()
                                            .find(|r| r.pos() == pos && !ours(r))
                                            .map(|r| Box::new(r.clone()));
                                        refilling.extend(found.as_ref().map(|r| r.slot));
                                        found
                                    }
                                    _ => None,
                                };
                                Plan::Apply {
                                    cid,
                                    id: ev.id.clone(),
                                    change,
                                    reserved: None,
                                    refill,
                                }
                            }
                            Err(reason) => Plan::Reject {
                                cid,
                                task_id: Some(ev.id.clone()),
                                reason,
                            },
                        }
                    }
                },
            };
            plans.push(plan);
        }

        if let Err(reason) = self.number_changes(&mut folds, &mut plans, msgs) {
            return Folded::NoFeed(reason);
        }
        let committed = self.commit(&folds, &plans, health);

        // What each message became; the changes that reached the store go
        // to the journal, in message order.
        let planned = plans
            .into_iter()
            .map(|plan| match plan {
                Plan::Apply {
                    cid,
                    id,
                    change,
                    reserved,
                    refill,
                } => match committed.get(id.as_str()) {
                    Some(Committed::Ok) => {
                        let wrote = change.is_some() || refill.is_some();
                        if let Some(r) = &refill {
                            self.log_refilled(&cid, r);
                        }
                        match (reserved.or(refill), change) {
                            (Some(reserved), _) => self.journal.changed_in(*reserved),
                            (None, Some(change)) => self.journal.changed(change),
                            (None, None) => {}
                        }
                        Planned::Applied { cid, id, wrote }
                    }
                    Some(Committed::Failed(error)) => Planned::Failed {
                        cid,
                        id,
                        error: error.clone(),
                    },
                    Some(Committed::Contended) | None => Planned::Alone,
                },
                Plan::Reject {
                    cid,
                    task_id,
                    reason,
                } => Planned::Reject {
                    cid,
                    task_id,
                    reason,
                },
                Plan::Alone => Planned::Alone,
            })
            .collect();
        Folded::Done(planned)
    }

    /// Before the commit: keeps the refills whose changes did not reach the
    /// feed (one feed read), takes the feed numbers of the changes of
    /// stream events (one increment), and tells each task what its records
    /// keep. `Err`: the feed store failed, and nothing is written.
    fn number_changes(
        &self,
        folds: &mut HashMap<&str, Fold>,
        plans: &mut [Plan],
        msgs: &[Incoming],
    ) -> Result<(), String> {
        let refills: Vec<Reserved> = plans
            .iter()
            .filter_map(|p| match p {
                Plan::Apply { refill, .. } => refill.as_deref().cloned(),
                _ => None,
            })
            .collect();
        if !refills.is_empty() {
            let lost = feed::lost(self.feed, &refills)
                .map_err(|e| format!("reading the change feed failed: {e}"))?;
            let mut lost = lost.into_iter();
            for plan in plans.iter_mut() {
                if let Plan::Apply { refill, .. } = plan
                    && refill.is_some()
                    && lost.next() != Some(true)
                {
                    *refill = None;
                }
            }
        }
        let numbered = |p: &Plan, m: &Incoming| {
            matches!(
                p,
                Plan::Apply {
                    change: Some(_),
                    ..
                }
            ) && m.stream_pos().is_some()
        };
        let n = plans
            .iter()
            .zip(msgs)
            .filter(|(p, m)| numbered(p, m))
            .count() as u64;
        let mut next = match n {
            0 => 0,
            n => self
                .journal
                .reserve(self.feed, n)
                .map_err(|e| format!("taking {n} change feed numbers failed: {e}"))?,
        };
        for (plan, msg) in plans.iter_mut().zip(msgs) {
            let Plan::Apply {
                id,
                change,
                reserved,
                refill,
                ..
            } = plan
            else {
                continue;
            };
            let Some(fold) = folds.get_mut(id.as_str()) else {
                continue;
            };
            if fold.keep.is_empty() {
                fold.keep = self.journal.kept_for(id);
            }
            if let (Some(change), Some(pos)) = (change.as_ref(), msg.stream_pos()) {
                *reserved = Some(Box::new(reserve(next, pos, change.clone())));
                next += 1;
            }
            fold.keep
                .extend(reserved.as_deref().or(refill.as_deref()).cloned());
        }
        Ok(())
    }

    /// Handles each message through [`Writer::handle`], stopping at the
    /// first that could not be recorded.
    fn one_by_one(&self, msgs: &[Incoming]) -> Vec<Result<Handled, StoreError>> {
        let mut outcomes = Vec::with_capacity(msgs.len());
        let mut failed = false;
        for msg in msgs {
            let outcome = if failed {
                not_recorded()
            } else {
                self.handle(msg)
            };
            failed |= outcome.is_err();
            outcomes.push(outcome);
        }
        outcomes
    }

    /// The pending counter of each id (absent: 0) and the `tasks` store's
    /// health, in one local read; `None` when the local store fails (the
    /// one-by-one path then says so per message).
    fn batch_local_state(
        &self,
        ids: &[&str],
    ) -> Option<(HashMap<String, i64>, Option<StoreHealth>)> {
        let mut wanted: Vec<String> = ids.iter().map(|id| keys::pending(id)).collect();
        wanted.push(keys::TASKS_HEALTH.to_owned());
        let mut values = self.local.get_many(&wanted).ok()?;
        let health = health::read(values.pop().flatten().as_deref());
        let behind = ids
            .iter()
            .zip(values)
            .map(|(id, v)| {
                let n = v.and_then(|v| decode_counter(&v)).unwrap_or(0);
                ((*id).to_owned(), n)
            })
            .collect();
        Some((behind, health))
    }

    /// Applies one event to the task's state in memory, as [`Writer::apply`]
    /// would to the store: the change to record once the task commits
    /// (`None`: skipped as applied already); `Err` is a reason to
    /// dead-letter it.
    fn fold(
        &self,
        fold: &mut Fold,
        ev: &Event,
        cid: &str,
        now: Timestamp,
        seq: Option<StreamPos>,
    ) -> Result<Option<Change>, String> {
        if self.applied_already(ev, cid, seq, fold.state.as_ref(), fold.gone) {
            return Ok(None);
        }
        let before = fold.state.clone();
        fold.state = match ev.kind {
            EventKind::Deleted => {
                if seq.is_some() {
                    fold.gone = seq;
                    fold.tombstone = seq;
                }
                None
            }
            _ => {
                if let (EventKind::Created, Some(old)) = (ev.kind, &fold.state) {
                    (self.log)(&format!(
                        "[{cid}] CREATE task={} existed: overwrote the given fields, kept createdAt (version {})",
                        ev.id,
                        old.version + 1
                    ));
                }
                Some(merged(ev, fold.state.as_ref(), now, seq)?)
            }
        };
        fold.changed = true;
        Ok(Some(change(
            ev,
            fold.state.as_ref(),
            before.as_ref(),
            cid,
            now,
        )))
    }

    /// Writes every changed task: deletes in one call, documents new to the
    /// store (and the membership stamp, last) in one `set-many`, the others
    /// by compare-and-swap against what was read. After a store failure the
    /// rest is not tried (the store is marked down, as one by one).
    fn commit<'f>(
        &self,
        folds: &HashMap<&'f str, Fold>,
        plans: &[Plan],
        mut health: Option<StoreHealth>,
    ) -> HashMap<&'f str, Committed> {
        let now = (self.clock)();
        // The correlation id of each task's last event, for its log lines.
        let mut last_cid: HashMap<&str, &str> = HashMap::new();
        for plan in plans {
            if let Plan::Apply { cid, id, .. } = plan {
                last_cid.insert(id, cid);
            }
        }
        let cid_of = |id: &str| last_cid.get(id).copied().unwrap_or("-");
        let mut result: HashMap<&str, Committed> = HashMap::new();
        // Past the delivery's lease nothing is written; the events take the
        // store-failed path, whose records are fenced too (`Writer::fence`).
        let fenced = |this: &Self| match this.fence() {
            Err(Failure::Fenced(reason)) => Some(reason),
            _ => None,
        };
        let mut down: Option<String> = fenced(self);
        let mut fail = |this: &Self, ids: &[&'f str], op: &str, start: Instant, e: StoreError| {
            for id in ids {
                (this.log)(&format!(
                    "[{}] KV {op} {} — FAILED ({} ms): {e}",
                    cid_of(id),
                    keys::task(id),
                    start.elapsed().as_millis()
                ));
            }
            let error = format!("KV {op} {} failed: {e}", keys::task(ids[0]));
            if let Some(id) = ids.first() {
                health::mark_down(this.local, this.log, cid_of(id), health.take(), &error, now);
            }
            error
        };

        let changed = |f: &&Fold| f.changed;
        let deleted: Vec<&str> = folds
            .iter()
            .filter(|(_, f)| changed(f) && f.state.is_none())
            .map(|(id, _)| *id)
            .collect();
        let doc = |f: &Fold| Some(feed::stored_doc(f.state.as_ref()?, &f.keep));
        let new: Vec<(&str, Vec<u8>)> = folds
            .iter()
            .filter(|(_, f)| changed(f) && f.original.is_none())
            .filter_map(|(id, f)| Some((*id, doc(f)?)))
            .collect();
        let swapped: Vec<(&str, Vec<u8>)> = folds
            .iter()
            .filter(|(_, f)| changed(f) && f.original.is_some())
            .filter_map(|(id, f)| Some((*id, doc(f)?)))
            .collect();
        for (id, f) in folds {
            if !f.changed && !f.events.is_empty() {
                result.insert(id, Committed::Ok);
            }
        }
        let mut wrote = false;
        // Tombstones first: a crash before the documents go leaves both, and
        // the deletes, delivered again, still apply.
        let mut tombstones: Vec<(String, Vec<u8>)> = deleted
            .iter()
            .filter_map(|id| {
                let fold = folds.get(id)?;
                let key = keys::tombstone(id);
                let record = tombstone::new(fold.tombstone?, now)
                    .keeping(fold.keep.clone())
                    .to_bytes(&key)
                    .ok()?;
                Some((key, record))
            })
            .collect();
        if !tombstones.is_empty() && down.is_none() {
            tombstones.push((keys::TOMBSTONES_WRITTEN.to_owned(), b"1".to_vec()));
            let start = Instant::now();
            if let Err(e) = self.tasks.set_many(tombstones) {
                let error = fail(self, &deleted, "PUT (tombstone)", start, e);
                for id in &deleted {
                    result.insert(id, Committed::Failed(error.clone()));
                }
                down = Some(error);
            }
        }
        if !deleted.is_empty() && down.is_none() {
            let start = Instant::now();
            match self
                .tasks
                .delete_many(deleted.iter().map(|id| keys::task(id)).collect())
            {
                Ok(()) => {
                    for id in &deleted {
                        self.log_ok(cid_of(id), "DELETE", &keys::task(id), start);
                        result.insert(id, Committed::Ok);
                    }
                    wrote = true;
                }
                Err(e) => {
                    let error = fail(self, &deleted, "DELETE", start, e);
                    for id in &deleted {
                        result.insert(id, Committed::Failed(error.clone()));
                    }
                    down = Some(error);
                }
            }
        }
        let deletes_committed = wrote;
        if !new.is_empty() || deletes_committed {
            let ids: Vec<&str> = new.iter().map(|(id, _)| *id).collect();
            if let Some(error) = &down {
                for id in &ids {
                    result.insert(id, Committed::Failed(not_tried(error)));
                }
            } else {
                let start = Instant::now();
                let mut pairs: Vec<(String, Vec<u8>)> = new
                    .into_iter()
                    .map(|(id, doc)| (keys::task(id), doc))
                    .collect();
                pairs.push(self.new_stamp());
                match self.tasks.set_many(pairs) {
                    Ok(()) => {
                        for id in &ids {
                            self.log_ok(cid_of(id), "PUT", &keys::task(id), start);
                            result.insert(id, Committed::Ok);
                        }
                        wrote |= !ids.is_empty();
                    }
                    Err(e) if ids.is_empty() => (self.log)(&format!(
                        "KV PUT {} — FAILED: {e}; listings may miss the batch's deletes until the next create or delete",
                        keys::TASKS_STAMP
                    )),
                    Err(e) => {
                        let error = fail(self, &ids, "PUT", start, e);
                        for id in &ids {
                            result.insert(id, Committed::Failed(error.clone()));
                        }
                        down = Some(error);
                    }
                }
            }
        }
        for (id, doc) in swapped {
            if down.is_none() {
                down = fenced(self);
            }
            if let Some(error) = &down {
                result.insert(id, Committed::Failed(not_tried(error)));
                continue;
            }
            let start = Instant::now();
            let key = keys::task(id);
            let original = folds.get(id).and_then(|f| f.original.as_deref());
            let outcome = match self.tasks.cas_read(&key) {
                Ok((_, current)) if current.as_deref() != original => Ok(false),
                Ok((cas, _)) => self.tasks.cas_write(cas, doc.clone()),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(true) => {
                    self.log_ok(cid_of(id), "PUT", &key, start);
                    self.verify(cid_of(id), &key, Some(&doc));
                    result.insert(id, Committed::Ok);
                    wrote = true;
                }
                Ok(false) => {
                    (self.log)(&format!(
                        "[{}] KV CAS {key} — changed since the batch read it; applying its events one by one",
                        cid_of(id)
                    ));
                    result.insert(id, Committed::Contended);
                }
                Err(e) => {
                    let error = fail(self, &[id], "PUT", start, e);
                    result.insert(id, Committed::Failed(error.clone()));
                    down = Some(error);
                }
            }
        }
        if wrote {
            self.pages_changed(folds.keys().next().map_or("-", |id| cid_of(id)));
            // Read-back (verify_writes) of what set-many and delete-many
            // wrote; compare-and-swap writes were checked as they went.
            for (id, f) in folds {
                let batch_written = f.changed && (f.original.is_none() || f.state.is_none());
                if batch_written && matches!(result.get(id), Some(Committed::Ok)) {
                    self.verify(cid_of(id), &keys::task(id), doc(f).as_deref());
                }
            }
        }
        result
    }
}

/// The outcome of a message of a batch not written because the feed store
/// failed before it (see [`Failure::NoFeed`]).
fn not_numbered(reason: &str) -> Result<Handled, StoreError> {
    Err(StoreError::Unavailable(format!(
        "not written: {reason}; the event is delivered again"
    )))
}

/// The outcome of a message left unrecorded after an earlier one failed.
fn not_recorded() -> Result<Handled, StoreError> {
    Err(StoreError::Other(
        "not recorded: an earlier message of the batch could not be recorded".to_owned(),
    ))
}

/// The outbox error of an event whose task was not written because the
/// store had just failed on the same batch.
fn not_tried(error: &str) -> String {
    format!("not tried: the tasks store failed on this batch ({error})")
}
