//! [`Admin`] over Spin: dead letters in the local `default` store, the
//! signing key and window from Spin variables.

use tasks_domain::{ReadError, Timestamp, keys};
use tasks_feed::metrics;
use tasks_kv::StoreError;
use tasks_outbox as outbox;
use tasks_outbox::ReplayError;
use tasks_outbox::dead_letters::{self, DeadLetterPage};
use tasks_read::page_cache;
use tasks_signing::{Purpose, Taken};
use tasks_site::{Admin, PurgeScope, take_signature_in};
use tasks_spin_kv::tasks::{FEED_STORE, LOCAL_STORE, TasksStore};
use tasks_spin_kv::{SpinKv, variable};

pub(crate) struct SpinAdmin;

fn local() -> Result<SpinKv, ReadError> {
    SpinKv::open(LOCAL_STORE).map_err(|e| ReadError::Unavailable(e.to_string()))
}

impl Admin for SpinAdmin {
    fn dead_letters(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, ReadError> {
        dead_letters::list(&local()?, cursor, limit)
    }

    fn replay(&self, id: &str, correlation_id: &str) -> Result<String, ReplayError> {
        let local = SpinKv::open(LOCAL_STORE)?;
        let result = outbox::replay_dead_letter(&local, id, Timestamp::now());
        match &result {
            Ok(key) => println!("[{correlation_id}] REPLAY dlq:{id} → {key}"),
            Err(e) => println!("[{correlation_id}] REPLAY dlq:{id} refused: {e}"),
        }
        result
    }

    fn admin_token(&self) -> Option<Vec<u8>> {
        variable("admin_token").map(String::into_bytes)
    }

    fn metrics(&self) -> Result<String, ReadError> {
        let feed = SpinKv::open(FEED_STORE).map_err(|e| ReadError::Unavailable(e.to_string()))?;
        let snapshot =
            metrics::snapshot(&feed).map_err(|e| ReadError::Unavailable(e.to_string()))?;
        Ok(metrics::render(&snapshot))
    }

    fn take_signature(&self, signature: &str, valid_until: i64) -> Result<Taken, ReadError> {
        take_signature_in(&local()?, signature, valid_until, self.now_secs())
            .map_err(|e| ReadError::Unavailable(e.to_string()))
    }

    fn signing_key(&self, purpose: Purpose) -> Option<(Vec<u8>, &'static str)> {
        purpose
            .key(variable)
            .map(|(key, name)| (key.into_bytes(), name))
    }

    fn signature_ttl_secs(&self) -> u64 {
        variable("signature_ttl_seconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(tasks_signing::DEFAULT_TTL_SECS)
    }

    fn now_secs(&self) -> i64 {
        Timestamp::now().millis() / 1000
    }

    /// Every cached page goes (the generation is deleted); on Cloudflare the
    /// working copies of the named tasks (or all) go too, so the next read
    /// fetches them. Writes not yet flushed are never dropped.
    fn purge(&self, scope: &PurgeScope, correlation_id: &str) -> Result<usize, ReadError> {
        crate::source::forget_pages();
        let unavailable = |e: StoreError| ReadError::Unavailable(e.to_string());
        let had_pages = page_cache::invalidate(&local()?).map_err(unavailable)?;
        let tasks = TasksStore::from_config();
        let copies = match tasks.cloud() {
            Some(cloud) => {
                let wanted = match scope {
                    PurgeScope::All => None,
                    PurgeScope::Tasks(ids) => {
                        Some(ids.iter().map(|id| keys::task(id)).collect::<Vec<_>>())
                    }
                };
                cloud.kv().purge(wanted.as_deref()).map_err(unavailable)?
            }
            None => 0,
        };
        let what = match scope {
            PurgeScope::All => "all".to_owned(),
            PurgeScope::Tasks(ids) => format!("tasks {}", ids.join(",")),
        };
        println!(
            "[{correlation_id}] PURGE {what}: {} cached pages, {copies} working copies",
            if had_pages { "all" } else { "no" }
        );
        Ok(usize::from(had_pages) + copies)
    }
}
