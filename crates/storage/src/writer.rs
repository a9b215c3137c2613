//! Applying task events: validate, read-merge-write with compare-and-swap,
//! dead-letter what can never apply, defer what failed for now.

use std::time::Instant;

use tasks_domain::event::{self, Event, EventKind};
use tasks_domain::{Task, Timestamp, keys, merge};

use crate::records::{DeadLetter, OutboxEntry, RawPayload, StoreHealth};
use crate::retry::delay_after;
use crate::{AtomicKv, StoreError, decode_counter};

/// Compare-and-swap attempts before an update is deferred to the outbox.
pub const CAS_ATTEMPTS: usize = 8;

/// One message as the trigger delivered it.
#[derive(Clone, Copy, Debug)]
pub struct Incoming<'a> {
    /// NATS subject.
    pub subject: &'a str,
    /// Raw payload.
    pub payload: &'a [u8],
    /// The `X-Correlation-Id` message header, if any.
    pub header_correlation_id: Option<&'a str>,
    /// Set when the trigger cancelled a first call for this message after
    /// this many milliseconds (the `spin-nats-handler-timeout` header): the
    /// store hung, so the event is parked in the outbox without calling it.
    pub handler_timed_out_ms: Option<u64>,
}

/// What became of a message. Every variant means it is safely recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// The task store now reflects the event.
    Applied {
        /// Correlation id used.
        correlation_id: String,
        /// The task it changed.
        task_id: String,
    },
    /// Refused for good; kept as a dead letter under `key`.
    Rejected {
        /// Correlation id used.
        correlation_id: String,
        /// The dead-letter record.
        key: String,
        /// Why.
        reason: String,
    },
    /// The store failed; kept in the outbox under `key` for the retrier.
    Deferred {
        /// Correlation id used.
        correlation_id: String,
        /// The outbox record.
        key: String,
    },
    /// Earlier events for the task wait in the outbox; this one waits
    /// behind them under `key`, to be applied in order by the retrier.
    Queued {
        /// Correlation id used.
        correlation_id: String,
        /// The outbox record.
        key: String,
        /// How many outbox records the task had before this one.
        behind: i64,
    },
}

/// Why applying an event failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The event can never apply as it is.
    Permanent(String),
    /// A `tasks` store call failed; trying again later may work.
    Unavailable(String),
    /// Compare-and-swap kept losing to other writers; the store works.
    Contended(String),
}

/// Applies events to the `tasks` store, keeping dead letters and the outbox
/// in the `local` store.
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
}

