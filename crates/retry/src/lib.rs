//! Replaying the outbox: which records are due, and one retrier tick
//! (claim, apply in order, reschedule or bury, reconcile), over the apply
//! path of `tasks-apply` and the records of `tasks-outbox`. The claimed
//! records of up to [`REPLAY_TASKS`] tasks are replayed together, through
//! the writer's batch fast path (`Writer::fold_and_commit`).
//! Feature `testing`: the harness's retrier ticks (`testing::Tick`).

#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::collections::BTreeMap;

use tasks_domain::{StreamPos, Timestamp, event, keys};

use tasks_apply::apply::Failure;
use tasks_apply::batch::{self, Folded, Planned};
use tasks_apply::{Handled, Incoming, Writer};
use tasks_feed::counts::RetryOutcome;
use tasks_kv::backoff::{MAX_ATTEMPTS, Next};
use tasks_kv::lease::{self, Claim};
use tasks_kv::{AtomicKv, KeyValue, StoreError, decode_counter, encode};
use tasks_outbox as outbox;
pub use tasks_outbox::CLAIM_MILLIS;
use tasks_outbox::OutboxEntry;
use tasks_outbox::dead_letters::Filed;
use tasks_outbox::health;

/// Records read per `get_many`.
const READ_BATCH: usize = 256;

/// Tasks whose records one batch replays: one read of their documents, one
/// feed increment, one write per task, one commit of their changes to the
/// feed. Small enough that a run stops soon after its budget.
pub const REPLAY_TASKS: usize = 64;

/// How long before its claims lapse a run stops writing to the tasks store
/// (`Retrier::claim_millis` after it claimed).
const CLAIM_MARGIN_MILLIS: i64 = 5_000;

/// One task's outbox records, oldest first, due now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    /// The task.
    pub task_id: String,
    /// `(key, record)` in outbox order.
    pub records: Vec<(String, OutboxEntry)>,
}

/// How long the writer's ticks hold what they claim (tasks, the probe):
/// their calls are cancelled past the trigger's handler timeout (5 s for
/// the writer), and a cancelled call cannot give its claims back, so they
/// must lapse soon: another tick replays those tasks within this. Writes
/// stop [`CLAIM_MARGIN_MILLIS`] before it, by the handler timeout.
pub const WRITER_CLAIM_MILLIS: i64 = 10_000;

/// How long the writer spends replaying the outbox after a call that queued
/// an event ([`replay_after`]): short beside the trigger's handler timeout.
pub const WRITER_REPLAY_MILLIS: i64 = 500;

/// How recent the writer's last tick ([`record_writer_tick`]) must be for
/// the cron retrier to leave the outbox to the writer: a few of its 1 s
/// ticks, each bounded by its 5 s handler timeout.
pub const WRITER_TICK_FRESH_MILLIS: i64 = 10_000;

/// The writer's tick call is about to replay the outbox ([`writer_ticks`]).
pub fn record_writer_tick<L: KeyValue + ?Sized>(
    local: &L,
    now: Timestamp,
) -> Result<(), StoreError> {
    local.set_many(vec![(
        keys::WRITER_TICK.to_owned(),
        encode(keys::WRITER_TICK, &now)?,
    )])
}

/// Whether the writer replays the outbox itself on its own schedule (its
/// entry's `tick_ms`, on trigger-nats's store client): a tick began within
/// [`WRITER_TICK_FRESH_MILLIS`] of `now`. The cron retrier then replays
/// nothing (`Retrier::replay` false): its Spin store client can wait a
/// minute to reconnect after an outage (docs/decisions.md), and a run
/// waiting on it holds the probe and its tasks' claims for 30 s, which
/// would keep the writer's ticks off them. Once the writer's ticks stop,
/// the cron retrier replays again.
pub fn writer_ticks<L: KeyValue + ?Sized>(local: &L, now: Timestamp) -> Result<bool, StoreError> {
    let last = local
        .get(keys::WRITER_TICK)?
        .and_then(|b| serde_json::from_slice::<Timestamp>(&b).ok());
    Ok(last.is_some_and(|t| {
        let age = now.millis() - t.millis();
        (0..WRITER_TICK_FRESH_MILLIS).contains(&age)
    }))
}

