//! The `tasks` store as runtime configuration chooses it, behind the same
//! [`KeyValue`] + [`AtomicKv`] traits, so kv-read, the writer and the
//! retrier run unchanged on either backend:
//!
//! - `kv_backend = "spin"` (default): Spin's own store labelled `tasks`,
//!   whatever type the runtime config gives it (SQLite, Redis, …).
//! - `kv_backend = "cloudflare"`: Cloudflare Workers KV over its REST API,
//!   write-behind and read-through ([`tasks_cloud::CloudKv`]); the
//!   `tasks` label then holds the local working copy.
//!
//! A misconfigured backend fails every call with a message naming the
//! variable to set, so the first request says what is wrong.

use tasks_cf_kv::Config;
use tasks_cloud::CloudKv;
use tasks_domain::Timestamp;
use tasks_kv::{AtomicKv, KeyValue, StoreError};

use crate::cloudflare::CfRemote;
use crate::{SpinKv, variable};

/// Store label of task documents (or, on Cloudflare, of their working copy).
pub const TASKS_STORE: &str = "tasks";
/// Store label of local data (outbox, dead letters, caches, flush records).
pub const LOCAL_STORE: &str = "default";
/// Store label of the change feed and the counters behind `/metrics`.
pub const FEED_STORE: &str = "feed";

/// Default working-copy freshness on Cloudflare, in seconds.
const DEFAULT_TTL_SECONDS: i64 = 30;

/// Which backend serves `tasks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Spin's own key-value store.
    Spin,
    /// Cloudflare Workers KV.
    Cloudflare,
}

/// The `kv_backend` variable; unset or empty means `spin`.
pub fn backend() -> Result<Backend, StoreError> {
    match variable("kv_backend").as_deref() {
        None | Some("spin") => Ok(Backend::Spin),
        Some("cloudflare") => Ok(Backend::Cloudflare),
        Some(other) => Err(StoreError::Other(format!(
            "variable kv_backend is {other:?}; use \"spin\" or \"cloudflare\" (SPIN_VARIABLE_KV_BACKEND)"
        ))),
    }
}

/// Whether every write to the `tasks` store goes through this app (our
/// writer and retrier): true on Spin's own store, false on Cloudflare, where
/// other instances write too. The page cache's policy asks this (see
/// `tasks_read::page_cache`).
pub fn sees_every_write() -> bool {
    backend() == Ok(Backend::Spin)
}

fn required(name: &str) -> Result<String, StoreError> {
    variable(name).ok_or_else(|| {
        StoreError::Other(format!(
            "kv_backend is \"cloudflare\" but variable {name} is not set (SPIN_VARIABLE_{})",
            name.to_ascii_uppercase()
        ))
    })
}

/// The parts of the Cloudflare backend, owned.
pub struct Cloud {
    cache: SpinKv,
    local: SpinKv,
    remote: CfRemote,
    ttl_millis: i64,
}

impl Cloud {
    fn from_variables() -> Result<Self, StoreError> {
        let namespace = required("cf_namespace_id")?;
        let token = required("cf_api_token")?;
        let config = match variable("cf_api_base") {
            Some(base) => Config::new(base, namespace, token),
            None => Config::cloudflare(&required("cf_account_id")?, namespace, token)
                .map_err(|e| StoreError::Other(format!("variable cf_account_id: {e}")))?,
        };
        let ttl_seconds = variable("cf_cache_ttl_seconds")
            .and_then(|v| v.parse::<i64>().ok())
            .filter(|s| *s >= 0)
            .unwrap_or(DEFAULT_TTL_SECONDS);
        Ok(Cloud {
            cache: SpinKv::open_lenient(TASKS_STORE),
            local: SpinKv::open_lenient(LOCAL_STORE),
            remote: CfRemote::new(config)?,
            ttl_millis: ttl_seconds * 1000,
        })
    }

    /// The storage logic's view, borrowing these parts.
    pub fn kv(&self) -> CloudKv<'_, SpinKv, SpinKv, CfRemote> {
        CloudKv {
            cache: &self.cache,
            local: &self.local,
            remote: &self.remote,
            ttl_millis: self.ttl_millis,
            clock: &Timestamp::now,
        }
    }

    /// The working copy, the local store and the remote, for the flusher.
    pub fn parts(&self) -> (&SpinKv, &SpinKv, &CfRemote) {
        (&self.cache, &self.local, &self.remote)
    }
}

/// The `tasks` store, opened on first use.
pub enum TasksStore {
    /// Spin's own store.
    Spin(SpinKv),
    /// Cloudflare Workers KV.
    Cloudflare(Box<Cloud>),
    /// The configuration is wrong: every call fails with this.
    Misconfigured(StoreError),
}

impl TasksStore {
    /// The backend the variables choose.
    pub fn from_config() -> Self {
        match backend() {
            Ok(Backend::Spin) => TasksStore::Spin(SpinKv::open_lenient(TASKS_STORE)),
            Ok(Backend::Cloudflare) => match Cloud::from_variables() {
                Ok(cloud) => TasksStore::Cloudflare(Box::new(cloud)),
                Err(e) => TasksStore::Misconfigured(e),
            },
            Err(e) => TasksStore::Misconfigured(e),
        }
    }

    /// The Cloudflare parts, when that is the backend.
    pub fn cloud(&self) -> Option<&Cloud> {
        match self {
            TasksStore::Cloudflare(c) => Some(c),
            _ => None,
        }
    }
}

/// Runs `$call` on whichever backend serves `tasks`.
macro_rules! on_backend {
    ($self:ident, $kv:ident => $call:expr) => {
        match $self {
            TasksStore::Spin($kv) => $call,
            TasksStore::Cloudflare(cloud) => {
                let $kv = &cloud.kv();
                $call
            }
            TasksStore::Misconfigured(e) => Err(e.clone()),
        }
    };
}

impl KeyValue for TasksStore {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        on_backend!(self, kv => kv.get(key))
    }
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        on_backend!(self, kv => kv.get_many(keys))
    }
    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        on_backend!(self, kv => kv.set_many(pairs))
    }
    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        on_backend!(self, kv => kv.delete_many(keys))
    }
    fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        on_backend!(self, kv => kv.list_keys())
    }
}

impl AtomicKv for TasksStore {
    /// The key and Spin's compare-and-swap handle (the Cloudflare backend's
    /// own shape; the Spin backend carries the key along).
    type Cas = (String, <SpinKv as AtomicKv>::Cas);

    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
        match self {
            TasksStore::Spin(kv) => kv
                .cas_read(key)
                .map(|(cas, value)| ((key.to_owned(), cas), value)),
            TasksStore::Cloudflare(cloud) => cloud.kv().cas_read(key),
            TasksStore::Misconfigured(e) => Err(e.clone()),
        }
    }
    fn cas_write(&self, cas: Self::Cas, value: Vec<u8>) -> Result<bool, StoreError> {
        match self {
            TasksStore::Spin(kv) => kv.cas_write(cas.1, value),
            TasksStore::Cloudflare(cloud) => cloud.kv().cas_write(cas, value),
            TasksStore::Misconfigured(e) => Err(e.clone()),
        }
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        on_backend!(self, kv => kv.increment(key, delta))
    }
}
