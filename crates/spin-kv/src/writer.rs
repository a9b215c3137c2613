//! The writer component's work for NATS messages, over Spin: the
//! correlation, handler-timeout and stream-sequence headers read,
//! [`Writer::handle_batch`] over the `tasks` store the runtime config
//! chooses and the given local store, and one signed purge sent to a remote
//! web for the tasks written directly.
//!
//! The local store is a parameter so a benchmark can build a variant of the
//! component around the same code (bench/writer-no-order-check).

use std::time::Instant;

use tasks_domain::{CORRELATION_HEADER, Timestamp};
use tasks_storage::feed::Journal;
use tasks_storage::{AtomicKv, Handled, Incoming, StoreError, Writer};
use trigger_nats_core::{HANDLER_TIMEOUT_HEADER, STREAM_SEQUENCE_HEADER};

use crate::tasks::TasksStore;
use crate::{feed, log, notify, unique};

/// One message as the trigger hands it over.
pub struct Delivery<'a> {
    /// NATS subject.
    pub subject: &'a str,
    /// Payload bytes.
    pub payload: &'a [u8],
    /// Headers, in order.
    pub headers: &'a [(String, String)],
    /// Its JetStream stream sequence when the trigger gave it apart from
    /// the headers (the batch export); else the header's.
    pub stream_sequence: Option<u64>,
}

impl<'a> Delivery<'a> {
    fn header(&self, wanted: &str) -> Option<&'a str> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.as_str())
    }

    fn incoming(&self) -> Incoming<'a> {
        Incoming {
            subject: self.subject,
            payload: self.payload,
            header_correlation_id: self.header(CORRELATION_HEADER),
            handler_timed_out_ms: self
                .header(HANDLER_TIMEOUT_HEADER)
                .and_then(|v| v.parse().ok()),
            stream_sequence: self
                .stream_sequence
                .or_else(|| self.header(STREAM_SEQUENCE_HEADER)?.parse().ok()),
        }
    }
}

/// Handles the messages in order, one outcome each: `Ok` whenever the event
/// is safely recorded (applied, dead-lettered or deferred); `Err` only when
/// not even the local store could record it. Each change goes to the change
/// feed and each outcome to the counters behind `/metrics`.
pub fn handle_messages<L: AtomicKv>(
    deliveries: &[Delivery],
    local: &L,
) -> Vec<Result<(), StoreError>> {
    handle_messages_with(deliveries, local, Journal::new())
}

/// [`handle_messages`] recording into `journal` (the writer's `uncounted`
/// build, for bench/counting.sh, passes [`Journal::uncounted`]).
pub fn handle_messages_with<L: AtomicKv>(
    deliveries: &[Delivery],
    local: &L,
    journal: Journal,
) -> Vec<Result<(), StoreError>> {
    // The backend the runtime config chooses, opened on first use. A tasks
    // store that cannot even be opened is a store failure like any other:
    // the events go to the outbox through the same path.
    let start = Instant::now();
    let tasks = TasksStore::from_config();
    let writer = Writer {
        tasks: &tasks,
        local,
        clock: &Timestamp::now,
        unique: &unique,
        log: &log,
        verify_writes: notify::verify_writes(),
        journal: &journal,
    };
    let incoming: Vec<Incoming> = deliveries.iter().map(Delivery::incoming).collect();
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
    feed::commit(&journal, cid);
    outcomes.into_iter().map(|o| o.map(drop)).collect()
}

/// [`handle_messages`] for one message.
pub fn handle_message<L: AtomicKv>(
    subject: &str,
    payload: &[u8],
    headers: &[(String, String)],
    local: &L,
) -> Result<(), StoreError> {
    let delivery = Delivery {
        subject,
        payload,
        headers,
        stream_sequence: None,
    };
    handle_messages(std::slice::from_ref(&delivery), local)
        .pop()
        .unwrap_or(Ok(()))
}
