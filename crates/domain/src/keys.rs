//! Every key-value key spin-tasks writes is built here, prefixed by purpose,
//! so each job enumerates exactly its own keys.
//!
//! Store `tasks` (the backend chosen by runtime config) holds task documents,
//! the tombstones of deleted tasks and the membership stamp. Store `feed` holds the change feed and the
//! counters behind `/metrics`. Store `default` (always local) holds derived data
//! such as the listing index.

/// Prefix of task documents in the `tasks` store.
pub const TASK_PREFIX: &str = "task:";

/// Prefix of tombstones in the `tasks` store: `gone:<id>`, the stream
/// sequence of the delete that removed task `<id>` (see
/// `tasks_apply::tombstone`).
pub const TOMBSTONE_PREFIX: &str = "gone:";

/// Key in the `tasks` store that changes whenever a task is added or removed.
///
/// Its value is opaque; readers compare it to the stamp their listing index
/// was built from. Every path that adds or deletes a task document must
/// rewrite it (after the document write), or listings will not see the change.
pub const TASKS_STAMP: &str = "meta:tasks-stamp";

/// Key in the `default` store of the listing index head.
pub const INDEX_HEAD: &str = "idx:tasks:head";

/// Prefix of listing index chunks in the `default` store.
pub const INDEX_CHUNK_PREFIX: &str = "idx:tasks:chunk:";

/// Prefix of dead-letter records in the `default` store.
pub const DLQ_PREFIX: &str = "dlq:";

/// Prefix of deferred events (the outbox) in the `default` store.
pub const OUTBOX_PREFIX: &str = "outbox:";

/// Counter in the `default` store that numbers outbox records, so the
/// outbox sorts in the order events were deferred, across processes.
pub const OUTBOX_SEQ: &str = "seq:outbox";

/// Key in the `default` store of the `tasks` store's health: present while
/// the store is failing, so the writer defers at once instead of waiting on
/// a store that is down, and the retrier sends one probe at a time.
pub const TASKS_HEALTH: &str = "health:tasks";

/// Key in the `default` store of when the writer's last tick call (its
/// entry's `tick_ms`) began replaying the outbox: while it is recent, the
/// writer replays the outbox and the cron retrier leaves it alone.
pub const WRITER_TICK: &str = "meta:writer-tick";

/// Key in the `default` store of the page cache's generation: cached first
/// pages are valid only while it holds the value they were built under.
/// Every task write deletes it (when present), which invalidates them all.
pub const PAGE_CACHE_GEN: &str = "cache:gen";

/// Prefix of cached first pages of the listing in the `default` store.
pub const PAGE_CACHE_PREFIX: &str = "cache:page:";

/// `cache:page:<status|all>:<limit>`: the cached first page of a listing.
pub fn page_cache(status: Option<&str>, limit: usize) -> String {
    format!("{PAGE_CACHE_PREFIX}{}:{limit}", status.unwrap_or("all"))
}

/// Prefix of cached renderings of first list pages in the `default` store
/// (kept by web under the same generation as [`PAGE_CACHE_GEN`]).
pub const HTML_CACHE_PREFIX: &str = "cache:html:";

/// `cache:html:<page>`: a cached rendering of the first list page `page`.
pub fn html_cache(page: &str) -> String {
    format!("{HTML_CACHE_PREFIX}{page}")
}

/// Key in the Cloudflare working copy (the `tasks` label in that mode) of
/// the time of the last full key listing (13 digits). While it is fresher
/// than the TTL, a key with no entry was not in that listing, so it reads as
/// absent without asking Cloudflare.
pub const CF_LISTED_AT: &str = "meta:cf-listed-at";

/// Prefix of per-task pending counters in the `default` store: how many
/// outbox records a task has. While it is above zero, newer events for the
/// task queue behind them instead of applying directly.
pub const PENDING_PREFIX: &str = "pending:";

/// Prefix of flush records in the `default` store: writes to the `tasks`
/// store made in Cloudflare mode that have yet to reach Cloudflare, one per
/// write, flushed in bulk by the retrier.
pub const FLUSH_PREFIX: &str = "flush:";

/// Counter in the `default` store that numbers flush records, so they sort
/// in the order the working copy took the writes, across processes.
pub const FLUSH_SEQ: &str = "seq:flush";