impl<T: AtomicKv, L: AtomicKv> Writer<'_, T, L> {
    fn correlation_id(&self, from_payload: Option<&str>, msg: &Incoming) -> String {
        from_payload
            .or(msg
                .header_correlation_id
                .filter(|h| event::usable_correlation_id(h)))
            .map_or_else(|| (self.unique)(), str::to_owned)
    }

    /// Handles one message. `Err` only when the local store fails too, so
    /// the event could not even be recorded: the caller must report it.
    pub fn handle(&self, msg: &Incoming) -> Result<Handled, StoreError> {
        let now = (self.clock)();
        match event::parse(msg.subject, msg.payload) {
            Err(rejection) => {
                let cid = self.correlation_id(rejection.correlation_id.as_deref(), msg);
                self.dead_letter(msg, &cid, rejection.task_id, rejection.reason, now)
            }
            Ok(ev) => {
                let cid = self.correlation_id(ev.correlation_id.as_deref(), msg);
                (self.log)(&format!("[{cid}] {} task={}", ev.kind.verb(), ev.id));
                let (behind, health) = self.local_state(&cid, &ev.id);
                if behind > 0 {
                    return self.queue(msg, &cid, ev.id, behind, now);
                }
                if let Some(ms) = msg.handler_timed_out_ms {
                    let error = format!(
                        "the tasks store did not answer within {ms} ms (the trigger cancelled the call)"
                    );
                    self.mark_down(&cid, health, &error, now);
                    return self.defer(msg, &cid, ev.id, error, now);
                }
                if let Some(h) = health.as_ref().filter(|h| h.is_down(now)) {
                    let error = format!(
                        "not tried: the tasks store is down (since {}, last error {} ms ago: {})",
                        h.down_since,
                        now.millis() - h.last_failure_at.millis(),
                        h.last_error
                    );
                    return self.defer(msg, &cid, ev.id, error, now);
                }
                match self.apply(&ev, &cid, now) {
                    Ok(()) => Ok(Handled::Applied {
                        correlation_id: cid,
                        task_id: ev.id,
                    }),
                    Err(Failure::Permanent(reason)) => {
                        self.dead_letter(msg, &cid, Some(ev.id), reason, now)
                    }
                    Err(Failure::Unavailable(error)) => {
                        self.mark_down(&cid, health, &error, now);
                        self.defer(msg, &cid, ev.id, error, now)
                    }
                    Err(Failure::Contended(error)) => self.defer(msg, &cid, ev.id, error, now),
                }
            }
        }
    }

    /// How many outbox records `id` has, and the `tasks` store's health
    /// record if any: one local round trip. When the local store cannot
    /// tell, the event applies directly, and the log says so.
    fn local_state(&self, cid: &str, id: &str) -> (i64, Option<StoreHealth>) {
        let wanted = [keys::pending(id), keys::TASKS_HEALTH.to_owned()];
        match self.local.get_many(&wanted) {
            Ok(values) => {
                let mut values = values.into_iter();
                let behind = values
                    .next()
                    .flatten()
                    .and_then(|v| decode_counter(&v))
                    .unwrap_or(0);
                let health = values
                    .next()
                    .flatten()
                    .and_then(|v| serde_json::from_slice(&v).ok());
                (behind, health)
            }
            Err(e) => {
                (self.log)(&format!(
                    "[{cid}] KV GET {} — FAILED: {e}; applying without the per-task order check",
                    wanted[0]
                ));
                (0, None)
            }
        }
    }

    /// Records that the `tasks` store just failed, so the next events defer
    /// at once instead of waiting on it (see [`StoreHealth`]).
    pub(crate) fn mark_down(
        &self,
        cid: &str,
        previous: Option<StoreHealth>,
        error: &str,
        now: Timestamp,
    ) {
        let first = previous.as_ref().is_none_or(|h| !h.is_down(now));
        let health = StoreHealth::failed(previous, error, now);
        let stored = serde_json::to_vec(&health)
            .map_err(|e| StoreError::Other(e.to_string()))
            .and_then(|v| {
                self.local
                    .set_many(vec![(keys::TASKS_HEALTH.to_owned(), v)])
            });
        match stored {
            Ok(()) if first => (self.log)(&format!(
                "[{cid}] STORE tasks is DOWN: {error}; events defer to the outbox until a retry succeeds"
            )),
            Ok(()) => {}
            Err(e) => (self.log)(&format!(
                "[{cid}] KV PUT {} — FAILED: {e}",
                keys::TASKS_HEALTH
            )),
        }
    }

    /// Applies a parsed event as of `now` (the event's own time on replay).
    /// The one code path for direct writes and retries.
    pub(crate) fn apply(&self, ev: &Event, cid: &str, now: Timestamp) -> Result<(), Failure> {
        let key = keys::task(&ev.id);
        if ev.kind == EventKind::Deleted {
            let start = Instant::now();
            self.tasks
                .delete_many(vec![key.clone()])
                .map_err(|e| self.store_failed(cid, "DELETE", &key, start, e))?;
            self.log_ok(cid, "DELETE", &key, start);
            self.restamp(cid, &ev.id);
            self.pages_changed(cid);
            self.verify(cid, &key, None);
            return Ok(());
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
            let next = match (ev.kind, &existing) {
                (EventKind::Updated, None) => {
                    return Err(Failure::Permanent(format!(
                        "update of unknown task {:?}",
                        ev.id
                    )));
                }
                (EventKind::Updated, Some(old)) => merge::updated(old, &ev.fields, now),
                _ => merge::created(existing.as_ref(), &ev.id, &ev.fields, now),
            };
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
                return Ok(());
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
                    return Ok(());
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

    /// With `verify_writes`, reads `key` back and logs whether it holds
    /// `expected` (`None`: deleted). A read that fails is logged as such;
    /// the write stands either way.
    fn verify(&self, cid: &str, key: &str, expected: Option<&[u8]>) {
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
    /// [`crate::TaskReader::with_page_cache`]): one local read, and a delete
    /// only when a cache exists.
    fn pages_changed(&self, cid: &str) {
        let gen_key = keys::PAGE_CACHE_GEN;
        let result = match self.local.get(gen_key) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => self.local.delete_many(vec![gen_key.to_owned()]),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            (self.log)(&format!(
                "[{cid}] KV DELETE {gen_key} — FAILED: {e}; cached listing pages may be stale until the next write"
            ));
        }
    }

    fn log_ok(&self, cid: &str, op: &str, key: &str, start: Instant) {
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
    fn new_stamp(&self) -> (String, Vec<u8>) {
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

    fn dead_letter(
        &self,
        msg: &Incoming,
        cid: &str,
        task_id: Option<String>,
        reason: String,
        now: Timestamp,
    ) -> Result<Handled, StoreError> {
        let key = keys::dead_letter(now.millis(), &(self.unique)());
        let record = DeadLetter {
            subject: msg.subject.to_owned(),
            raw: RawPayload::keep(msg.payload),
            correlation_id: cid.to_owned(),
            task_id,
            reason: reason.clone(),
            errors: Vec::new(),
            attempts: 0,
            received_at: None,
            at: now,
            replaying: None,
        };
        (self.log)(&format!("[{cid}] REJECT {}: {reason}", msg.subject));
        self.record(cid, &key, serde_json::to_vec(&record))?;
        Ok(Handled::Rejected {
            correlation_id: cid.to_owned(),
            key,
            reason,
        })
    }

    fn defer(
        &self,
        msg: &Incoming,
        cid: &str,
        task_id: String,
        error: String,
        now: Timestamp,
    ) -> Result<Handled, StoreError> {
        let entry = OutboxEntry::new(msg.subject, msg.payload, cid, &task_id, now)
            .failed(error.clone(), now);
        let key = self.enqueue(cid, &entry)?;
        (self.log)(&format!(
            "[{cid}] DEFER {} task={task_id} — {error} → {key} (retry in {} s)",
            msg.subject,
            delay_after(0).unwrap_or_default() / 1000
        ));
        Ok(Handled::Deferred {
            correlation_id: cid.to_owned(),
            key,
        })
    }

    fn queue(
        &self,
        msg: &Incoming,
        cid: &str,
        task_id: String,
        behind: i64,
        now: Timestamp,
    ) -> Result<Handled, StoreError> {
        let entry = OutboxEntry::new(msg.subject, msg.payload, cid, &task_id, now);
        let key = self.enqueue(cid, &entry)?;
        (self.log)(&format!(
            "[{cid}] QUEUE {} task={task_id} behind {behind} deferred event(s) → {key}",
            msg.subject
        ));
        Ok(Handled::Queued {
            correlation_id: cid.to_owned(),
            key,
            behind,
        })
    }

    /// Adds `entry` to the outbox; see [`crate::outbox::enqueue`].
    fn enqueue(&self, cid: &str, entry: &OutboxEntry) -> Result<String, StoreError> {
        crate::outbox::enqueue(self.local, entry).inspect_err(|e| {
            (self.log)(&format!(
                "[{cid}] KV PUT outbox — FAILED: {e}; the event is NOT recorded"
            ));
        })
    }

    fn record(
        &self,
        cid: &str,
        key: &str,
        json: Result<Vec<u8>, serde_json::Error>,
    ) -> Result<(), StoreError> {
        let bytes = json.map_err(|e| StoreError::Other(format!("encoding {key}: {e}")))?;
        self.local
            .set_many(vec![(key.to_owned(), bytes)])
            .inspect_err(|e| {
                (self.log)(&format!(
                    "[{cid}] KV PUT {key} — FAILED: {e}; the event is NOT recorded"
                ));
            })
    }
}
