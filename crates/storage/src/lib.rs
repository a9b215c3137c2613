//! Storage logic for spin-tasks, written against the [`KeyValue`] and
//! [`AtomicKv`] traits so it runs the same over Spin's key-value API (inside
//! components), over SQLite (native tools) and in memory (tests).
//!
//! - [`kv`]: the traits; [`backoff`] (the retry schedule) and [`lease`]
//!   (compare-and-swap claims) build on them.
//! - [`read`]: task lookups, listings, the listing index, the page cache.
//! - [`events`]: applying events, the outbox, the retrier, dead letters.
//! - [`cloud`]: Cloudflare Workers KV as the `tasks` store.
//! - [`feed`]: the change feed; [`counts`] and [`metrics`]: the counters
//!   behind `/metrics` (counted per call, folded, rendered).
//! - `testing` (feature `testing`): test doubles.

pub mod backoff;
pub mod cloud;
pub mod counts;
pub mod events;
pub mod feed;
pub mod kv;
pub mod lease;
pub mod metrics;
pub mod read;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use events::apply::{CAS_ATTEMPTS, Writer};
pub use events::retrier::{Retrier, TickReport};
pub use events::writer::{Handled, Incoming};
pub use kv::{AtomicKv, KeyValue, StoreError};
pub use read::index::CHUNK_IDS;
pub use read::reader::{ListOutcome, MAX_SCANNED, TaskReader};
