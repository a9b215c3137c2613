//! [`KeyValue`] and [`AtomicKv`] over Spin's `wasi:keyvalue` (store, batch,
//! atomics), shared by the components. spin-sdk 5.2 exposes these host
//! interfaces only through its generated `wit` module.
//!
//! Feature `counters` (web, events): the HTTP components' counters
//! (`counters`). Feature `writer` (the writer and retrier components):
//! the writer's message handling (`writer`), the journal's commit to the
//! `feed` store (`feed`) and the purge sent to a remote web (`notify`);
//! without it no writer code is linked (kv-read).

pub mod cloudflare;
#[cfg(feature = "counters")]
pub mod counters;
#[cfg(feature = "writer")]
pub mod feed;
#[cfg(feature = "writer")]
pub mod notify;
pub mod tasks;
#[cfg(feature = "wasi-http-0-2")]
pub mod wasi_http_0_2;
#[cfg(feature = "writer")]
pub mod writer;

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store};
use tasks_kv::{AtomicKv, KeyValue, StoreError};

/// One Spin key-value store, opened at once or on first use.
pub struct SpinKv {
    label: &'static str,
    /// A store that failed to open answers every call with that failure, so
    /// callers handle it like any other store error (the writer defers).
    bucket: OnceCell<Result<Rc<store::Bucket>, StoreError>>,
}

thread_local! {
    /// Stores opened by this instance, by label: a component instance that
    /// Spin reuses across requests (the WASI 0.3 web, and kv-read composed
    /// into it) opens each store once, not once per request. A failed open
    /// is not kept, so the next call tries again.
    static OPENED: RefCell<HashMap<&'static str, Rc<store::Bucket>>> = RefCell::new(HashMap::new());
    /// Variables read by this instance: Spin's variables do not change while
    /// the app runs, and an instance lives for at most a few hundred requests.
    static VARIABLES: RefCell<HashMap<String, Option<String>>> = RefCell::new(HashMap::new());
    /// Log lines held by [`log_in_batches`], while it runs.
    static HELD: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The store labelled `label`, opened once per instance.
fn open_bucket(label: &'static str) -> Result<Rc<store::Bucket>, StoreError> {
    if let Some(bucket) = OPENED.with(|o| o.borrow().get(label).cloned()) {
        return Ok(bucket);
    }
    write_held();
    let bucket = Rc::new(store::open(label).map_err(|e| describe(label, e))?);
    OPENED.with(|o| o.borrow_mut().insert(label, bucket.clone()));
    Ok(bucket)
}

fn describe(label: &str, e: store::Error) -> StoreError {
    match e {
        store::Error::NoSuchStore => StoreError::Other(format!(
            "no store labelled {label:?}: add it to the component's key_value_stores and the runtime config"
        )),
        store::Error::AccessDenied => {
            StoreError::Other(format!("access to store {label:?} denied"))
        }
        store::Error::Other(m) => StoreError::Unavailable(format!("store {label:?}: {m}")),
    }
}

impl SpinKv {
    /// Opens the store with this label now.
    pub fn open(label: &'static str) -> Result<Self, StoreError> {
        let kv = Self::open_lenient(label);
        kv.bucket()?;
        Ok(kv)
    }

    /// The store with this label, opened on its first call (never, if no
    /// call comes); an opening failure surfaces on each call. Opening can
    /// itself wait on the backend (Spin's Redis store pings it), so code
    /// that may not need the store should not open it.
    pub fn open_lenient(label: &'static str) -> Self {
        SpinKv {
            label,
            bucket: OnceCell::new(),
        }
    }

    fn bucket(&self) -> Result<&store::Bucket, StoreError> {
        self.bucket
            .get_or_init(|| open_bucket(self.label))
            .as_ref()
            .map(|b| b.as_ref())
            .map_err(Clone::clone)
    }
}

/// The application variable `name`, trimmed; unset, unreadable and empty
/// all read as `None`. The one way our components read Spin variables.
pub fn variable(name: &str) -> Option<String> {
    if let Some(value) = VARIABLES.with(|v| v.borrow().get(name).cloned()) {
        return value;
    }
    let value = spin_sdk::variables::get(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty());
    VARIABLES.with(|v| v.borrow_mut().insert(name.to_owned(), value.clone()));
    value
}

/// A fresh unique id (correlation ids, record keys, cache generations).
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// One log line on the component's stdout (Spin writes it to
/// `<component>_stdout.txt` in the log directory). Inside
/// [`log_in_batches`] it is held, and goes out with the others.
pub fn log(line: &str) {
    let held = HELD.with(|h| match h.borrow_mut().as_mut() {
        Some(lines) => {
            lines.push_str(line);
            lines.push('\n');
            true
        }
        None => false,
    });
    if !held {
        println!("{line}");
    }
}

/// Runs `f` with its log lines written out together: before each store or
/// HTTP call it makes and at its end, one write for all the lines since the
/// last, not one per line. The writer logs a line or two per event, and a
/// write per line through the host cost it 8–13 % of its ingest rate
/// (docs/performance.md). A call the trigger cancels stops in a store call,
/// so every line logged before it is out; only lines of a trap are lost.
pub fn log_in_batches<R>(f: impl FnOnce() -> R) -> R {
    HELD.with(|h| *h.borrow_mut() = Some(String::new()));
    let result = f();
    write_held();
    HELD.with(|h| *h.borrow_mut() = None);
    result
}

/// Writes the lines [`log_in_batches`] holds, in one write; called before
/// each call to the host that may wait.
pub(crate) fn write_held() {
    use std::io::Write;
    HELD.with(|h| {
        if let Some(lines) = h.borrow_mut().as_mut().filter(|l| !l.is_empty()) {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(lines.as_bytes());
            let _ = out.flush();
            lines.clear();
        }
    });
}

/// Attempts of a call that found the SQLite file locked by another process.
const BUSY_ATTEMPTS: u32 = 12;

/// Whether Spin's SQLite store answered "database is locked": `spin up`
/// runs each trigger in its own process on the same files, and Spin opens
/// them without a busy timeout, so a writer in one process makes a call in
/// another fail at once instead of waiting.
fn is_busy(e: &store::Error) -> bool {
    matches!(e, store::Error::Other(m) if m.contains("DatabaseBusy") || m.contains("database is locked"))
}

/// Runs `call`, retrying with a short growing pause (2 ms up to 50 ms,
/// about half a second in all) while the file is locked.
fn patiently<T>(
    label: &str,
    mut call: impl FnMut() -> Result<T, store::Error>,
) -> Result<T, StoreError> {
    write_held();
    let mut pause = std::time::Duration::from_millis(2);
    for _ in 1..BUSY_ATTEMPTS {
        match call() {
            Err(e) if is_busy(&e) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            other => return other.map_err(|e| describe(label, e)),
        }
    }
    call().map_err(|e| describe(label, e))
}

impl KeyValue for SpinKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let bucket = self.bucket()?;
        patiently(self.label, || bucket.get(key))
    }

    /// One `get-many`; if the host refuses it, one `get` per key. Spin
    /// 4.0.2's Redis store implements `get-many` with `KEYS` instead of
    /// `MGET`, which fails for two keys or more, and for one key that exists
    /// panics in the host (an odd-length reply parsed as pairs) and aborts
    /// the whole call: one key is always one `get`. A store that is really
    /// failing fails the first `get` too.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        match keys {
            [] => return Ok(Vec::new()),
            [key] => return Ok(vec![self.get(key)?]),
            _ => {}
        }
        let bucket = self.bucket()?;
        let found = match patiently(self.label, || batch::get_many(bucket, keys)) {
            Ok(found) => found,
            Err(_) => return keys.iter().map(|k| self.get(k)).collect(),
        };
        // The host returns pairs in no promised order and may omit absent keys.
        let mut by_key: std::collections::HashMap<String, Option<Vec<u8>>> =
            found.into_iter().collect();
        Ok(keys.iter().map(|k| by_key.remove(k).flatten()).collect())
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        let bucket = self.bucket()?;
        patiently(self.label, || batch::set_many(bucket, &pairs))
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        let bucket = self.bucket()?;
        patiently(self.label, || batch::delete_many(bucket, &keys))
    }

    fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let bucket = self.bucket()?;
            let resp = patiently(self.label, || bucket.list_keys(cursor.as_deref()))?;
            keys.extend(resp.keys);
            match resp.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }
}