/// Whether the writer, having handled a call with these outcomes, should run
/// a retrier tick itself ([`Retrier::tick`], for [`WRITER_REPLAY_MILLIS`]):
/// when an event was queued behind a deferred one of its task while nothing
/// of the call was deferred or failed to be recorded, the store answers
/// again but the backlog waits. The writer's own store client is back at
/// once; the retrier's may still be waiting to reconnect (Spin's Redis store
/// waits up to a minute: docs/decisions.md), and until the backlog goes,
/// every new event of those tasks queues behind it.
pub fn replay_after(outcomes: &[Result<Handled, StoreError>]) -> bool {
    let queued = outcomes
        .iter()
        .any(|o| matches!(o, Ok(Handled::Queued { .. })));
    let store_failed = outcomes
        .iter()
        .any(|o| matches!(o, Ok(Handled::Deferred { .. }) | Err(_)));
    queued && !store_failed
}

/// Groups `records` (any order) by task in outbox order and keeps the tasks
/// whose first record is due at `now` and not claimed by a live tick. Tasks
/// come oldest first (by their first record).
pub fn due_queues(records: Vec<(String, OutboxEntry)>, now: Timestamp) -> Vec<Queue> {
    queues(records, now, true)
}

/// [`due_queues`], or with `due_only` false every task not claimed by a
/// live tick, due or not.
fn queues(mut records: Vec<(String, OutboxEntry)>, now: Timestamp, due_only: bool) -> Vec<Queue> {
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let mut by_task: BTreeMap<String, Vec<(String, OutboxEntry)>> = BTreeMap::new();
    for (key, entry) in records {
        by_task
            .entry(entry.task_id.clone())
            .or_default()
            .push((key, entry));
    }
    let mut queues: Vec<Queue> = by_task
        .into_iter()
        .filter(|(_, rs)| {
            rs.first()
                .is_some_and(|(_, head)| (!due_only || head.due_at(now)) && !head.claimed_at(now))
        })
        .map(|(task_id, records)| Queue { task_id, records })
        .collect();
    queues.sort_by(|a, b| a.records[0].0.cmp(&b.records[0].0));
    queues
}

/// How a run treats a task's records.
#[derive(Clone, Copy)]
enum Mode<'e> {
    /// Apply the records that are due.
    Due,
    /// Apply the records whether due or not (the store just came back). A
    /// record that was not due and fails is put back as it was: its attempt
    /// is not counted.
    Force,
    /// The store failed moments ago with this error: count the first due
    /// record's attempt as failed without calling the store.
    NotTried(&'e str),
}

/// What running one task's queue told about the `tasks` store.
enum Outcome {
    /// Nothing was tried (claimed elsewhere, or changed under us).
    Skipped,
    /// A call to the store failed with this error.
    StoreDown(String),
    /// The store answered (the event applied, or failed for its own reasons).
    Reached,
}

/// A task's records a run holds: its first record is claimed.
struct Claimed {
    task_id: String,
    /// All its records, in outbox order.
    records: Vec<(String, OutboxEntry)>,
    /// How many of them, from the first, this run applies: the rest are
    /// not due, or held by another run.
    taken: usize,
}

/// One record being settled.
struct Step<'t> {
    task_id: &'t str,
    key: String,
    entry: OutboxEntry,
    /// When the run that holds it started.
    now: Timestamp,
}

/// What one tick did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Records applied and removed.
    pub applied: usize,
    /// Records removed without a write: applied already (stream sequence).
    pub already_applied: usize,
    /// Records that failed again and were rescheduled.
    pub rescheduled: usize,
    /// Records dead-lettered.
    pub dead: usize,
    /// Tasks left alone: claimed by another tick, or changed under us.
    pub skipped: usize,
    /// Outbox records found at the start of the tick.
    pub found: usize,
    /// Dead letters found at the start of the tick.
    pub dead_letters: usize,
}

