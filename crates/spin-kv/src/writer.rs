//! The writer component's work for NATS messages, over Spin: the
//! correlation, handler-timeout and stream-sequence headers read,
//! [`Writer::handle_batch`] over the `tasks` store the runtime config
//! chooses and the given local store, and one signed purge sent to a remote
//! web for the tasks written directly.
//!
//! The local store is a parameter so a benchmark can build a variant of the
//! component around the same code (bench/writer-no-order-check).

use std::time::Instant;

use tasks_apply::{Handled, Incoming, Writer};
use tasks_domain::{CORRELATION_HEADER, Timestamp};
use tasks_feed::Journal;
use tasks_kv::{AtomicKv, StoreError};
use tasks_retry::{self as retry, Retrier};
use trigger_nats_sdk::Message;

use crate::tasks::TasksStore;
use crate::{SpinKv, feed, log, notify, unique};

/// What the storage logic needs of a message: the correlation header, the
/// trigger's handler-timeout mark and the JetStream sequence, read through
/// the SDK's conventions.
fn incoming(m: &Message) -> Incoming<'_> {
    Incoming {
        subject: &m.subject,
        payload: &m.payload,
        header_correlation_id: m.header(CORRELATION_HEADER),
        handler_timed_out_ms: m.handler_timed_out_ms(),
        stream_sequence: m.stream_sequence(),
        stream_epoch: m.stream_epoch(),
    }
}

/// The writer over Spin's stores as the components run it: the wall
/// clock, Spin's ids and log, the runtime config's `verify_writes`, no
/// delivery lease (callers set `commit_until`).
pub fn over_spin<'a, L: AtomicKv>(
    tasks: &'a TasksStore,
    local: &'a L,
    journal: &'a Journal,
    feed: &'a SpinKv,
) -> Writer<'a, TasksStore, L> {
    Writer {
        tasks,
        local,
        clock: &Timestamp::now,
        unique: &unique,
        log: &log,
        verify_writes: notify::verify_writes(),
        journal,
        feed,
        commit_until: None,
    }
}

/// The earliest lease end of the messages (the plugin gives every message
/// of a call the same one): past it the writer writes nothing.
fn commit_until(messages: &[Message]) -> Option<Timestamp> {
    messages
        .iter()
        .filter_map(Message::lease_until_ms)
        .min()
        .map(|ms| Timestamp(i64::try_from(ms).unwrap_or(i64::MAX)))
}

/// Handles the messages in order, one outcome each: `Ok` whenever the event
/// is safely recorded (applied, dead-lettered or deferred); `Err` only when
/// not even the local store could record it, or the change feed could not
/// be written. Each change goes to the change feed and each outcome to the
/// counters behind `/metrics`.
pub fn handle_messages<L: AtomicKv>(
    messages: &[Message],
    local: &L,
) -> Vec<Result<(), StoreError>> {
    handle_messages_with(messages, local, Journal::new())
}

/// [`handle_messages`] recording into `journal` (the writer's `uncounted`
/// build, for bench/counting.sh, passes [`Journal::uncounted`]).
pub fn handle_messages_with<L: AtomicKv>(
    messages: &[Message],
    local: &L,
    journal: Journal,
) -> Vec<Result<(), StoreError>> {
    // The backend the runtime config chooses, opened on first use. A tasks
    // store that cannot even be opened is a store failure like any other:
    // the events go to the outbox through the same path.
    let start = Instant::now();
    let tasks = TasksStore::from_config();
    let feed_store = feed::store();
    let incoming: Vec<Incoming> = messages.iter().map(incoming).collect();
    let writer = Writer {
        commit_until: commit_until(messages),
        ..over_spin(&tasks, local, &journal, &feed_store)
    };
    let outcomes = writer.handle_batch(&incoming);
    // With Spin's own store the writes are in place now; on Cloudflare the
    // retrier tells the web after the flush.
    if let TasksStore::Spin(_) = &tasks {
        let mut written: Vec<String> = Vec::new();
        let mut correlation = None;
        for outcome in &outcomes {
            if let Ok(Handled::Applied {
                correlation_id,
                task_id,
            }) = outcome
            {
                if !written.contains(task_id) {
                    written.push(task_id.clone());
                }
                correlation.get_or_insert(correlation_id.as_str());
            }
        }
        if let Some(cid) = correlation {
            notify::purge_remote_web(&written, cid, &log);
        }
    }
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let recorded = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
    journal.count(|c| c.processing(micros, recorded));
    let cid = outcomes
        .iter()
        .flatten()
        .map(Handled::correlation_id)
        .next()
        .unwrap_or("-");
    if let Err(failure) = writer.commit_journal() {
        // Not acknowledged: delivered again, the events are found applied
        // and their changes recorded then (a core NATS message is not
        // delivered again; its changes are lost to the feed, not its writes).
        log(&format!(
            "[{cid}] FEED — {failure:?}; the call's messages are not acknowledged"
        ));
        let reason = format!("not acknowledged: {failure:?}");
        return outcomes
            .iter()
            .map(|_| Err(StoreError::Unavailable(reason.clone())))
            .collect();
    }
    if matches!(tasks, TasksStore::Spin(_)) && retry::replay_after(&outcomes) {
        replay_outbox(&writer, cid, Quiet::Never);
    }
    outcomes.into_iter().map(|o| o.map(drop)).collect()
}

