//! The event side's apply path: task events applied to the `tasks` store
//! ([`Writer`], [`apply`]: compare-and-swap, stamps, page-cache
//! invalidation, each change recorded in the writer's journal), deletes
//! remembered as tombstones ([`tombstone`]), one message handled
//! ([`writer`]: validate, apply, dead-letter, defer) and a JetStream pull
//! handled in few store calls ([`batch`]). What keeps events from being
//! lost (outbox, dead letters, store health) is `tasks-outbox`; the replay
//! of the outbox is `tasks-retry`.
//! Feature `testing`: the one writer/retrier harness (`testing::Harness`).
//! Imports run one way: `tombstone` ← `apply` ← `writer` ← `batch`
//! (see docs/architecture.md).

pub mod apply;
pub mod batch;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tombstone;
pub mod writer;

pub use apply::{CAS_ATTEMPTS, Writer};
pub use writer::{Handled, Incoming};