/// Replays the outbox through the writer's own apply path.
pub struct Retrier<'w, 'a, T: AtomicKv, L: AtomicKv> {
    /// The writer whose stores, clock, ids and log are used.
    pub writer: &'w Writer<'a, T, L>,
    /// Stop starting new tasks after this long; the next tick goes on.
    pub budget_millis: i64,
    /// Whether the tick ends by bringing the pending counters back to the
    /// records (the cron retrier's ticks). Two reconciles at once can both
    /// correct the same counter, so the writer's own ticks leave it to them.
    pub reconcile: bool,
    /// Whether the tick replays the outbox at all: the cron retrier's do
    /// not while the writer replays it itself ([`writer_ticks`]); they
    /// still count the outbox and dead letters and reconcile.
    pub replay: bool,
    /// How long the tick's claims (on tasks, on the probe) last:
    /// [`CLAIM_MILLIS`] for the cron retrier, whose calls have no deadline
    /// (Spin's Redis client may wait a minute), [`WRITER_CLAIM_MILLIS`] for
    /// the writer's. Its writes stop [`CLAIM_MARGIN_MILLIS`] before.
    pub claim_millis: i64,
}

impl<T: AtomicKv, L: AtomicKv> Retrier<'_, '_, T, L> {
    fn log(&self, line: &str) {
        (self.writer.log)(line);
    }

    /// One tick. `Err` only when the local store fails.
    pub fn tick(&self) -> Result<TickReport, StoreError> {
        let local = self.writer.local;
        let started = (self.writer.clock)();
        let listing = local.list_keys()?;
        let mut outbox: Vec<String> = listing
            .iter()
            .filter(|k| k.starts_with(keys::OUTBOX_PREFIX))
            .cloned()
            .collect();
        let markers = listing.iter().any(|k| k.starts_with(keys::PENDING_PREFIX));
        let mut report = TickReport {
            found: outbox.len(),
            dead_letters: listing
                .iter()
                .filter(|k| k.starts_with(keys::DLQ_PREFIX))
                .count(),
            ..TickReport::default()
        };
        if outbox.is_empty() && !markers {
            return Ok(report);
        }
        if !self.replay {
            self.reconcile_if_asked()?;
            return Ok(report);
        }
        outbox.sort_unstable();
        let records = self.read_records(&outbox, started)?;
        let waiting = queues(records, started, false);
        if waiting.is_empty() {
            self.reconcile_if_asked()?;
            return Ok(report);
        }
        let (cas, health) = lease::read(local, keys::TASKS_HEALTH)?;
        match health.filter(|h: &health::StoreHealth| h.is_down(started)) {
            None => {
                let due = waiting
                    .into_iter()
                    .filter(|q| q.records[0].1.due_at(started));
                self.run_due(due, started, &mut report)?;
            }
            // While the tasks store is down, one run at a time probes it,
            // every run (each second), with its oldest record: one call per
            // second, however many records wait.
            Some(h) => {
                if !health::claim_probe(
                    local,
                    (cas, Some(h)),
                    (self.writer.unique)(),
                    started,
                    self.claim_millis,
                )? {
                    report.skipped += waiting.len();
                    return Ok(report);
                }
                self.probe(waiting, started, &mut report)?;
            }
        }
        self.reconcile_if_asked()?;
        Ok(report)
    }

    /// Runs the due queues; after the first store failure the rest are
    /// counted against it without calling the store.
    fn run_due(
        &self,
        due: impl Iterator<Item = Queue>,
        started: Timestamp,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let mut down: Option<String> = None;
        let mut due = due.peekable();
        while due.peek().is_some() {
            if self.over_budget(started) {
                break;
            }
            let chunk: Vec<Queue> = due.by_ref().take(REPLAY_TASKS).collect();
            let mode = down.as_deref().map_or(Mode::Due, Mode::NotTried);
            if let Outcome::StoreDown(error) = self.run_queues(chunk, mode, report)?
                && down.is_none()
            {
                self.mark_down(&error)?;
                down = Some(error);
            }
        }
        Ok(())
    }

