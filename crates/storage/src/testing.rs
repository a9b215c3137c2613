//! Test doubles (feature `testing`, and this crate's own tests): an
//! in-memory store that counts calls and fails on demand, the one
//! delegating store ([`Hooked`]), and the one writer/retrier [`Harness`].

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use tasks_domain::{Task, Timestamp, keys};

use crate::events::dead_letters::DeadLetter;
use crate::events::outbox::OutboxEntry;
use crate::kv::{AtomicKv, KeyValue, StoreError, decode_counter};
use crate::{Handled, Incoming, Retrier, TickReport, Writer};

/// How many calls of each kind a [`MemoryKv`] has served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// `get` calls.
    pub get: usize,
    /// `get_many` calls.
    pub get_many: usize,
    /// `set_many` calls.
    pub set_many: usize,
    /// `delete_many` calls.
    pub delete_many: usize,
    /// `list_keys` calls.
    pub list_keys: usize,
    /// `cas_write` calls.
    pub cas_write: usize,
    /// `increment` calls.
    pub increment: usize,
    /// Keys read, by `get` and `get_many` together.
    pub keys_read: usize,
}

/// A store in memory. `set_down(true)` makes every call fail as unavailable.
#[derive(Debug, Default)]
pub struct MemoryKv {
    data: RefCell<BTreeMap<String, Vec<u8>>>,
    calls: Cell<Calls>,
    down: Cell<bool>,
    conflicts: Cell<usize>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes one pair directly (not counted).
    pub fn put(&self, key: &str, value: impl Into<Vec<u8>>) {
        self.data.borrow_mut().insert(key.to_owned(), value.into());
    }

    /// Removes one key directly (not counted).
    pub fn remove(&self, key: &str) {
        self.data.borrow_mut().remove(key);
    }

    /// The value under `key` (not counted).
    pub fn peek(&self, key: &str) -> Option<Vec<u8>> {
        self.data.borrow().get(key).cloned()
    }

    /// Keys starting with `prefix` (not counted).
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.data
            .borrow()
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Calls served so far.
    pub fn calls(&self) -> Calls {
        self.calls.get()
    }

    /// Forgets the call counts.
    pub fn reset_calls(&self) {
        self.calls.set(Calls::default());
    }

    /// Makes every call fail (true) or succeed (false).
    pub fn set_down(&self, down: bool) {
        self.down.set(down);
    }

    /// Makes the next `n` compare-and-swap writes lose to a concurrent writer.
    pub fn inject_conflicts(&self, n: usize) {
        self.conflicts.set(n);
    }

    fn count(&self, bump: impl FnOnce(&mut Calls)) -> Result<(), StoreError> {
        let mut calls = self.calls.get();
        bump(&mut calls);
        self.calls.set(calls);
        if self.down.get() {
            return Err(StoreError::Unavailable("memory store is down".into()));
        }
        Ok(())
    }
}

impl KeyValue for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.count(|c| {
            c.get += 1;
            c.keys_read += 1;
        })?;
        Ok(self.peek(key))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.count(|c| {
            c.get_many += 1;
            c.keys_read += keys.len();
        })?;
        let data = self.data.borrow();
        Ok(keys.iter().map(|k| data.get(k).cloned()).collect())
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.count(|c| c.set_many += 1)?;
        self.data.borrow_mut().extend(pairs);
        Ok(())
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.count(|c| c.delete_many += 1)?;
        let mut data = self.data.borrow_mut();
        for k in keys {
            data.remove(&k);
        }
        Ok(())
    }

    fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        self.count(|c| c.list_keys += 1)?;
        // Reverse order: callers must not rely on the store sorting keys.
        Ok(self.data.borrow().keys().rev().cloned().collect())
    }
}

impl AtomicKv for MemoryKv {
    type Cas = (String, Option<Vec<u8>>);

    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
        self.count(|c| c.get += 1)?;
        let current = self.peek(key);
        Ok(((key.to_owned(), current.clone()), current))
    }

    fn cas_write(&self, (key, seen): Self::Cas, value: Vec<u8>) -> Result<bool, StoreError> {
        self.count(|c| c.cas_write += 1)?;
        if self.conflicts.get() > 0 {
            self.conflicts.set(self.conflicts.get() - 1);
            return Ok(false);
        }
        if self.peek(&key) != seen {
            return Ok(false);
        }
        self.put(&key, value);
        Ok(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.count(|c| c.increment += 1)?;
        // Kept as Spin's SQLite store keeps it: 8 little-endian bytes.
        let now = self.peek(key).and_then(|v| decode_counter(&v)).unwrap_or(0) + delta;
        self.put(key, now.to_le_bytes().to_vec());
        Ok(now)
    }
}

