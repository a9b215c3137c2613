//! `GET /api/events`: the change feed as a Server-Sent Events stream (the
//! framing and request checks are `tasks_site::events`).
//!
//! Every stream of an instance shares one [`Follower`]: it reads the
//! `feed` store at most every [`POLL_MILLIS`] however many clients are
//! connected (Spin runs up to 16 requests at once in one WASI 0.3
//! instance). A client further behind than the follower keeps (a reconnect
//! with an old `Last-Event-ID`) reads the store itself until it catches up.

use std::cell::RefCell;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use http_body::Frame;
use tasks_domain::Timestamp;
use tasks_feed as feed;
use tasks_feed::{Cursor, Follower, Since, Step};
use tasks_kv::StoreError;
use tasks_site::events::{self, HEARTBEAT_SECS, Subscription};
use tasks_spin_kv::SpinKv;
use tasks_spin_kv::tasks::FEED_STORE;

/// How often streams look for news: on the same wall-clock ticks in every
/// stream of an instance, so one follower read serves them all. The bound
/// on the delay the stream adds to a change.
const POLL_MILLIS: u64 = 200;

/// Slots a client behind the follower reads per store call.
const CATCH_UP: usize = 500;

thread_local! {
    static FOLLOWER: RefCell<Option<Follower>> = const { RefCell::new(None) };
}

fn now_ms() -> i64 {
    Timestamp::now().millis()
}

/// The changes after `after` for one stream, through the shared follower.
fn news(feed: &SpinKv, cursor: &mut Cursor) -> Result<Step, StoreError> {
    let now = now_ms();
    let shared = FOLLOWER.with(|f| -> Result<Since, StoreError> {
        let mut f = f.borrow_mut();
        let follower = match f.as_mut() {
            Some(follower) => {
                follower.refresh(feed, now)?;
                follower
            }
            // Half a tick: the first stream to wake on a tick reads, the
            // rest of that tick use what it read.
            None => f.insert(Follower::start(feed, now, POLL_MILLIS as i64 / 2)?),
        };
        Ok(follower.since(cursor.after))
    })?;
    match shared {
        Since::Entries(entries, next) => {
            *cursor = Cursor::at(next);
            Ok(Step::Send(entries))
        }
        // Too far behind to be caught up change by change: reset at once.
        Since::Behind(head) if events::too_far_behind(cursor.after, head) => {
            *cursor = Cursor::at(head);
            Ok(Step::Reset)
        }
        Since::Behind(_) => {
            let read = feed::read_after(feed, cursor.after, CATCH_UP)?;
            Ok(cursor.advance(read, now))
        }
    }
}

/// Waits `nanos`: without holding the instance (WASI 0.3, where it serves
/// other streams meanwhile).
#[cfg(feature = "wasi-http-0-3")]
async fn wait(nanos: u64) {
    wasip3::clocks::monotonic_clock::wait_for(nanos).await;
}

/// Waits `nanos`: a WASI 0.2 instance serves this one stream, so it blocks.
#[cfg(feature = "wasi-http-0-2")]
async fn wait(nanos: u64) {
    wasi::clocks::monotonic_clock::subscribe_duration(nanos).block();
}

/// Nanoseconds to the next multiple of [`POLL_MILLIS`] on the wall clock.
fn until_next_tick() -> u64 {
    let now = u64::try_from(now_ms()).unwrap_or(0);
    let next = (now / POLL_MILLIS + 1) * POLL_MILLIS;
    (next - now).max(1) * 1_000_000
}

/// Where a stream starts: after the client's number, or at the head.
pub(crate) fn start(sub: &Subscription) -> Result<u64, StoreError> {
    match sub.after {
        Some(after) => Ok(after),
        None => feed::head(&SpinKv::open_lenient(FEED_STORE)),
    }
}

/// One open stream.
struct Live {
    sub: Subscription,
    cid: String,
    cursor: Cursor,
    opened: Instant,
    last_write: Instant,
    sent: u64,
    greeted: bool,
    failing: bool,
    /// When the stream ends ([`events::stream_secs`]).
    lifetime: Duration,
}

impl Drop for Live {
    fn drop(&mut self) {
        println!(
            "[{}] ✕ /api/events closed after {} s: {} changes sent, up to {}",
            self.cid,
            self.opened.elapsed().as_secs(),
            self.sent,
            self.cursor.after
        );
    }
}

impl Live {
    /// The next bytes to send: changes, a reset, a heartbeat when the
    /// stream has been quiet for [`HEARTBEAT_SECS`], or the closing comment
    /// once its lifetime is over.
    async fn next_chunk(&mut self) -> Bytes {
        if !self.greeted {
            self.greeted = true;
            return Bytes::from(events::opening(self.cursor.after));
        }
        loop {
            if self.opened.elapsed() >= self.lifetime {
                return Bytes::from(events::closing(self.cursor.after, self.lifetime.as_secs()));
            }
            let mut out = String::new();
            // Not held across the wait: a body must be `Send`.
            let read = news(&SpinKv::open_lenient(FEED_STORE), &mut self.cursor);
            match read {
                Ok(Step::Send(entries)) => {
                    self.failing = false;
                    for entry in entries.iter().filter(|e| self.sub.wants(e)) {
                        out.push_str(&events::frame(entry));
                        self.sent += 1;
                    }
                }
                Ok(Step::Reset) => {
                    println!(
                        "[{}] /api/events: the client missed changes the feed no longer keeps; sent reset at {}",
                        self.cid, self.cursor.after
                    );
                    out.push_str(&events::reset(self.cursor.after));
                }
                Err(e) => {
                    if !self.failing {
                        println!("[{}] /api/events: KV GET feed — FAILED: {e}", self.cid);
                    }
                    self.failing = true;
                }
            }
            if out.is_empty() && self.last_write.elapsed() >= Duration::from_secs(HEARTBEAT_SECS) {
                out.push_str(events::heartbeat());
            }
            if !out.is_empty() {
                self.last_write = Instant::now();
                return Bytes::from(out);
            }
            wait(until_next_tick()).await;
        }
    }
}

/// The body of a stream that starts after `after`: it ends when the
/// client goes (the write fails and Spin drops it), or after its lifetime
/// (the `stream_max_seconds` variable), with a comment saying so.
pub(crate) fn body(
    sub: Subscription,
    after: u64,
    cid: String,
) -> impl Stream<Item = Result<Frame<Bytes>, Infallible>> {
    let live = Live {
        sub,
        cid,
        cursor: Cursor::at(after),
        opened: Instant::now(),
        last_write: Instant::now(),
        sent: 0,
        greeted: false,
        failing: false,
        lifetime: Duration::from_secs(events::stream_secs(
            tasks_spin_kv::variable("stream_max_seconds").as_deref(),
        )),
    };
    // `None` once the lifetime is over: the closing comment was the last.
    futures::stream::unfold(Some(live), |live| async move {
        let mut live = live?;
        let chunk = live.next_chunk().await;
        let ended = live.opened.elapsed() >= live.lifetime;
        Some((Ok(Frame::data(chunk)), (!ended).then_some(live)))
    })
}