    /// The probe: the oldest task's records, due or not. If the store
    /// answers, it is up again and every record is replayed now, whatever
    /// its schedule said; if not, the due records' attempts are counted
    /// against the probe's error.
    fn probe(
        &self,
        waiting: Vec<Queue>,
        started: Timestamp,
        report: &mut TickReport,
    ) -> Result<(), StoreError> {
        let mut waiting = waiting.into_iter();
        for queue in waiting.by_ref() {
            match self.run_queue(queue, Mode::Force, report)? {
                Outcome::Skipped => continue,
                Outcome::Reached => {
                    health::mark_up(self.writer.local, self.writer.log)?;
                    // The budget counts from now: the probe itself may have
                    // waited all through the outage (a stopped Redis makes a
                    // call wait), and what waits is best replayed at once.
                    let up_since = (self.writer.clock)();
                    let mut waiting = waiting.peekable();
                    while waiting.peek().is_some() && !self.over_budget(up_since) {
                        let chunk: Vec<Queue> = waiting.by_ref().take(REPLAY_TASKS).collect();
                        self.run_queues(chunk, Mode::Force, report)?;
                    }
                    return Ok(());
                }
                Outcome::StoreDown(error) => {
                    self.mark_down(&error)?;
                    let due: Vec<Queue> =
                        waiting.filter(|q| q.records[0].1.due_at(started)).collect();
                    self.run_queues(due, Mode::NotTried(&error), report)?;
                    return Ok(());
                }
            }
        }
        // Every task was held by another run: nothing probed.
        health::release_probe(self.writer.local)
    }

    fn over_budget(&self, started: Timestamp) -> bool {
        (self.writer.clock)().millis() - started.millis() > self.budget_millis
    }

    /// The store failed moments ago with `error`: the health record says so.
    fn mark_down(&self, error: &str) -> Result<(), StoreError> {
        let local = self.writer.local;
        let previous = health::read(local.get(keys::TASKS_HEALTH)?.as_deref());
        health::mark_down(
            local,
            self.writer.log,
            "-",
            previous,
            error,
            (self.writer.clock)(),
        );
        Ok(())
    }

    /// Reads outbox records; one that no longer parses is dead-lettered
    /// with its bytes, so it neither blocks nor vanishes.
    fn read_records(
        &self,
        outbox: &[String],
        now: Timestamp,
    ) -> Result<Vec<(String, OutboxEntry)>, StoreError> {
        let local = self.writer.local;
        let mut records = Vec::with_capacity(outbox.len());
        for chunk in outbox.chunks(READ_BATCH) {
            for (key, value) in chunk.iter().zip(local.get_many(chunk)?) {
                let Some(value) = value else { continue };
                match serde_json::from_slice::<OutboxEntry>(&value) {
                    Ok(entry) => records.push((key.clone(), entry)),
                    Err(e) => self.bury_unreadable(key, &value, &e.to_string(), now)?,
                }
            }
        }
        Ok(records)
    }

    fn bury_unreadable(
        &self,
        key: &str,
        value: &[u8],
        error: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let task_id = keys::outbox_task_id(key).unwrap_or_default();
        let entry = OutboxEntry::new("", value, "", task_id, now);
        let reason = format!("outbox record {key} is unreadable: {error}");
        let dead = outbox::bury(self.writer.local, key, &entry, reason.clone(), now)?;
        self.log(&format!("[-] DEAD task={task_id}: {reason} → {dead}"));
        self.writer.local.delete_many(vec![key.to_owned()])
    }

    /// [`Retrier::run_queues`] for one task.
    fn run_queue(
        &self,
        queue: Queue,
        mode: Mode<'_>,
        report: &mut TickReport,
    ) -> Result<Outcome, StoreError> {
        self.run_queues(vec![queue], mode, report)
    }

