//! `retrier`: the cron-triggered component. Each run is one
//! [`tasks_retry::Retrier`] tick over Spin key-value: due outbox records
//! are claimed, applied through the writer's own code path in per-task
//! order, rescheduled (1 s, 3 s, 10 s, 20 s, 30 s) or dead-lettered. While
//! the writer replays the outbox on its own ticks (Spin's own `tasks` store,
//! `tasks_retry::writer_ticks`), a run only counts and reconciles.
//!
//! A run that finds nothing to do logs nothing. Overlapping runs are safe:
//! each task's records are claimed with compare-and-swap first.

use tasks_cloud_flush::Flusher;
use tasks_domain::Timestamp;
use tasks_feed::metrics::{self, Gauges};
use tasks_feed::{GAP_MILLIS, Journal};
use tasks_kv::StoreError;
use tasks_retry::Retrier;
use tasks_spin_kv::tasks::LOCAL_STORE;
use tasks_spin_kv::tasks::TasksStore;
use tasks_spin_kv::writer::over_spin;
use tasks_spin_kv::{SpinKv, log, unique};
use tasks_spin_kv::{feed, notify};

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "spin-cron",
        path: "../../wit/spin-cron",
    });

    use super::RetrierComponent;
    export!(RetrierComponent);
}

use bindings::spin::cron::cron_types::{Error, Metadata};

/// A run stops starting new tasks after this long; the next run goes on.
const BUDGET_MILLIS: i64 = 5_000;

struct RetrierComponent;

fn failed(e: StoreError) -> Error {
    Error::Other(format!("retrier: local store failed: {e}"))
}

impl bindings::Guest for RetrierComponent {
    fn handle_cron_event(_metadata: Metadata) -> Result<(), Error> {
        let local = SpinKv::open(LOCAL_STORE).map_err(failed)?;
        let tasks = TasksStore::from_config();
        if let Some(cloud) = tasks.cloud() {
            // Cloudflare: first send the writes that landed in the working
            // copy, in bulk, coalesced (their own backoff and dead letters).
            let (cache, flush_local, remote) = cloud.parts();
            Flusher {
                cache,
                local: flush_local,
                remote,
                clock: &Timestamp::now,
                unique: &unique,
                log: &log,
            }
            .flush()
            .map(|report| {
                let ids: Vec<String> = report
                    .keys
                    .iter()
                    .filter_map(|k| tasks_domain::keys::task_id(k).map(str::to_owned))
                    .collect();
                notify::purge_remote_web(&ids, "-", &log);
            })
            .map_err(failed)?;
        }
        let journal = Journal::new();
        let feed_store = feed::store();
        let writer = over_spin(&tasks, &local, &journal, &feed_store);
        // On Spin's own store the writer's ticks replay the outbox while they
        // run (on trigger-nats's client, which reconnects within a second).
        let replay = tasks.cloud().is_some()
            || !tasks_retry::writer_ticks(&local, Timestamp::now()).map_err(failed)?;
        let report = Retrier {
            writer: &writer,
            budget_millis: BUDGET_MILLIS,
            reconcile: true,
            replay,
            claim_millis: tasks_retry::CLAIM_MILLIS,
        }
        .tick();
        // What the run applied goes to the change feed even if it then
        // failed; then the counters are folded, with the gauges it measured.
        feed::commit(&journal, &feed_store, "-");
        let report = report.map_err(failed)?;
        let gauges = Gauges {
            outbox: report.found as u64,
            dead_letters: report.dead_letters as u64,
        };
        match metrics::compact(&feed_store, Some(gauges), Timestamp::now()) {
            Err(e) => log(&format!("[-] METRICS compaction — FAILED: {e}")),
            Ok(c) if c.gave_up > 0 || c.folded_late > 0 => log(&format!(
                "[-] METRICS stepped over {} numbers whose counts had not come after {} ms; folded {} counts written late",
                c.gave_up, GAP_MILLIS, c.folded_late
            )),
            Ok(_) => {}
        }
        if report.applied + report.already_applied + report.rescheduled + report.dead > 0 {
            log(&format!(
                "[-] TICK outbox={} applied={} already_applied={} rescheduled={} dead={} skipped={}",
                report.found,
                report.applied,
                report.already_applied,
                report.rescheduled,
                report.dead,
                report.skipped
            ));
        }
        Ok(())
    }
}