impl AtomicKv for SpinKv {
    type Cas = (atomics::Cas, String);

    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
        let bucket = self.bucket()?;
        let (cas, current) = patiently(self.label, || {
            let cas = atomics::Cas::new(bucket, key)?;
            let current = cas.current()?;
            Ok((cas, current))
        })?;
        Ok(((cas, key.to_owned()), current))
    }

    /// A failed swap is checked by reading the key back: the value we wrote
    /// means it landed. Spin 4.0.2's Redis store reports every swap as
    /// failed, written or not (its UNWATCH is sent with an argument, which
    /// Redis refuses), so its answer alone cannot be trusted; on SQLite a
    /// failed swap wrote nothing and the read finds the other writer's value.
    /// A swap that found the file locked did not commit either: it is
    /// checked the same way, and the caller re-reads as after a conflict.
    fn cas_write(&self, (cas, key): Self::Cas, value: Vec<u8>) -> Result<bool, StoreError> {
        write_held();
        match atomics::swap(cas, &value) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => {
                Ok(self.get(&key)?.as_deref() == Some(&value[..]))
            }
            Err(atomics::CasError::StoreError(e)) if is_busy(&e) => {
                Ok(self.get(&key)?.as_deref() == Some(&value[..]))
            }
            Err(atomics::CasError::StoreError(e)) => Err(describe(self.label, e)),
        }
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let bucket = self.bucket()?;
        patiently(self.label, || atomics::increment(bucket, key, delta))
    }
}