/// When a [`Hooked`] store runs its hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookAt {
    /// Just before the first write (`set_many` or `cas_write`).
    Write,
    /// Just after the first `get_many` that reads task documents.
    TaskRead,
    /// Just before the first `get_many` that reads metrics deltas.
    DeltaRead,
}

type Hook<'a> = Box<dyn FnOnce() + 'a>;

/// The one delegating test store: forwards every call to `inner`, and on
/// request runs a closure once at a chosen moment (a concurrent writer or a
/// second retrier run acting at the worst time), reports compare-and-swap
/// writes as done without writing (a store that loses writes), or answers
/// batch reads of some keys with "absent" (a check skipped).
pub struct Hooked<'a, S = MemoryKv> {
    inner: &'a S,
    hook: RefCell<Option<(HookAt, Hook<'a>)>>,
    lossy: bool,
    hidden: Option<&'a str>,
}

impl<'a, S: AtomicKv> Hooked<'a, S> {
    /// `inner`, unchanged so far.
    pub fn over(inner: &'a S) -> Self {
        Hooked {
            inner,
            hook: RefCell::new(None),
            lossy: false,
            hidden: None,
        }
    }

    /// `inner`, running `hook` once at `at`.
    pub fn new(inner: &'a S, at: HookAt, hook: impl FnOnce() + 'a) -> Self {
        Hooked {
            hook: RefCell::new(Some((at, Box::new(hook)))),
            ..Self::over(inner)
        }
    }

    /// Compare-and-swap writes report success and write nothing.
    pub fn lossy(self) -> Self {
        Hooked {
            lossy: true,
            ..self
        }
    }

    /// A `get_many` whose first key starts with `prefix` finds nothing.
    pub fn hiding(self, prefix: &'a str) -> Self {
        Hooked {
            hidden: Some(prefix),
            ..self
        }
    }

    fn fire(&self, at: HookAt) {
        let due = self
            .hook
            .borrow()
            .as_ref()
            .is_some_and(|(when, _)| *when == at);
        // Taken out first: the hook may call this store again.
        let hook = if due {
            self.hook.borrow_mut().take()
        } else {
            None
        };
        if let Some((_, hook)) = hook {
            hook();
        }
    }
}

impl<S: AtomicKv> KeyValue for Hooked<'_, S> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if let (Some(prefix), Some(first)) = (self.hidden, keys.first())
            && first.starts_with(prefix)
        {
            return Ok(vec![None; keys.len()]);
        }
        if keys
            .iter()
            .any(|k| k.starts_with(tasks_domain::keys::METRICS_DELTA_PREFIX))
        {
            self.fire(HookAt::DeltaRead);
        }
        let values = self.inner.get_many(keys);
        if keys
            .iter()
            .any(|k| k.starts_with(tasks_domain::keys::TASK_PREFIX))
        {
            self.fire(HookAt::TaskRead);
        }
        values
    }
    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.fire(HookAt::Write);
        self.inner.set_many(pairs)
    }
    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.inner.delete_many(keys)
    }
    fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        self.inner.list_keys()
    }
}

impl<S: AtomicKv> AtomicKv for Hooked<'_, S> {
    type Cas = S::Cas;
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
        self.inner.cas_read(key)
    }
    fn cas_write(&self, cas: Self::Cas, value: Vec<u8>) -> Result<bool, StoreError> {
        self.fire(HookAt::Write);
        if self.lossy {
            return Ok(true);
        }
        self.inner.cas_write(cas, value)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.inner.increment(key, delta)
    }
}

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
    pub journal: crate::feed::Journal,
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
            journal: crate::feed::Journal::new(),
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
        let clock = || Timestamp(self.now.get());
        let unique = || self.unique();
        let log = |line: &str| self.lines.borrow_mut().push(line.to_owned());
        let writer = Writer {
            tasks,
            local: &self.local,
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

    /// One retrier tick over `tasks`.
    pub fn tick_on<T: AtomicKv>(&self, tasks: &T) -> TickReport {
        self.with_writer(tasks, |w| {
            Retrier {
                writer: w,
                budget_millis: 10_000,
            }
            .tick()
        })
        .expect("the local store works, so a tick completes")
    }

    /// One retrier tick.
    pub fn tick(&self) -> TickReport {
        self.tick_on(&self.tasks)
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
pub fn feed_changes(feed: &dyn KeyValue) -> Option<Vec<crate::feed::Change>> {
    use crate::feed::{self, Read};
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
