//! The event side: applying task events, and what keeps them from being
//! lost (the outbox, the retrier, dead letters, the store's health).
//! Imports run one way: `dead_letters` ← `outbox` ← `health` ← `tombstone` ← `apply` ←
//! `writer` / `retrier` ← `batch` (see docs/architecture.md).

pub mod apply;
pub mod batch;
pub mod dead_letters;
pub mod health;
pub mod outbox;
pub mod retrier;
pub mod tombstone;
pub mod writer;