    /// Claims each task's first record, then applies each task's records
    /// in order until one fails. The store is called once for all the
    /// claimed records ([`Retrier::replay`]): one read of their documents,
    /// one feed increment, one write per task; a task that batch cannot
    /// take (an unreadable document, a lost compare-and-swap) is applied
    /// one record at a time. With [`Mode::NotTried`] (the store failed
    /// moments ago in this tick) each task's first record's attempt is
    /// counted as failed with that error instead of calling the store.
    fn run_queues(
        &self,
        queues: Vec<Queue>,
        mode: Mode<'_>,
        report: &mut TickReport,
    ) -> Result<Outcome, StoreError> {
        let w = self.writer;
        let local = w.local;
        let now = (w.clock)();
        let mut claimed = Vec::with_capacity(queues.len());
        for queue in queues {
            match self.claim(queue, matches!(mode, Mode::Force), now)? {
                Some(records) => claimed.push(records),
                None => report.skipped += 1,
            }
        }
        if claimed.is_empty() {
            return Ok(Outcome::Skipped);
        }
        // No tasks-store write once the claims are about to lapse (a call
        // that waited on a reconnecting client): another run may hold the
        // tasks by then.
        let held = Writer {
            commit_until: Some(Timestamp(
                now.millis() + self.claim_millis - CLAIM_MARGIN_MILLIS,
            )),
            ..*w
        };
        let mut replayed = match mode {
            Mode::NotTried(_) => Vec::new(),
            Mode::Due | Mode::Force => self.replay(&held, &claimed),
        }
        .into_iter();

        let mut outcome = Outcome::Reached;
        let mut done: Vec<String> = Vec::new();
        let mut settled: Vec<(String, usize)> = Vec::new();
        for claim in claimed {
            let task_id = claim.task_id.clone();
            let before = done.len();
            let results = replayed.next().unwrap_or_default();
            let task = self.settle_task(&held, claim, results, mode, now, report, &mut done)?;
            if let (Outcome::StoreDown(error), Outcome::Reached) = (task, &outcome) {
                outcome = Outcome::StoreDown(error);
            }
            settled.push((task_id, done.len() - before));
        }
        // What these records changed reaches the feed before the records
        // go: if it cannot, they stay, are replayed, are found applied,
        // and their changes are recorded then (see tasks_feed).
        if done.is_empty() {
            return Ok(outcome);
        }
        if let Err(e) = w.commit_journal() {
            let tasks: Vec<&str> = settled.iter().map(|(t, _)| t.as_str()).collect();
            self.log(&format!(
                "[-] FEED task={} — {e:?}; their replayed records stay in the outbox until their changes are recorded",
                tasks.join(",")
            ));
            return Ok(outcome);
        }
        // Lowered before the records go: a writer that reads the count in
        // between applies directly, after events already applied.
        for (task_id, n) in settled.into_iter().filter(|(_, n)| *n > 0) {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            if let Err(e) = local.increment(&keys::pending(&task_id), -n) {
                self.log(&format!(
                    "[-] KV INCR {} — FAILED: {e}; the next tick reconciles it",
                    keys::pending(&task_id)
                ));
            }
        }
        local.delete_many(done)?;
        Ok(outcome)
    }

    /// Claims the queue's first record: only the run that wins this
    /// compare-and-swap works on the task, so overlapping runs never apply
    /// a record twice. Returns the records this run takes, in order: the
    /// first, and those behind it that are due (all of them with `force`)
    /// and not held by another run. `None`: another run holds the task, or
    /// its first record is not due.
    fn claim(
        &self,
        queue: Queue,
        force: bool,
        now: Timestamp,
    ) -> Result<Option<Claimed>, StoreError> {
        let w = self.writer;
        let Queue { task_id, records } = queue;
        let mut records = records.into_iter();
        let Some((head_key, _)) = records.next() else {
            return Ok(None);
        };
        let claimed = lease::claim(w.local, &head_key, |head: Option<OutboxEntry>| {
            let mut head = head?;
            if head.claimed_at(now) || (!force && !head.due_at(now)) {
                return None;
            }
            head.claim = Some(Claim::new((w.unique)(), now, self.claim_millis));
            Some(head)
        })?;
        Ok(claimed.map(|head| {
            let behind: Vec<(String, OutboxEntry)> = records.collect();
            let taken = 1 + behind
                .iter()
                .take_while(|(_, e)| (force || e.due_at(now)) && !e.claimed_at(now))
                .count();
            let mut records = vec![(head_key, head)];
            records.extend(behind);
            Claimed {
                task_id,
                records,
                taken,
            }
        }))
    }

