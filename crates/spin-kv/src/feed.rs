//! The change feed and the counters over Spin: the `feed` store.

use tasks_storage::feed::Journal;

use crate::tasks::FEED_STORE;
use crate::{SpinKv, log};

/// Writes what `journal` recorded to the `feed` store (one increment, one
/// `set-many`). A failure loses those feed entries and counts, never an
/// event (they are applied and recorded already), and is logged.
pub fn commit(journal: &Journal, cid: &str) {
    let feed = SpinKv::open_lenient(FEED_STORE);
    if let Err(e) = journal.commit(&feed) {
        log(&format!(
            "[{cid}] KV PUT feed — FAILED: {e}; the change feed and /metrics miss this call's changes"
        ));
    }
}
