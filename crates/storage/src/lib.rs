//! Storage logic for spin-tasks, written against the [`KeyValue`] trait so it
//! runs the same over Spin's key-value API (inside components), over SQLite
//! (native tools) and over the in-memory [`MemoryKv`] (unit tests).

pub mod cloud;
pub mod flush;
mod index;
mod kv;
mod memory;
pub mod outbox;
mod reader;
pub mod records;
pub mod retry;
mod writer;

pub use cloud::{CloudKv, Remote};
pub use flush::{FlushReport, Flusher};
pub use index::CHUNK_IDS;
pub use kv::{AtomicKv, KeyValue, StoreError, decode_counter};
pub use memory::{Calls, HookAt, Hooked, MemoryKv};
pub use reader::{ListOutcome, TaskReader};
pub use retry::{Retrier, TickReport};
pub use writer::{CAS_ATTEMPTS, Handled, Incoming, Writer};
