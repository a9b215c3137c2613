//! Handling one message: validate, apply (through [`Writer::apply`]),
//! dead-letter what can never apply, defer what failed for now, and queue
//! behind a task's deferred events so they apply in order.

use tasks_domain::event;
use tasks_domain::{StreamPos, Timestamp, keys};

use crate::apply::{Failure, Writer};
use tasks_feed::counts::EventOutcome;
use tasks_kv::{AtomicKv, StoreError, decode_counter};
use tasks_outbox as outbox;
use tasks_outbox::OutboxEntry;
use tasks_outbox::dead_letters::{DeadLetter, Filed, RawPayload};
use tasks_outbox::health::{self, StoreHealth};

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
    /// Its sequence in a JetStream stream (the `spin-nats-stream-sequence`
    /// header), so a redelivery applies at most once.
    pub stream_sequence: Option<u64>,
    /// The epoch of that stream (the `spin-nats-stream-epoch` header): a
    /// stream made again starts its sequences again.
    pub stream_epoch: Option<u64>,
}

impl Incoming<'_> {
    /// Where it stands in its stream, if it came from one.
    pub fn stream_pos(&self) -> Option<StreamPos> {
        StreamPos::from_parts(self.stream_sequence, self.stream_epoch)
    }

    /// What the writer's line about this message ends with: its stream
    /// sequence, when it came from a stream (an operator matches it with
    /// `nats stream get`), else nothing. Written into the line itself, with
    /// no string of its own (one line per event).
    pub(crate) fn at(&self) -> StreamAt {
        StreamAt(self.stream_sequence)
    }
}

/// See [`Incoming::at`].
pub(crate) struct StreamAt(Option<u64>);

impl std::fmt::Display for StreamAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(seq) => write!(f, " (stream sequence {seq})"),
            None => Ok(()),
        }
    }
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

impl Handled {
    /// The correlation id the message was handled under.
    pub fn correlation_id(&self) -> &str {
        match self {
            Handled::Applied { correlation_id, .. }
            | Handled::Rejected { correlation_id, .. }
            | Handled::Deferred { correlation_id, .. }
            | Handled::Queued { correlation_id, .. } => correlation_id,
        }
    }
}