/// The writer's call with no message (its entry's `tick_ms`): the outbox
/// replay [`handle_messages_with`] runs after a call that queued, run on a
/// schedule as well. A backlog whose tasks get no new event after the store
/// returns then goes within a tick, on the trigger's store client, instead
/// of waiting for the cron retrier's, which may take a minute to reconnect
/// (docs/decisions.md). Only with Spin's own `tasks` store, as after a call;
/// logs only when it found records to replay. Each tick is recorded
/// ([`retry::record_writer_tick`]): while they come, the cron retrier
/// replays nothing.
pub fn handle_tick<L: AtomicKv>(local: &L) {
    let tasks = TasksStore::from_config();
    if !matches!(tasks, TasksStore::Spin(_)) {
        return;
    }
    let journal = Journal::new();
    let feed_store = feed::store();
    let writer = over_spin(&tasks, local, &journal, &feed_store);
    // While these ticks run, the cron retrier leaves the outbox to them.
    if let Err(e) = retry::record_writer_tick(local, Timestamp::now()) {
        log(&format!(
            "[-] KV PUT {} — FAILED: {e}; the cron retrier replays the outbox",
            tasks_domain::keys::WRITER_TICK
        ));
    }
    replay_outbox(&writer, "-", Quiet::WhenNothingToDo);
}

/// Whether [`replay_outbox`] logs a tick that found nothing to replay.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quiet {
    Never,
    WhenNothingToDo,
}

/// One retrier tick in the writer's call, on its own store clients (see
/// [`retry::replay_after`]): not fenced by the delivery's lease (the tick
/// claims what it replays, and writes nothing once its claims lapse), with a
/// journal of its own, committed after it; it leaves the counters' reconcile
/// to the cron retrier.
fn replay_outbox<T: AtomicKv, L: AtomicKv>(writer: &Writer<'_, T, L>, cid: &str, quiet: Quiet) {
    let journal = Journal::new();
    let replayer = Writer {
        journal: &journal,
        commit_until: None,
        ..*writer
    };
    let tick = Retrier {
        writer: &replayer,
        budget_millis: retry::WRITER_REPLAY_MILLIS,
        reconcile: false,
        replay: true,
        claim_millis: retry::WRITER_CLAIM_MILLIS,
    }
    .tick();
    // What the tick applied goes to the change feed even if it then failed
    // (the runs commit only what they settled).
    if let Err(e) = replayer.commit_journal() {
        log(&format!(
            "[{cid}] FEED after the writer's outbox replay — {e:?}; the records it applied stay in the outbox"
        ));
    }
    match tick {
        Ok(r)
            if quiet == Quiet::WhenNothingToDo
                && r.applied + r.already_applied + r.rescheduled + r.dead == 0 => {}
        Ok(r) => log(&format!(
            "[{cid}] OUTBOX replayed in the writer: {} applied, {} applied already, {} rescheduled, {} dead, {} tasks left to other runs",
            r.applied, r.already_applied, r.rescheduled, r.dead, r.skipped
        )),
        Err(e) => log(&format!(
            "[{cid}] OUTBOX replay in the writer — local store failed: {e}; the retrier replays it"
        )),
    }
}