/// Key in the `default` store of the flush lease: held by the one run that
/// is flushing, so overlapping cron runs never send the same records twice.
pub const FLUSH_LOCK: &str = "flush:lock";

/// Key in the `default` store of the flush backoff state: present while
/// flushes to Cloudflare are failing.
pub const FLUSH_STATE: &str = "flush:state";

/// Counter in the `feed` store: the sequence number of the latest change
/// feed slot handed out. Writers take a range with one increment.
pub const FEED_HEAD: &str = "feed:head";

/// How many changes the feed keeps: slot `seq % FEED_CAPACITY` holds change
/// `seq` until change `seq + FEED_CAPACITY` overwrites it.
pub const FEED_CAPACITY: u64 = 10_000;

/// Prefix of change feed slots in the `feed` store.
pub const FEED_SLOT_PREFIX: &str = "feed:slot:";

/// `feed:slot:<seq % FEED_CAPACITY, 5 digits>`: the slot of change `seq`.
pub fn feed_slot(seq: u64) -> String {
    format!("{FEED_SLOT_PREFIX}{:05}", seq % FEED_CAPACITY)
}

/// Key in the `feed` store of the compacted counters behind `/metrics`.
pub const METRICS_TOTALS: &str = "metrics:totals";

/// Prefix of counter deltas not yet compacted into [`METRICS_TOTALS`].
pub const METRICS_DELTA_PREFIX: &str = "metrics:delta:";

/// `metrics:delta:<seq, 12 digits>`: the counts written with the feed
/// range that starts at `seq`.
pub fn metrics_delta(seq: u64) -> String {
    format!("{METRICS_DELTA_PREFIX}{seq:012}")
}

/// Counter in the `feed` store: the number of the latest counts-only delta
/// (the HTTP components' request counts). A sequence of its own, so that
/// counting requests never spends change feed numbers.
pub const COUNTS_HEAD: &str = "counts:head";

/// Prefix of counts-only deltas not yet compacted into [`METRICS_TOTALS`].
pub const COUNTS_DELTA_PREFIX: &str = "counts:delta:";

/// `counts:delta:<n, 12 digits>`: counts-only delta number `n`.
pub fn counts_delta(n: u64) -> String {
    format!("{COUNTS_DELTA_PREFIX}{n:012}")
}

/// `task:<id>`.
pub fn task(id: &str) -> String {
    format!("{TASK_PREFIX}{id}")
}

/// Key in the `tasks` store written with the first tombstone: while it is
/// absent no task has one, and a batch does not look for them.
pub const TOMBSTONES_WRITTEN: &str = "meta:tombstones";

/// `gone:<id>`: the tombstone of task `<id>`.
pub fn tombstone(id: &str) -> String {
    format!("{TOMBSTONE_PREFIX}{id}")
}

/// The id in a `task:<id>` key, or `None` for any other key.
pub fn task_id(key: &str) -> Option<&str> {
    key.strip_prefix(TASK_PREFIX).filter(|id| !id.is_empty())
}

/// `idx:tasks:chunk:<build>:<n>`: chunk `n` of the index built as `build`.
pub fn index_chunk(build: &str, n: usize) -> String {
    format!("{INDEX_CHUNK_PREFIX}{build}:{n}")
}

/// `<millis, 13 digits>-<unique>`: sorts by time, then by the unique part.
fn timed(prefix: &str, at_millis: i64, unique: &str) -> String {
    format!("{prefix}{:013}-{unique}", at_millis.max(0))
}

/// `dlq:<millis>-<unique>`: one dead letter.
pub fn dead_letter(at_millis: i64, unique: &str) -> String {
    timed(DLQ_PREFIX, at_millis, unique)
}

/// The signatures of admin requests taken within their windows (store
/// `default`; `tasks_signing::Seen`): each signed request is acted on once.
pub const SIGNED_SEEN: &str = "signed:seen";

/// Prefix of the markers of stream events dead-lettered already (store
/// `default`): `seen:dlq:<epoch>:<seq>` ([`dead_letter_seen`]).
pub const DEAD_LETTER_SEEN_PREFIX: &str = "seen:dlq:";