impl<T: AtomicKv, L: AtomicKv> Writer<'_, T, L> {
    pub(super) fn correlation_id(&self, from_payload: Option<&str>, msg: &Incoming) -> String {
        from_payload
            .or(msg
                .header_correlation_id
                .filter(|h| event::usable_correlation_id(h)))
            .map_or_else(|| (self.unique)(), str::to_owned)
    }

    /// Handles one message. `Err` only when the local store fails too, so
    /// the event could not even be recorded: the caller must report it.
    pub fn handle(&self, msg: &Incoming) -> Result<Handled, StoreError> {
        self.handle_parsed(msg, event::parse(msg.subject, msg.payload))
    }

    /// [`Writer::handle`] with the payload parsed already.
    pub(super) fn handle_parsed(
        &self,
        msg: &Incoming,
        parsed: Result<event::Event, event::Rejection>,
    ) -> Result<Handled, StoreError> {
        let now = (self.clock)();
        match parsed {
            Err(rejection) => {
                let cid = self.correlation_id(rejection.correlation_id.as_deref(), msg);
                self.dead_letter(msg, &cid, rejection.task_id, rejection.reason, now)
            }
            Ok(ev) => {
                let cid = self.correlation_id(ev.correlation_id.as_deref(), msg);
                (self.log)(&format!(
                    "[{cid}] {} task={}{}",
                    ev.kind.verb(),
                    ev.id,
                    msg.at()
                ));
                let (behind, health) = self.local_state(&cid, &ev.id);
                if behind > 0 {
                    return self.queue(msg, &cid, ev.id, behind, now);
                }
                if let Some(ms) = msg.handler_timed_out_ms {
                    let error = format!(
                        "the tasks store did not answer within {ms} ms (the trigger cancelled the call)"
                    );
                    health::mark_down(self.local, self.log, &cid, health, &error, now);
                    return self.defer(msg, &cid, ev.id, error, now);
                }
                if let Some(h) = health.as_ref().filter(|h| h.writer_defers(now)) {
                    let error = format!(
                        "not tried: the tasks store is down (since {}, last error {} ms ago: {})",
                        h.down_since,
                        now.millis() - h.last_failure_at.millis(),
                        h.last_error
                    );
                    return self.defer(msg, &cid, ev.id, error, now);
                }
                match self.apply(&ev, &cid, now, msg.stream_pos()) {
                    Ok(wrote) => {
                        self.counted(msg, applied_or_skipped(wrote));
                        Ok(Handled::Applied {
                            correlation_id: cid,
                            task_id: ev.id,
                        })
                    }
                    Err(Failure::Permanent(reason)) => {
                        self.dead_letter(msg, &cid, Some(ev.id), reason, now)
                    }
                    Err(Failure::Unavailable(error)) => {
                        health::mark_down(self.local, self.log, &cid, health, &error, now);
                        self.defer(msg, &cid, ev.id, error, now)
                    }
                    Err(Failure::Contended(error)) => self.defer(msg, &cid, ev.id, error, now),
                    Err(Failure::Fenced(reason)) => {
                        (self.log)(&format!("[{cid}] FENCED task={} — {reason}", ev.id));
                        Err(StoreError::Other(reason))
                    }
                    Err(Failure::NoFeed(reason)) => {
                        (self.log)(&format!(
                            "[{cid}] NOT WRITTEN task={} — {reason}; the event is delivered again",
                            ev.id
                        ));
                        Err(StoreError::Unavailable(reason))
                    }
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
                let health = health::read(values.next().flatten().as_deref());
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

    pub(super) fn dead_letter(
        &self,
        msg: &Incoming,
        cid: &str,
        task_id: Option<String>,
        reason: String,
        now: Timestamp,
    ) -> Result<Handled, StoreError> {
        self.fenced_record(cid)?;
        let key = keys::dead_letter(now.millis(), &(self.unique)());
        let record = DeadLetter {
            task_id,
            stream_seq: msg.stream_sequence,
            stream_epoch: msg.stream_epoch,
            ..DeadLetter::new(
                msg.subject,
                RawPayload::keep(msg.payload),
                cid,
                reason.clone(),
                now,
            )
        };
        // A stream event delivered again after it was dead-lettered (its
        // acknowledgement was lost, or the instance died before it, or it
        // was paused past ack_wait with it) is one dead letter, not two.
        let filed = record.file_once(self.local, &key, false).inspect_err(|e| {
            (self.log)(&format!(
                "[{cid}] KV PUT {key} — FAILED: {e}; the event is NOT recorded"
            ));
        })?;
        let subject = msg.subject;
        let at = msg.at();
        match &filed {
            Filed::New(_) => {
                (self.log)(&format!("[{cid}] REJECT {subject}: {reason}{at}"));
                self.counted(msg, EventOutcome::Rejected);
            }
            Filed::Earlier(earlier) => (self.log)(&format!(
                "[{cid}] REJECT {subject}: {reason} (delivered again: dead-lettered already as {earlier}){at}"
            )),
            Filed::Replayed(earlier) => (self.log)(&format!(
                "[{cid}] REJECT {subject}: {reason} (delivered again: dead-lettered as {earlier} and replayed since){at}"
            )),
        }
        Ok(Handled::Rejected {
            correlation_id: cid.to_owned(),
            key: filed.key().to_owned(),
            reason,
        })
    }

    pub(super) fn defer(
        &self,
        msg: &Incoming,
        cid: &str,
        task_id: String,
        error: String,
        now: Timestamp,
    ) -> Result<Handled, StoreError> {
        self.fenced_record(cid)?;
        let mut entry = outbox_entry(msg, cid, &task_id, now);
        let delay = entry.backoff.first_failed(now, error.clone());
        let key = self.enqueue(cid, &entry)?;
        self.counted(msg, EventOutcome::Deferred);
        (self.log)(&format!(
            "[{cid}] DEFER {} task={task_id} — {error} → {key} (retry in {} s)",
            msg.subject,
            delay / 1000
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
        self.fenced_record(cid)?;
        let entry = outbox_entry(msg, cid, &task_id, now);
        let key = self.enqueue(cid, &entry)?;
        self.counted(msg, EventOutcome::Queued);
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

    /// [`Writer::fence`] before a local record (dead letter, outbox): after
    /// the lease another instance records the event, once.
    fn fenced_record(&self, cid: &str) -> Result<(), StoreError> {
        self.fence().map_err(|f| {
            let reason = match f {
                Failure::Fenced(r) => r,
                other => format!("{other:?}"),
            };
            (self.log)(&format!("[{cid}] FENCED — {reason}"));
            StoreError::Other(reason)
        })
    }

    /// Counts what became of `msg` (once it is recorded).
    pub(super) fn counted(&self, msg: &Incoming, outcome: EventOutcome) {
        self.journal.count(|c| c.event(msg.subject, outcome));
    }

    /// Adds `entry` to the outbox; see [`outbox::enqueue`].
    fn enqueue(&self, cid: &str, entry: &OutboxEntry) -> Result<String, StoreError> {
        outbox::enqueue(self.local, entry).inspect_err(|e| {
            (self.log)(&format!(
                "[{cid}] KV PUT outbox — FAILED: {e}; the event is NOT recorded"
            ));
        })
    }
}

/// How an event that went through [`Writer::apply`] counts.
pub(super) fn applied_or_skipped(wrote: bool) -> EventOutcome {
    if wrote {
        EventOutcome::Applied
    } else {
        EventOutcome::Skipped
    }
}

/// The outbox record of `msg`, received at `now`, due at once.
fn outbox_entry(msg: &Incoming, cid: &str, task_id: &str, now: Timestamp) -> OutboxEntry {
    OutboxEntry {
        stream_seq: msg.stream_sequence,
        stream_epoch: msg.stream_epoch,
        ..OutboxEntry::new(msg.subject, msg.payload, cid, task_id, now)
    }
}
