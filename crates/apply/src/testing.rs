//! The one writer/retrier harness (feature `testing`, and this crate's own
//! tests), over the store doubles of `tasks_kv::testing`, and what its
//! tests read back ([`feed_changes`]). Its retrier ticks are
//! `tasks_retry::testing::Tick`, since the retrier builds on this crate.

use std::cell::{Cell, RefCell};

use tasks_domain::{Task, Timestamp, keys};
use tasks_feed::Journal;
use tasks_kv::testing::MemoryKv;
use tasks_kv::{AtomicKv, KeyValue, StoreError, decode_counter};
use tasks_outbox::OutboxEntry;
use tasks_outbox::dead_letters::DeadLetter;

use crate::{Handled, Incoming, Writer};

/// The one writer/retrier harness: in-memory `tasks` and local stores, a
/// clock the test moves (each message moves it by `step` ms), numbered
/// unique ids (`u1`, `u2`, …), and every log line kept.
pub struct Harness {
    /// Task documents.
    pub tasks: MemoryKv,
    /// The local store: outbox, dead letters, counters, caches.
    pub local: MemoryKv,
    /// The clock, in Unix milliseconds.
    pub now: Cell<i64>,
    /// Milliseconds each message moves the clock by.
    pub step: Cell<i64>,
    /// The writer's `verify_writes`.
    pub verify: Cell<bool>,
    /// Log lines so far.
    pub lines: RefCell<Vec<String>>,
    /// What the writer recorded for the change feed and the counters.
    pub journal: Journal,
    /// The `feed` store (the writer takes change numbers from it; tests
    /// commit the journal to it).
    pub feed: MemoryKv,
    /// The writer's `commit_until` (the trigger's delivery lease), in Unix ms.
    pub lease: Cell<Option<i64>>,
    counter: Cell<u32>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// Where the clock starts: 2026-11-23.
    pub const START: i64 = 1_795_327_314_000;

    /// Empty stores, the clock at [`Harness::START`], one millisecond per message.
    pub fn new() -> Self {
        Harness {
            tasks: MemoryKv::new(),
            local: MemoryKv::new(),
            now: Cell::new(Self::START),
            step: Cell::new(1),
            verify: Cell::new(false),
            lines: RefCell::new(Vec::new()),
            journal: Journal::new(),
            feed: MemoryKv::new(),
            lease: Cell::new(None),
            counter: Cell::new(0),
        }
    }

    /// Runs `f` with a writer over `tasks` (the harness's own or a wrapper)
    /// and the harness's local store, clock, ids and log.
    pub fn with_writer<T: AtomicKv, R>(
        &self,
        tasks: &T,
        f: impl FnOnce(&Writer<'_, T, MemoryKv>) -> R,
    ) -> R {
        self.with_stores(tasks, &self.local, f)
    }

    /// [`Harness::with_writer`] over a local store of the test's choosing
    /// too (a wrapper of the harness's own, to act between two calls).
    pub fn with_stores<T: AtomicKv, L: AtomicKv, R>(
        &self,
        tasks: &T,
        local: &L,
        f: impl FnOnce(&Writer<'_, T, L>) -> R,
    ) -> R {
        let clock = || Timestamp(self.now.get());
        let unique = || self.unique();
        let log = |line: &str| self.lines.borrow_mut().push(line.to_owned());
        let writer = Writer {
            tasks,
            local,
            clock: &clock,
            unique: &unique,
            log: &log,
            verify_writes: self.verify.get(),
            journal: &self.journal,
            feed: &self.feed,
            commit_until: self.lease.get().map(Timestamp),
        };
        f(&writer)
    }

    /// The next unique id: `u1`, `u2`, …
    pub fn unique(&self) -> String {
        self.counter.set(self.counter.get() + 1);
        format!("u{}", self.counter.get())
    }

    /// Hands `msg` to the writer over `tasks`, `step` ms later.
    pub fn deliver_on<T: AtomicKv>(
        &self,
        tasks: &T,
        msg: &Incoming,
    ) -> Result<Handled, StoreError> {
        self.advance(self.step.get());
        self.with_writer(tasks, |w| w.handle(msg))
    }

    /// A message with `payload` on `subject`, no headers; the local store
    /// must work.
    pub fn send(&self, subject: &str, payload: &str) -> Handled {
        let msg = Incoming {
            subject,
            payload: payload.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: None,
            stream_sequence: None,
            stream_epoch: None,
        };
        self.deliver_on(&self.tasks, &msg)
            .expect("the local store works, so every message is recorded")
    }

    /// Moves the clock.
    pub fn advance(&self, millis: i64) {
        self.now.set(self.now.get() + millis);
    }

    /// The stored task `id`, if readable.
    pub fn task(&self, id: &str) -> Option<Task> {
        self.tasks
            .peek(&keys::task(id))
            .and_then(|b| Task::from_json(&b).ok())
    }

    /// The membership stamp.
    pub fn stamp(&self) -> Option<Vec<u8>> {
        self.tasks.peek(keys::TASKS_STAMP)
    }

    /// Every outbox record, in key order.
    pub fn outbox(&self) -> Vec<OutboxEntry> {
        self.records(keys::OUTBOX_PREFIX)
    }

    /// Every dead letter, in key order.
    pub fn dead_letters(&self) -> Vec<DeadLetter> {
        self.records(keys::DLQ_PREFIX)
    }

    fn records<R: serde::de::DeserializeOwned>(&self, prefix: &str) -> Vec<R> {
        self.local
            .keys_with_prefix(prefix)
            .iter()
            .filter_map(|k| serde_json::from_slice(&self.local.peek(k)?).ok())
            .collect()
    }

    /// The task's pending counter.
    pub fn pending(&self, id: &str) -> Option<i64> {
        self.local
            .peek(&keys::pending(id))
            .and_then(|v| decode_counter(&v))
    }

    /// Whether some log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.lines.borrow().iter().any(|l| l.contains(needle))
    }
}

/// Every change `feed` holds, in feed order, stepping over slots that hold
/// none or were never written; `None` when it holds more than its ring.
pub fn feed_changes(feed: &dyn KeyValue) -> Option<Vec<tasks_feed::Change>> {
    use tasks_feed::{self as feed, Read};
    let head = feed::head(feed).ok()?;
    let mut changes = Vec::new();
    let mut after = 0;
    while after < head {
        let Read::Entries { entries, next, .. } = feed::read_after(feed, after, 1_000).ok()? else {
            return None;
        };
        changes.extend(entries.into_iter().map(|e| e.change));
        after = if next > after { next } else { after + 1 };
    }
    Some(changes)
}