/// `seen:dlq:<epoch>:<seq>` (epoch 0 when unknown): the marker of the stream
/// event at that position, once it is a dead letter, so a redelivery of it
/// is not dead-lettered twice. It holds the dead letter's key, taken by a
/// compare-and-swap before the record is written
/// (`tasks_outbox::dead_letters::DeadLetter::file_once`), or
/// [`dead_letter_replayed`] once it was replayed.
pub fn dead_letter_seen(epoch: Option<u64>, seq: u64) -> String {
    format!("{DEAD_LETTER_SEEN_PREFIX}{}:{seq}", epoch.unwrap_or(0))
}

/// What a [`dead_letter_seen`] marker holds once its dead letter `key` was
/// replayed into the outbox: `replayed:<key>`.
pub fn dead_letter_replayed(key: &str) -> String {
    format!("{REPLAYED_PREFIX}{key}")
}

/// The dead letter's key in a marker [`dead_letter_replayed`] wrote.
pub fn replayed_dead_letter(marker: &str) -> Option<&str> {
    marker
        .strip_prefix(REPLAYED_PREFIX)
        .filter(|k| dead_letter_id(k).is_some())
}

const REPLAYED_PREFIX: &str = "replayed:";

/// `dlq:<millis>-<seq, 12 digits>-<unique>`: the dead letter of flush record
/// `seq`; the records of one flush run keep their order.
pub fn flush_dead_letter(at_millis: i64, seq: i64, unique: &str) -> String {
    dead_letter(at_millis, &format!("{:012}-{unique}", seq.max(0)))
}

/// `dlq:<id>`: the dead letter whose id (the key without `dlq:`, as the
/// dead-letter API names it) is `id`.
pub fn dead_letter_with_id(id: &str) -> String {
    format!("{DLQ_PREFIX}{id}")
}

/// `outbox:<seq, 12 digits>:<task id>`: one deferred event, numbered by
/// [`OUTBOX_SEQ`], so keys sort in the order events were deferred; the task
/// id lets a key listing count each task's records without reading them.
pub fn outbox(seq: i64, task_id: &str) -> String {
    format!("{OUTBOX_PREFIX}{:012}:{task_id}", seq.max(0))
}

/// The sequence number (12 digits, as text) and task id in an
/// `outbox:<seq>:<id>` key.
fn outbox_parts(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(OUTBOX_PREFIX)?;
    let (seq, id) = rest.split_once(':')?;
    (seq.len() == 12 && seq.bytes().all(|b| b.is_ascii_digit()) && !id.is_empty())
        .then_some((seq, id))
}

/// The task id in an `outbox:<seq>:<id>` key.
pub fn outbox_task_id(key: &str) -> Option<&str> {
    outbox_parts(key).map(|(_, id)| id)
}

/// The sequence number of an `outbox:<seq>:<id>` key, as its 12 digits:
/// dead letters made from outbox records in one run keep the outbox order
/// by carrying it in their keys.
pub fn outbox_seq(key: &str) -> Option<&str> {
    outbox_parts(key).map(|(seq, _)| seq)
}

/// `flush:<seq, 12 digits>:<key>`: one write of `key` (any key of the
/// `tasks` store, colons included) waiting to reach Cloudflare, numbered by
/// [`FLUSH_SEQ`].
pub fn flush(seq: i64, key: &str) -> String {
    format!("{FLUSH_PREFIX}{:012}:{key}", seq.max(0))
}

/// The sequence number and `tasks` key in a `flush:<seq>:<key>` key, or
/// `None` for any other key (the lease and the backoff state included).
pub fn flush_key(k: &str) -> Option<(i64, &str)> {
    let rest = k.strip_prefix(FLUSH_PREFIX)?;
    let (seq, key) = rest.split_once(':')?;
    if seq.len() != 12 || !seq.bytes().all(|b| b.is_ascii_digit()) || key.is_empty() {
        return None;
    }
    Some((seq.parse().ok()?, key))
}

/// `pending:<id>`: the pending counter of a task.
pub fn pending(task_id: &str) -> String {
    format!("{PENDING_PREFIX}{task_id}")
}

/// The task id in a `pending:<id>` key.
pub fn pending_task_id(key: &str) -> Option<&str> {
    key.strip_prefix(PENDING_PREFIX).filter(|id| !id.is_empty())
}

