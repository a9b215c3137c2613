//! `writer`: the NATS-triggered component. Exports `handle-batch` through
//! the trigger's guest SDK (`#[nats_component]` on a function taking the
//! batch): each batch goes to [`tasks_spin_kv::writer::handle_messages`]
//! (`tasks_apply::Writer` over Spin key-value, a whole JetStream pull in
//! few store calls): task documents in the `tasks` store; dead letters and
//! the outbox in the local `default` store; changes and counts in `feed`.
//!
//! A message's outcome is Ok whenever its event is safely recorded —
//! applied, dead-lettered or deferred — so a malformed event is not
//! redelivered forever; an error only when it could not be recorded at all.

use tasks_feed::Journal;
use tasks_spin_kv::tasks::LOCAL_STORE;
use tasks_spin_kv::writer::{handle_messages_with, handle_tick};
use tasks_spin_kv::{SpinKv, log_in_batches};
use trigger_nats_sdk::{Error, Message, nats_component};

#[nats_component]
fn handle(batch: Vec<Message>) -> Vec<Result<(), Error>> {
    // One write for the lines logged between two store calls, not one per line.
    log_in_batches(|| handle_in_batches(batch))
}

fn handle_in_batches(batch: Vec<Message>) -> Vec<Result<(), Error>> {
    let not_recorded = |e| Error::new(format!("event not recorded: {e}"));
    let local = match SpinKv::open(LOCAL_STORE) {
        Ok(local) => local,
        Err(e) => return vec![Err(not_recorded(e)); batch.len()],
    };
    // A call with no message is the entry's tick (`tick_ms`): a backlog the
    // outbox holds is replayed once the store answers, new events or not.
    if batch.is_empty() {
        handle_tick(&local);
        return Vec::new();
    }
    // The `uncounted` feature (bench/counting.sh only) measures what counting costs.
    let journal = if cfg!(feature = "uncounted") {
        Journal::uncounted()
    } else {
        Journal::new()
    };
    handle_messages_with(&batch, &local, journal)
        .into_iter()
        .map(|o| o.map_err(not_recorded))
        .collect()
}
