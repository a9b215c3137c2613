//! The writer component as shipped, except that the local store answers the
//! writer's one read per event on its normal path (`pending:<id>` and the
//! store's health) with "absent", without a host call. bench/retry.sh runs
//! it next to the shipped writer to measure what that read costs. It
//! exports `handle-message` (one event per call), so that read is paid per
//! event.

use tasks_domain::keys;
use tasks_kv::testing::Hooked;
use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::LOCAL_STORE;
use trigger_nats_sdk::{Error, Message, nats_component};

#[nats_component]
fn handle(message: Message) -> Result<(), Error> {
    let not_recorded = |e| Error::new(format!("event not recorded: {e}"));
    let local = SpinKv::open(LOCAL_STORE).map_err(not_recorded)?;
    let unchecked = Hooked::over(&local).hiding(keys::PENDING_PREFIX);
    tasks_spin_kv::writer::handle_messages(std::slice::from_ref(&message), &unchecked)
        .pop()
        .unwrap_or(Ok(()))
        .map_err(not_recorded)
}
