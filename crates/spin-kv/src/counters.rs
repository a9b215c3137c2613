//! The HTTP components' share of `/metrics` (web, events): requests by
//! route and status, and page cache hits and misses. Counted in memory per instance and written to the
//! `feed` store as one counts-only delta ([`metrics::append_counts`]: one
//! increment of its own counter, one `set-many`; no change feed number) when
//! [`FLUSH_EVERY`] requests are waiting or [`FLUSH_MILLIS`] passed since the
//! last write: a store write per request would cost more than the request.
//!
//! The price: an instance Spin drops while idle loses what it counted since
//! its last write (at most the last [`FLUSH_MILLIS`] of its requests).
//! Spin retires an instance after 128 requests by default, [`FLUSH_EVERY`],
//! so a busy instance writes everything, once.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use tasks_feed::metrics::{self, Counts};

use crate::SpinKv;
use crate::tasks::FEED_STORE;

/// Requests counted before a write: Spin's default number of requests per
/// reused instance, so a busy instance writes once, with its last request.
const FLUSH_EVERY: u32 = 128;

/// Longest a count waits for a write while requests keep coming.
const FLUSH_MILLIS: u64 = 250;

#[derive(Default)]
struct Pending {
    counts: Counts,
    requests: u32,
    written_at: Option<Instant>,
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// Counts one lookup of the rendered page cache.
pub fn page_cache(hit: bool) {
    PENDING.with(|p| p.borrow_mut().counts.page_cache(hit));
}

/// Counts one response, then writes the counts if it is time.
pub fn request(route: &str, status: u16, cid: &str) {
    let due = PENDING.with(|p| {
        let mut p = p.borrow_mut();
        p.counts.http(route, status);
        p.requests += 1;
        // An instance's first request starts its clock (writing then would
        // mean a write for every new instance).
        let since = *p.written_at.get_or_insert_with(Instant::now);
        let stale = since.elapsed() >= Duration::from_millis(FLUSH_MILLIS);
        if p.requests >= FLUSH_EVERY || stale {
            p.requests = 0;
            p.written_at = Some(Instant::now());
            Some(std::mem::take(&mut p.counts))
        } else {
            None
        }
    });
    if let Some(counts) = due
        && let Err(e) = metrics::append_counts(&SpinKv::open_lenient(FEED_STORE), counts)
    {
        println!("[{cid}] KV PUT feed — FAILED: {e}; /metrics misses these requests");
    }
}
