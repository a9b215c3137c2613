//! The writer component's work for one NATS message, over Spin: the
//! correlation and handler-timeout headers read, [`Writer::handle`] over the
//! `tasks` store the runtime config chooses and the given local store, and a
//! signed purge sent to a remote web after a direct write.
//!
//! The local store is a parameter so a benchmark can build a variant of the
//! component around the same code (bench/writer-no-order-check).

use nats_trigger_core::{HANDLER_TIMEOUT_HEADER, STREAM_SEQUENCE_HEADER};
use tasks_domain::{CORRELATION_HEADER, Timestamp};
use tasks_storage::{AtomicKv, Handled, Incoming, StoreError, Writer};

use crate::tasks::TasksStore;
use crate::{log, notify, unique};

/// Handles one message. `Ok` whenever the event is safely recorded
/// (applied, dead-lettered or deferred); `Err` only when not even the local
/// store could record it.
pub fn handle_message<L: AtomicKv>(
    subject: &str,
    payload: &[u8],
    headers: &[(String, String)],
    local: &L,
) -> Result<(), StoreError> {
    // The backend the runtime config chooses, opened on first use. A tasks
    // store that cannot even be opened is a store failure like any other:
    // the event goes to the outbox through the same path.
    let tasks = TasksStore::from_config();
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.as_str())
    };
    let writer = Writer {
        tasks: &tasks,
        local,
        clock: &Timestamp::now,
        unique: &unique,
        log: &log,
        verify_writes: notify::verify_writes(),
    };
    let handled = writer.handle(&Incoming {
        subject,
        payload,
        header_correlation_id: header(CORRELATION_HEADER),
        handler_timed_out_ms: header(HANDLER_TIMEOUT_HEADER).and_then(|v| v.parse().ok()),
        stream_sequence: header(STREAM_SEQUENCE_HEADER).and_then(|v| v.parse().ok()),
    })?;
    // With Spin's own store the write is in place now; on Cloudflare the
    // retrier tells the web after the flush.
    if let (
        Handled::Applied {
            correlation_id,
            task_id,
        },
        TasksStore::Spin(_),
    ) = (&handled, &tasks)
    {
        notify::purge_remote_web(std::slice::from_ref(task_id), correlation_id, &log);
    }
    Ok(())
}
