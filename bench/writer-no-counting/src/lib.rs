//! The writer component as shipped (`handle-batch`), except that nothing is
//! counted for `/metrics`: the change feed is written the same, one
//! increment and one `set-many` per call, without the counts. bench/counting.sh
//! runs it next to the shipped writer to measure what counting costs.

use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::LOCAL_STORE;
use tasks_spin_kv::writer::{self, handle_messages_with};
use tasks_storage::StoreError;
use tasks_storage::feed::Journal;

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "nats-batch-trigger",
        path: "../../plugins/trigger-nats/wit",
    });

    use super::Variant;
    export!(Variant);
}

use bindings::spin_nats::trigger::types::{Delivery, Error};

struct Variant;

fn not_recorded(e: StoreError) -> Error {
    Error::Other(format!("event not recorded: {e}"))
}

impl bindings::Guest for Variant {
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
        handle_messages_with(&deliveries, &local, Journal::uncounted())
            .into_iter()
            .map(|o| o.map_err(not_recorded))
            .collect()
    }
}
