//! Test doubles (feature `testing`, and this crate's own tests): an
//! in-memory store that counts calls and fails on demand, and the one
//! delegating store ([`Hooked`]). The writer/retrier harness is
//! `tasks_apply::testing::Harness`.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::{AtomicKv, KeyValue, StoreError, decode_counter};

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
