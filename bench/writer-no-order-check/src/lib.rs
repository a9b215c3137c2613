//! The writer component as shipped, except that the local store answers the
//! writer's one read per event on its normal path (`pending:<id>` and the
//! store's health) with "absent", without a host call. bench/retry.sh runs
//! it next to the shipped writer to measure what that read costs.

use tasks_domain::keys;
use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::LOCAL_STORE;
use tasks_storage::testing::Hooked;

/// Generated bindings: the only code here that needs `unsafe`.
#[allow(unsafe_code, missing_docs, clippy::all)]
mod bindings {
    wit_bindgen::generate!({
        world: "nats-trigger",
        path: "../../plugins/trigger-nats/wit",
    });

    use super::Variant;
    export!(Variant);
}

struct Variant;

impl bindings::Guest for Variant {
    fn handle_message(message: bindings::Message) -> Result<(), bindings::Error> {
        let not_recorded = |e| bindings::Error::Other(format!("event not recorded: {e}"));
        let local = SpinKv::open(LOCAL_STORE).map_err(not_recorded)?;
        let unchecked = Hooked::over(&local).hiding(keys::PENDING_PREFIX);
        tasks_spin_kv::writer::handle_message(
            &message.subject,
            &message.payload,
            &message.headers,
            &unchecked,
        )
        .map_err(not_recorded)
    }
}
