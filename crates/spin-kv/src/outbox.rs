//! One replay of the outbox over Spin ([`Retrier::tick`]): what the
//! cron-triggered retrier does each second, and what the writer does
//! after a call that left events waiting there.
//!
//! Why the writer too: the retrier runs under trigger-cron, on Spin's own
//! Redis store, which may take a minute or two to reconnect after an
//! outage (`docs/decisions.md`); the writer runs under trigger-nats, whose
//! Redis client is back within a second. Without it, every event of a task
//! with parked events queues behind them until a retrier run gets through.
//! Overlapping replays are safe: each task's records are claimed by
//! compare-and-swap first, and one replay at a time probes a store marked
//! down.

use tasks_domain::Timestamp;
use tasks_storage::feed::Journal;
use tasks_storage::{AtomicKv, Retrier, StoreError, TickReport, Writer};

use crate::tasks::TasksStore;
use crate::{feed, log, notify, unique};

/// Replays the due outbox records (all of them when a probe finds the
/// `tasks` store up again), starting no new task after `budget_millis`;
/// the changes go to the change feed, and a replay that did something
/// logs one `TICK` line. `Err` only when the local store fails.
pub fn replay<L: AtomicKv>(
    tasks: &TasksStore,
    local: &L,
    budget_millis: i64,
) -> Result<TickReport, StoreError> {
    let journal = Journal::new();
    let feed_store = feed::store();
    let writer = Writer {
        tasks,
        local,
        clock: &Timestamp::now,
        unique: &unique,
        log: &log,
        verify_writes: notify::verify_writes(),
        journal: &journal,
        feed: &feed_store,
        commit_until: None,
    };
    let report = Retrier {
        writer: &writer,
        budget_millis,
    }
    .tick();
    // What the replay applied goes to the change feed even if it then failed.
    feed::commit(&journal, &feed_store, "-");
    if let Ok(r) = &report
        && r.applied + r.already_applied + r.rescheduled + r.dead > 0
    {
        log(&format!(
            "[-] TICK outbox={} applied={} already_applied={} rescheduled={} dead={} skipped={}",
            r.found, r.applied, r.already_applied, r.rescheduled, r.dead, r.skipped
        ));
    }
    report
}
