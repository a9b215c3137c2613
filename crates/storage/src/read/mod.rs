//! The read side: task lookups and paged listings over the listing index,
//! and the first-page cache. Nothing here writes a task.

pub(crate) mod index;
pub mod page_cache;
pub(crate) mod reader;
