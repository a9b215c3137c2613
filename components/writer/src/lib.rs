//! `writer`: the NATS-triggered component. Exports `handle-batch`
//! (`plugins/trigger-nats/wit`, world `nats-batch-trigger`): each batch goes to
//! [`tasks_spin_kv::writer::handle_messages`] ([`tasks_storage::Writer`] over
//! Spin key-value, a whole JetStream pull in few store calls): task documents
//! in the `tasks` store; dead letters and the outbox in the local `default`
//! store.
//!
//! A message's outcome is Ok whenever its event is safely recorded —
//! applied, dead-lettered or deferred — so a malformed event is not
//! redelivered forever; an error only when it could not be recorded at all.

use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::LOCAL_STORE;
use tasks_storage::StoreError;
use tasks_storage::feed::Journal;

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "nats-batch-trigger",
        path: "../../plugins/trigger-nats/wit",
    });

    use super::WriterComponent;
    export!(WriterComponent);
}

use bindings::spin_nats::trigger::types::{Delivery, Error};
use tasks_spin_kv::writer::{self, handle_messages_with};

struct WriterComponent;

fn not_recorded(e: StoreError) -> Error {
    Error::Other(format!("event not recorded: {e}"))
}

impl bindings::Guest for WriterComponent {
    fn handle_batch(batch: Vec<Delivery>) -> Vec<Result<(), Error>> {
        let local = match SpinKv::open(LOCAL_STORE) {
            Ok(local) => local,
            Err(e) => return vec![Err(not_recorded(e)); batch.len()],
        };
        let deliveries: Vec<writer::Delivery> = batch
            .iter()
            .map(|d| writer::Delivery {
                subject: &d.message.subject,
                payload: &d.message.payload,
                headers: &d.message.headers,
                stream_sequence: d.jetstream.map(|s| s.sequence),
            })
            .collect();
        // The `uncounted` feature (bench/counting.sh only) measures what counting costs.
        let journal = if cfg!(feature = "uncounted") {
            Journal::uncounted()
        } else {
            Journal::new()
        };
        handle_messages_with(&deliveries, &local, journal)
            .into_iter()
            .map(|o| o.map_err(not_recorded))
            .collect()
    }
}
