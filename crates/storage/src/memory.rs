//! An in-memory [`KeyValue`] that counts calls, for tests.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use crate::{KeyValue, StoreError};

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
        self.count(|c| c.get += 1)?;
        Ok(self.peek(key))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.count(|c| c.get_many += 1)?;
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

impl crate::AtomicKv for MemoryKv {
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
        let now = self
            .peek(key)
            .and_then(|v| crate::kv::decode_counter(&v))
            .unwrap_or(0)
            + delta;
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
}

/// A [`MemoryKv`] that runs a closure once at a chosen point, for tests
/// that need a concurrent writer (or a second retrier run) to act at the
/// worst moment.
pub struct Hooked<'a> {
    inner: &'a MemoryKv,
    at: HookAt,
    hook: RefCell<Option<Box<dyn FnOnce() + 'a>>>,
}

impl<'a> Hooked<'a> {
    /// `inner`, running `hook` once at `at`.
    pub fn new(inner: &'a MemoryKv, at: HookAt, hook: impl FnOnce() + 'a) -> Self {
        Hooked {
            inner,
            at,
            hook: RefCell::new(Some(Box::new(hook))),
        }
    }

    fn fire(&self, at: HookAt) {
        if at != self.at {
            return;
        }
        let hook = self.hook.borrow_mut().take();
        if let Some(hook) = hook {
            hook();
        }
    }
}

impl KeyValue for Hooked<'_> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
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

impl crate::AtomicKv for Hooked<'_> {
    type Cas = <MemoryKv as crate::AtomicKv>::Cas;
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
        self.inner.cas_read(key)
    }
    fn cas_write(&self, cas: Self::Cas, value: Vec<u8>) -> Result<bool, StoreError> {
        self.fire(HookAt::Write);
        self.inner.cas_write(cas, value)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        self.inner.increment(key, delta)
    }
}
