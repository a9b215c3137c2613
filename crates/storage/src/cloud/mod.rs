//! Cloudflare Workers KV as the `tasks` store, as Spin keeps each key-value
//! backend apart: the read-through, write-behind working copy
//! ([`CloudKv`]) and the flush of its writes to Cloudflare ([`Flusher`]).

pub mod flush;
pub mod working_copy;

pub use flush::{FlushReport, Flusher};
pub use working_copy::{CloudKv, Remote};
