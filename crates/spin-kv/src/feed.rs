//! The change feed and the counters over Spin: the `feed` store.

use tasks_feed::Journal;

use crate::tasks::FEED_STORE;
use crate::{SpinKv, log};

/// The `feed` store, opened on its first call.
pub fn store() -> SpinKv {
    SpinKv::open_lenient(FEED_STORE)
}

/// Writes what `journal` recorded to `feed` (one increment, one
/// `set-many`); `false` when that failed, which is logged. The changes of
/// stream events are kept by the records their writes stored: a caller
/// that has the events delivered again records them then (see
/// `tasks_feed`).
pub fn commit(journal: &Journal, feed: &SpinKv, cid: &str) -> bool {
    match journal.commit(feed) {
        Ok(_) => true,
        Err(e) => {
            log(&format!(
                "[{cid}] KV PUT feed — FAILED: {e}; this call's changes and counts are not in the change feed and /metrics"
            ));
            false
        }
    }
}
