//! Spin's key-value API on Redis for the components this trigger runs: every
//! `[key_value_store.<label>]` of `type = "redis"` in the runtime config is
//! served by `trigger-nats-redis` instead of Spin 4.0.2's Redis store, which
//! waits up to 60 s to reconnect, sends `get-many` as `KEYS` and reports
//! every compare-and-swap as failed (`docs/decisions.md`). Same runtime
//! config, same keys and values, so `spin up`'s other triggers (http, cron)
//! keep reading and writing the same data through Spin's own store.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use spin_factor_key_value::{Cas, Error, Store, StoreManager, SwapError, v3};
use spin_factors_executor::FactorsExecutor;
use spin_runtime_config::ResolvedRuntimeConfig;
use spin_runtime_factors::{
    FactorsBuilder, TriggerAppArgs, TriggerFactors, TriggerFactorsRuntimeConfig,
};
use spin_trigger::cli::{FactorsConfig, RuntimeFactorsBuilder};
use trigger_nats_redis::RedisKv;

/// Spin's factors, with the Redis key-value stores replaced (see the module doc).
pub struct NatsFactorsBuilder;

impl RuntimeFactorsBuilder for NatsFactorsBuilder {
    type CliArgs = TriggerAppArgs;
    type Factors = TriggerFactors;
    type RuntimeConfig = ResolvedRuntimeConfig<TriggerFactorsRuntimeConfig>;

    fn build(
        config: &FactorsConfig,
        args: &Self::CliArgs,
    ) -> anyhow::Result<(Self::Factors, Self::RuntimeConfig)> {
        let (factors, mut runtime_config) = FactorsBuilder::build(config, args)?;
        if let Some(path) = &config.runtime_config_file {
            let stores = redis_stores(path)?;
            if let Some(key_value) = runtime_config.runtime_config.key_value.as_mut() {
                for (label, url) in stores {
                    let kv = RedisKv::new(&url)
                        .with_context(|| format!("[key_value_store.{label}] in {path:?}"))?;
                    key_value.add_store_manager(label, Arc::new(RedisManager(Arc::new(kv))));
                }
            }
        }
        Ok((factors, runtime_config))
    }

    fn configure_app<U: Send + 'static>(
        executor: &mut FactorsExecutor<Self::Factors, U>,
        runtime_config: &Self::RuntimeConfig,
        config: &FactorsConfig,
        args: &Self::CliArgs,
    ) -> anyhow::Result<()> {
        FactorsBuilder::configure_app(executor, runtime_config, config, args)
    }
}

/// `(label, url)` of every `[key_value_store.<label>]` with `type = "redis"`.
/// Spin has read and checked the file already; this reads the same two keys.
fn redis_stores(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {path:?}"))?;
    let Some(stores) = table.get("key_value_store").and_then(toml::Value::as_table) else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for (label, store) in stores {
        if store.get("type").and_then(toml::Value::as_str) != Some("redis") {
            continue;
        }
        let url = store
            .get("url")
            .and_then(toml::Value::as_str)
            .with_context(|| format!("[key_value_store.{label}] in {path:?} has no url"))?;
        found.push((label.clone(), url.to_owned()));
    }
    Ok(found)
}

fn other(error: trigger_nats_redis::Error) -> Error {
    Error::Other(error.to_string())
}

/// Refuses a result larger than the guest's buffer, as Spin's stores do.
fn within(limit: usize, size: usize) -> Result<(), Error> {
    if size > limit {
        return Err(Error::Other(format!(
            "query result exceeds limit of {limit} bytes"
        )));
    }
    Ok(())
}

struct RedisManager(Arc<RedisKv>);

#[async_trait::async_trait]
impl StoreManager for RedisManager {
    async fn get(&self, _name: &str) -> Result<Arc<dyn Store>, Error> {
        Ok(Arc::new(RedisStore(self.0.clone())))
    }

    fn is_defined(&self, _store_name: &str) -> bool {
        true
    }

    fn summary(&self, _store_name: &str) -> Option<String> {
        Some(format!(
            "{} (trigger-nats's Redis client)",
            self.0.address()
        ))
    }
}