    /// Applies the claimed records of every task in one batch through the
    /// writer's fast path ([`Writer::fold_and_commit`]), each as of the
    /// time it arrived. One list per task, one entry per record: its
    /// outcome, or `None` where the task must go one record at a time.
    fn replay(
        &self,
        held: &Writer<'_, T, L>,
        claimed: &[Claimed],
    ) -> Vec<Vec<Option<Result<bool, Failure>>>> {
        let entries: Vec<&OutboxEntry> = claimed
            .iter()
            .flat_map(|c| c.records[..c.taken].iter().map(|(_, e)| e))
            .collect();
        let payloads: Vec<Vec<u8>> = entries.iter().map(|e| e.raw.bytes()).collect();
        let msgs: Vec<Incoming> = entries
            .iter()
            .zip(&payloads)
            .map(|(e, payload)| Incoming {
                subject: &e.subject,
                payload,
                header_correlation_id: Some(&e.correlation_id),
                handler_timed_out_ms: None,
                stream_sequence: e.stream_seq,
                stream_epoch: e.stream_epoch,
            })
            .collect();
        let parsed: Vec<_> = msgs
            .iter()
            .map(|m| event::parse(m.subject, m.payload))
            .collect();
        let at: Vec<Timestamp> = entries.iter().map(|e| e.received_at).collect();
        let ids = batch::task_ids(&parsed);
        // The outage under way, if any: a failed write goes on with it
        // (same start, no second DOWN line) instead of starting another.
        let health = self
            .writer
            .local
            .get(keys::TASKS_HEALTH)
            .ok()
            .flatten()
            .and_then(|b| health::read(Some(&b)));
        let flat: Vec<Option<Result<bool, Failure>>> =
            match held.fold_and_commit(&msgs, &parsed, &ids, &at, health) {
                Folded::Done(planned) => planned
                    .into_iter()
                    .map(|p| match p {
                        Planned::Applied { wrote, .. } => Some(Ok(wrote)),
                        Planned::Reject { reason, .. } => Some(Err(Failure::Permanent(reason))),
                        // Past the claims, the task is not ours to settle.
                        Planned::Failed { error, .. } if held.fence().is_err() => {
                            Some(Err(Failure::Fenced(error)))
                        }
                        Planned::Failed { error, .. } => Some(Err(Failure::Unavailable(error))),
                        Planned::Alone => None,
                    })
                    .collect(),
                // The store failed: each task's first record counts it.
                Folded::Unread(error) => (0..msgs.len())
                    .map(|_| Some(Err(Failure::Unavailable(error.clone()))))
                    .collect(),
                Folded::NoFeed(reason) => (0..msgs.len())
                    .map(|_| Some(Err(Failure::NoFeed(reason.clone()))))
                    .collect(),
            };
        let mut flat = flat.into_iter();
        claimed
            .iter()
            .map(|c| flat.by_ref().take(c.taken).collect())
            .collect()
    }

    /// Settles one task's claimed records in order with `replayed` (from
    /// [`Retrier::replay`]; empty or holding a `None`: the task goes one
    /// record at a time) until one fails. Records settled for good (applied,
    /// found applied, dead-lettered) are added to `done`.
    #[allow(clippy::too_many_arguments)]
    fn settle_task(
        &self,
        held: &Writer<'_, T, L>,
        claim: Claimed,
        replayed: Vec<Option<Result<bool, Failure>>>,
        mode: Mode<'_>,
        now: Timestamp,
        report: &mut TickReport,
        done: &mut Vec<String>,
    ) -> Result<Outcome, StoreError> {
        let Claimed {
            task_id,
            records,
            taken,
        } = claim;
        let batched = !replayed.is_empty() && replayed.iter().all(Option::is_some);
        let mut replayed = replayed.into_iter().flatten();
        let mut outcome = Outcome::Reached;
        let mut records = records.into_iter();
        for _ in 0..taken {
            let Some((key, entry)) = records.next() else {
                break;
            };
            let result = match (batched, mode) {
                (true, _) => replayed
                    .next()
                    .unwrap_or_else(|| Self::try_once(held, &entry)),
                (false, Mode::NotTried(error)) => Err(Failure::Unavailable(format!(
                    "not tried: the tasks store failed moments ago ({error})"
                ))),
                (false, Mode::Due | Mode::Force) => Self::try_once(held, &entry),
            };
            if let (Err(Failure::Unavailable(error)), Mode::Due | Mode::Force) = (&result, mode) {
                outcome = Outcome::StoreDown(error.clone());
            }
            let step = Step {
                task_id: &task_id,
                key,
                entry,
                now,
            };
            if !self.settle(step, result, &mut records, report, done)? {
                break;
            }
        }
        Ok(outcome)
    }

