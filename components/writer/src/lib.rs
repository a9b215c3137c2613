//! `writer`: the NATS-triggered component. Hands each message to
//! [`tasks_spin_kv::writer::handle_message`] ([`tasks_storage::Writer`] over
//! Spin key-value): task documents in the `tasks` store; dead letters and the
//! outbox in the local `default` store.
//!
//! Returns Ok whenever the event is safely recorded — applied, dead-lettered
//! or deferred — so a malformed event is not redelivered forever. Returns an
//! error only when it could not be recorded at all.

use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::LOCAL_STORE;
use tasks_storage::StoreError;

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

struct WriterComponent;

fn not_recorded(e: StoreError) -> Error {
    Error::Other(format!("event not recorded: {e}"))
}

impl bindings::Guest for WriterComponent {
    fn handle_message(message: Message) -> Result<(), Error> {
        let local = SpinKv::open(LOCAL_STORE).map_err(not_recorded)?;
        tasks_spin_kv::writer::handle_message(
            &message.subject,
            &message.payload,
            &message.headers,
            &local,
        )
        .map_err(not_recorded)
    }
}
