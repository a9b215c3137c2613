//! The read side: task lookups and paged listings ([`TaskReader`]) over the
//! listing index, and the first-page cache ([`page_cache`]). Nothing here
//! writes a task; the event side uses [`page_cache::invalidate`] when it does.

pub(crate) mod index;
pub mod page_cache;
pub(crate) mod reader;

pub use index::CHUNK_IDS;
pub use reader::{ListOutcome, MAX_SCANNED, TaskReader};