    /// Settles one record with `result`: applied or found applied (done),
    /// dead-lettered (done, with every record `behind` it when it gave up),
    /// or put back on its schedule. `false`: stop, the task's later records
    /// wait.
    fn settle(
        &self,
        step: Step<'_>,
        result: Result<bool, Failure>,
        behind: &mut impl Iterator<Item = (String, OutboxEntry)>,
        report: &mut TickReport,
        done: &mut Vec<String>,
    ) -> Result<bool, StoreError> {
        let local = self.writer.local;
        let Step {
            task_id,
            key,
            entry,
            now,
        } = step;
        let attempt = entry.backoff.retries + 1;
        let cid = entry.correlation_id.clone();
        let early = !entry.due_at(now);
        match result {
            Ok(true) => {
                self.log(&format!(
                    "[{cid}] RETRY attempt={attempt}/{MAX_ATTEMPTS} task={task_id} — OK ({}, {key})",
                    entry.subject
                ));
                report.applied += 1;
                self.counted(&entry.subject, RetryOutcome::Applied);
                done.push(key);
                Ok(true)
            }
            Ok(false) => {
                self.log(&format!(
                    "[{cid}] RETRY attempt={attempt}/{MAX_ATTEMPTS} task={task_id} — SKIPPED, applied already ({}, {key})",
                    entry.subject
                ));
                report.already_applied += 1;
                self.counted(&entry.subject, RetryOutcome::Skipped);
                done.push(key);
                Ok(true)
            }
            Err(Failure::Fenced(_)) => {
                // The claim lapsed before the write: the record, as it is,
                // belongs to whichever run holds the task now.
                self.log(&format!(
                    "[{cid}] LAPSED task={task_id} — this run's claim ran out before the write; left to the run that holds the task now ({key})"
                ));
                report.skipped += 1;
                Ok(false)
            }
            Err(Failure::Permanent(reason)) => {
                let dead = outbox::bury(local, &key, &entry, reason.clone(), now)?;
                self.log(&format!(
                    "[{cid}] DEAD task={task_id} — cannot apply: {reason} → {dead}"
                ));
                self.count_dead(&entry.subject, &dead, report);
                done.push(key);
                Ok(true)
            }
            Err(
                Failure::Unavailable(error) | Failure::Contended(error) | Failure::NoFeed(error),
            ) if early => {
                // A probe ahead of this record's schedule: not an attempt.
                self.log(&format!(
                    "[{cid}] PROBE task={task_id} — still failing: {error}"
                ));
                let entry = OutboxEntry {
                    claim: None,
                    ..entry
                };
                local.set_many(vec![(key.clone(), encode(&key, &entry)?)])?;
                Ok(false)
            }
            Err(
                Failure::Unavailable(error) | Failure::Contended(error) | Failure::NoFeed(error),
            ) => {
                let mut entry = OutboxEntry {
                    claim: None,
                    ..entry
                };
                if let Next::RetryIn(delay) = entry.backoff.retry_failed(now, error.clone()) {
                    self.log(&format!(
                        "[{cid}] RETRY attempt={attempt}/{MAX_ATTEMPTS} task={task_id} — {error}; next attempt in {} s",
                        delay / 1000
                    ));
                    local.set_many(vec![(key.clone(), encode(&key, &entry)?)])?;
                    report.rescheduled += 1;
                    self.counted(&entry.subject, RetryOutcome::Rescheduled);
                    return Ok(false);
                }
                let reason = format!("gave up after {attempt} attempts: {error}");
                let dead = outbox::bury(local, &key, &entry, reason, now)?;
                self.log(&format!(
                    "[{cid}] DEAD task={task_id} after {attempt} attempts: {error} → {dead}"
                ));
                self.count_dead(&entry.subject, &dead, report);
                done.push(key);
                // What waited behind it must not apply without it: it
                // follows it into the dead letters, in order.
                for (key, entry) in behind.by_ref() {
                    let reason = format!(
                        "held back: an earlier event for task {task_id} was dead-lettered as {}",
                        dead.key()
                    );
                    let held = outbox::bury(local, &key, &entry, reason, now)?;
                    self.log(&format!(
                        "[{}] DEAD task={task_id} — held behind {} → {held}",
                        entry.correlation_id,
                        dead.key()
                    ));
                    self.count_dead(&entry.subject, &held, report);
                    done.push(key);
                }
                Ok(false)
            }
        }
    }

