//! The spin-tasks domain: the task model and its JSON form, validation rules,
//! the key-value key layout, page cursors, read errors, task events and
//! the rules by which events change tasks.
//!
//! Nothing here knows about Spin, so every rule is unit-tested natively.

pub mod cursor;
pub mod event;
pub mod keys;
pub mod merge;
pub mod position;
pub mod read;
pub mod status;
pub mod task;
pub mod time;
pub mod validate;

pub use position::StreamPos;
pub use read::{DEFAULT_LIMIT, ListRequest, MAX_LIMIT, Page, ReadError};
pub use status::Status;
pub use task::Task;
pub use time::Timestamp;
pub use validate::ValidationError;

/// The header (HTTP and NATS) that carries a correlation id, lowercase.
pub const CORRELATION_HEADER: &str = "x-correlation-id";
