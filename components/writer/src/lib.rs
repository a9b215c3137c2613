//! `writer`: the NATS-triggered component. Hands each message to
//! [`tasks_storage::Writer`] over Spin key-value: task documents in the
//! `tasks` store; dead letters and the outbox in the local `default` store.
//!
//! Returns Ok whenever the event is safely recorded — applied, dead-lettered
//! or deferred — so a malformed event is not redelivered forever. Returns an
//! error only when it could not be recorded at all.

use tasks_domain::Timestamp;
use tasks_spin_kv::notify;
use tasks_spin_kv::tasks::LOCAL_STORE;
use tasks_spin_kv::tasks::TasksStore;
use tasks_spin_kv::{SpinKv, log, unique};
use tasks_storage::{Handled, Incoming, StoreError, Writer};

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "nats-trigger",
        path: "../../wit/spin-nats",
    });

    use super::WriterComponent;
    export!(WriterComponent);
}

use bindings::{Error, Message};

/// The message header that may carry a correlation id.
const CORRELATION_HEADER: &str = "x-correlation-id";
/// Added by trigger-nats to the second call for a message whose first call
/// ran past `handler_timeout_ms` (its value: that timeout in milliseconds).
const HANDLER_TIMEOUT_HEADER: &str = "spin-nats-handler-timeout";

struct WriterComponent;

fn not_recorded(e: StoreError) -> Error {
    Error::Other(format!("event not recorded: {e}"))
}

impl bindings::Guest for WriterComponent {
    fn handle_message(message: Message) -> Result<(), Error> {
        let local = SpinKv::open(LOCAL_STORE).map_err(not_recorded)?;
        // The backend the runtime config chooses, opened on first use. A
        // tasks store that cannot even be opened is a store failure like any
        // other: the event goes to the outbox through the same path.
        let tasks = TasksStore::from_config();
        let header_value = |wanted: &str| {
            message
                .headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value.as_str())
        };
        let header = header_value(CORRELATION_HEADER);
        let timed_out = header_value(HANDLER_TIMEOUT_HEADER).and_then(|v| v.parse().ok());
        #[cfg(feature = "bench-no-order-check")]
        let local = unchecked::Unchecked(local);
        let writer = Writer {
            tasks: &tasks,
            local: &local,
            clock: &Timestamp::now,
            unique: &unique,
            log: &log,
            verify_writes: notify::verify_writes(),
        };
        writer
            .handle(&Incoming {
                subject: &message.subject,
                payload: &message.payload,
                header_correlation_id: header,
                handler_timed_out_ms: timed_out,
            })
            .map(|handled| {
                // With Spin's own store the write is in place now; on
                // Cloudflare the retrier tells the web after the flush.
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
            })
            .map_err(not_recorded)
    }
}

/// Benchmark-only local store that answers the writer's order check (the
/// `pending:<id>` + store-health read) with "nothing" without asking Spin.
#[cfg(feature = "bench-no-order-check")]
mod unchecked {
    use tasks_domain::keys;
    use tasks_spin_kv::notify;
    use tasks_spin_kv::tasks::LOCAL_STORE;
    use tasks_spin_kv::tasks::TasksStore;
    use tasks_spin_kv::{SpinKv, log, unique};
    use tasks_storage::{AtomicKv, KeyValue, StoreError};

    pub(crate) struct Unchecked(pub(crate) SpinKv);

    impl KeyValue for Unchecked {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.0.get(key)
        }
        fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
            if keys
                .first()
                .is_some_and(|k| k.starts_with(keys::PENDING_PREFIX))
            {
                return Ok(vec![None; keys.len()]);
            }
            self.0.get_many(keys)
        }
        fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
            self.0.set_many(pairs)
        }
        fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
            self.0.delete_many(keys)
        }
        fn list_keys(&self) -> Result<Vec<String>, StoreError> {
            self.0.list_keys()
        }
    }

    impl AtomicKv for Unchecked {
        type Cas = <SpinKv as AtomicKv>::Cas;
        fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
            self.0.cas_read(key)
        }
        fn cas_write(&self, cas: Self::Cas, value: Vec<u8>) -> Result<bool, StoreError> {
            self.0.cas_write(cas, value)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            self.0.increment(key, delta)
        }
    }
}