    /// Counts a burial that filed a dead letter of its own: a stream event
    /// filed already counts once, when it was.
    fn count_dead(&self, subject: &str, filed: &Filed, report: &mut TickReport) {
        if let Filed::New(_) = filed {
            report.dead += 1;
            self.counted(subject, RetryOutcome::DeadLettered);
        }
    }

    /// Applies the record once: `Ok(false)` when it was applied already.
    fn try_once(held: &Writer<'_, T, L>, entry: &OutboxEntry) -> Result<bool, Failure> {
        let payload = entry.raw.bytes();
        let ev =
            event::parse(&entry.subject, &payload).map_err(|r| Failure::Permanent(r.reason))?;
        held.apply(
            &ev,
            &entry.correlation_id,
            entry.received_at,
            StreamPos::from_parts(entry.stream_seq, entry.stream_epoch),
        )
    }

    fn reconcile_if_asked(&self) -> Result<(), StoreError> {
        if self.reconcile {
            self.reconcile()
        } else {
            Ok(())
        }
    }

    fn counted(&self, subject: &str, outcome: RetryOutcome) {
        self.writer.journal.count(|c| c.retry(subject, outcome));
    }

    /// Brings each task's pending counter back to its number of outbox
    /// records. A correction is made only when two listings around the
    /// counter read agree, so a writer or tick caught half-way is left for
    /// the next tick instead of being undercounted.
    fn reconcile(&self) -> Result<(), StoreError> {
        let local = self.writer.local;
        let first = count_by_task(&local.list_keys()?);
        let tasks: Vec<String> = first.keys().cloned().collect();
        if tasks.is_empty() {
            return Ok(());
        }
        let marker_keys: Vec<String> = tasks.iter().map(|t| keys::pending(t)).collect();
        let values = local.get_many(&marker_keys)?;
        let second = count_by_task(&local.list_keys()?);
        let mut stale = Vec::new();
        for ((task, marker), value) in tasks.iter().zip(marker_keys).zip(values) {
            let (records, had_marker) = first[task];
            if second.get(task) != Some(&(records, had_marker)) {
                continue;
            }
            let counted = value.as_deref().and_then(decode_counter).unwrap_or(0);
            if counted != records {
                self.log(&format!(
                    "[-] OUTBOX task={task} counter {counted} ≠ {records} record(s); corrected"
                ));
                local.increment(&marker, records - counted)?;
            } else if records == 0 && had_marker {
                stale.push(marker);
            }
        }
        if !stale.is_empty() {
            local.delete_many(stale)?;
        }
        Ok(())
    }
}

/// For every task with outbox records or a counter: (records, has counter).
fn count_by_task(listing: &[String]) -> BTreeMap<String, (i64, bool)> {
    let mut counts: BTreeMap<String, (i64, bool)> = BTreeMap::new();
    for key in listing {
        if let Some(task) = keys::outbox_task_id(key) {
            counts.entry(task.to_owned()).or_default().0 += 1;
        } else if let Some(task) = keys::pending_task_id(key) {
            counts.entry(task.to_owned()).or_default().1 = true;
        }
    }
    counts
}