/// The record id in a `dlq:<id>` key (what the dead-letter API calls it).
pub fn dead_letter_id(key: &str) -> Option<&str> {
    key.strip_prefix(DLQ_PREFIX).filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_keys_round_trip() {
        assert_eq!(task("t-1"), "task:t-1");
        assert_eq!(task_id("task:t-1"), Some("t-1"));
        assert_eq!(task_id("task:"), None);
        assert_eq!(task_id(TASKS_STAMP), None);
        assert_eq!(task_id("idx:tasks:head"), None);
    }

    #[test]
    fn prefixes_do_not_overlap() {
        let keys = [
            TASKS_STAMP,
            INDEX_HEAD,
            &index_chunk("b", 0),
            &task("x"),
            &dead_letter(1, "u"),
            &outbox(1, "t"),
            OUTBOX_SEQ,
            TASKS_HEALTH,
            PAGE_CACHE_GEN,
            &html_cache("all:50"),
            CF_LISTED_AT,
            &page_cache(None, 50),
            &pending("x"),
            &flush(1, "task:x"),
            FLUSH_SEQ,
            FLUSH_LOCK,
            FLUSH_STATE,
            FEED_HEAD,
            &feed_slot(1),
            METRICS_TOTALS,
            &metrics_delta(1),
            COUNTS_HEAD,
            &counts_delta(1),
            SIGNED_SEEN,
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert!(!a.starts_with(b) && !b.starts_with(a), "{a} / {b}");
            }
        }
        assert_eq!(index_chunk("5f3a", 2), "idx:tasks:chunk:5f3a:2");
        assert_eq!(dead_letter(1_795_327_314_123, "ab"), "dlq:1795327314123-ab");
        assert_eq!(outbox(42, "t-1"), "outbox:000000000042:t-1");
        assert!(
            outbox(999, "z") < outbox(1_000, "a"),
            "sequence orders first"
        );
        assert_eq!(outbox_task_id(&outbox(7, "a:b")), Some("a:b"));
        assert_eq!(outbox_task_id("outbox:12:x"), None);
        assert_eq!(outbox_task_id(&outbox(7, "")), None);
        assert_eq!(pending_task_id(&pending("t-1")), Some("t-1"));
        assert_eq!(outbox_seq(&outbox(42, "t:1")), Some("000000000042"));
        assert_eq!(outbox_seq("outbox:12:x"), None);
        assert_eq!(dead_letter_id("dlq:17-ab"), Some("17-ab"));
        assert_eq!(dead_letter_with_id("17-ab"), "dlq:17-ab");
        let replayed = dead_letter_replayed("dlq:17-ab");
        assert_eq!(replayed, "replayed:dlq:17-ab");
        assert_eq!(replayed_dead_letter(&replayed), Some("dlq:17-ab"));
        assert_eq!(replayed_dead_letter("dlq:17-ab"), None);
        assert_eq!(replayed_dead_letter("replayed:outbox:1"), None);
        assert_eq!(
            flush_dead_letter(5, 42, "u"),
            "dlq:0000000000005-000000000042-u"
        );
        assert_eq!(html_cache("all:50"), "cache:html:all:50");
        assert_eq!(dead_letter_id("dlq:"), None);
        assert_eq!(feed_slot(3), "feed:slot:00003");
        assert_eq!(feed_slot(FEED_CAPACITY + 3), feed_slot(3), "a ring");
        assert_eq!(metrics_delta(42), "metrics:delta:000000000042");
    }

    #[test]
    fn flush_keys_round_trip() {
        assert_eq!(flush(42, "task:t-1"), "flush:000000000042:task:t-1");
        assert!(flush(999, "z") < flush(1_000, "a"), "sequence orders first");
        assert_eq!(flush_key(&flush(7, "task:a:b")), Some((7, "task:a:b")));
        assert_eq!(flush_key(&flush(3, TASKS_STAMP)), Some((3, TASKS_STAMP)));
        for other in [
            FLUSH_LOCK,
            FLUSH_STATE,
            "flush:12:x",
            "flush:000000000001:",
            "flush:00000000000x:k",
        ] {
            assert_eq!(flush_key(other), None, "{other}");
        }
    }
}