struct RedisStore(Arc<RedisKv>);

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn get(&self, key: &str, max_result_bytes: usize) -> Result<Option<Vec<u8>>, Error> {
        let value = self.0.get(key).await.map_err(other)?;
        within(max_result_bytes, value.as_ref().map_or(0, Vec::len))?;
        Ok(value)
    }

    async fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.0.set(key, value).await.map_err(other)
    }

    async fn delete(&self, key: &str) -> Result<(), Error> {
        self.0.delete(key).await.map_err(other)
    }

    async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.0.exists(key).await.map_err(other)
    }

    async fn get_keys(&self, max_result_bytes: usize) -> Result<Vec<String>, Error> {
        let (mut keys, mut size, mut cursor) = (Vec::new(), 0, 0);
        loop {
            let (next, page) = self.0.scan(cursor).await.map_err(other)?;
            size += page.iter().map(String::len).sum::<usize>();
            within(max_result_bytes, size)?;
            keys.extend(page);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    async fn get_keys_async(
        &self,
        max_result_bytes: usize,
    ) -> (
        tokio::sync::mpsc::Receiver<String>,
        tokio::sync::oneshot::Receiver<Result<(), v3::Error>>,
    ) {
        let (keys_tx, keys_rx) = tokio::sync::mpsc::channel(64);
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let kv = self.0.clone();
        tokio::spawn(async move {
            let walk = async {
                let mut cursor = 0;
                loop {
                    let (next, page) = kv
                        .scan(cursor)
                        .await
                        .map_err(|e| v3::Error::Other(e.to_string()))?;
                    for key in page {
                        if key.len() > max_result_bytes {
                            return Err(v3::Error::Other(format!(
                                "query result exceeds limit of {max_result_bytes} bytes"
                            )));
                        }
                        if keys_tx.send(key).await.is_err() {
                            return Ok(()); // the guest stopped reading
                        }
                    }
                    if next == 0 {
                        return Ok(());
                    }
                    cursor = next;
                }
            };
            let _ = done_tx.send(walk.await);
        });
        (keys_rx, done_rx)
    }

    async fn get_many(
        &self,
        keys: Vec<String>,
        max_result_bytes: usize,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, Error> {
        let values = self.0.get_many(&keys).await.map_err(other)?;
        let size = keys.iter().map(String::len).sum::<usize>()
            + values.iter().flatten().map(Vec::len).sum::<usize>();
        within(max_result_bytes, size)?;
        Ok(keys.into_iter().zip(values).collect())
    }

    async fn set_many(&self, key_values: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        self.0.set_many(&key_values).await.map_err(other)
    }

    async fn delete_many(&self, keys: Vec<String>) -> Result<(), Error> {
        self.0.delete_many(&keys).await.map_err(other)
    }

    async fn increment(&self, key: String, delta: i64) -> Result<i64, Error> {
        self.0.increment(&key, delta).await.map_err(other)
    }

    async fn new_compare_and_swap(
        &self,
        bucket_rep: u32,
        key: &str,
    ) -> Result<Arc<dyn Cas>, Error> {
        Ok(Arc::new(RedisCas {
            kv: self.0.clone(),
            key: key.to_owned(),
            bucket_rep,
            read: Mutex::new(None),
        }))
    }
}

/// A compare-and-swap: `current` remembers what it read, `swap` writes only
/// over that (a swap without a `current` first writes unconditionally, as
/// Spin's stores do).
struct RedisCas {
    kv: Arc<RedisKv>,
    key: String,
    bucket_rep: u32,
    read: Mutex<Option<Option<Vec<u8>>>>,
}

#[async_trait::async_trait]
impl Cas for RedisCas {
    async fn current(&self, max_result_bytes: usize) -> Result<Option<Vec<u8>>, Error> {
        let value = self.kv.get(&self.key).await.map_err(other)?;
        within(max_result_bytes, value.as_ref().map_or(0, Vec::len))?;
        *self.read.lock().unwrap_or_else(|e| e.into_inner()) = Some(value.clone());
        Ok(value)
    }

    async fn swap(&self, value: Vec<u8>) -> Result<(), SwapError> {
        let read = self.read.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(expected) = read else {
            return self
                .kv
                .set(&self.key, &value)
                .await
                .map_err(|e| SwapError::Other(e.to_string()));
        };
        match self.kv.swap(&self.key, expected.as_deref(), &value).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SwapError::CasFailed(format!(
                "{} changed since it was read",
                self.key
            ))),
            Err(e) => Err(SwapError::Other(e.to_string())),
        }
    }

    async fn bucket_rep(&self) -> u32 {
        self.bucket_rep
    }

    async fn key(&self) -> String {
        self.key.clone()
    }
}
