//! `writer`: the NATS-triggered component. Hands each message to
//! [`tasks_storage::Writer`] over Spin key-value: task documents in the
//! `tasks` store; dead letters and the outbox in the local `default` store.
//!
//! Returns Ok whenever the event is safely recorded — applied, dead-lettered
//! or deferred — so a malformed event is not redelivered forever. Returns an
//! error only when it could not be recorded at all.

use tasks_domain::Timestamp;
use tasks_spin_kv::SpinKv;
use tasks_storage::{Incoming, StoreError, Writer};

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

/// Store label of task documents (the backend chosen by runtime config).
const TASKS_STORE: &str = "tasks";
/// Store label of dead letters and the outbox (always local).
const LOCAL_STORE: &str = "default";
/// The message header that may carry a correlation id.
const CORRELATION_HEADER: &str = "x-correlation-id";

struct WriterComponent;

fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn log(line: &str) {
    println!("{line}");
}

fn not_recorded(e: StoreError) -> Error {
    Error::Other(format!("event not recorded: {e}"))
}

impl bindings::Guest for WriterComponent {
    fn handle_message(message: Message) -> Result<(), Error> {
        let local = SpinKv::open(LOCAL_STORE).map_err(not_recorded)?;
        // A tasks store that cannot even be opened is a store failure like
        // any other: the event goes to the outbox through the same path.
        let tasks = SpinKv::open_lenient(TASKS_STORE);
        let header = message
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(CORRELATION_HEADER))
            .map(|(_, value)| value.as_str());
        let writer = Writer {
            tasks: &tasks,
            local: &local,
            clock: &Timestamp::now,
            unique: &unique,
            log: &log,
        };
        writer
            .handle(&Incoming {
                subject: &message.subject,
                payload: &message.payload,
                header_correlation_id: header,
            })
            .map(|_| ())
            .map_err(not_recorded)
    }
}
