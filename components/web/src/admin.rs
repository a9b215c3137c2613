//! [`Admin`] over Spin: dead letters in the local `default` store, the
//! signing key and window from Spin variables.

use tasks_domain::{ReadError, Timestamp};
use tasks_site::Admin;
use tasks_spin_kv::SpinKv;
use tasks_storage::outbox::{self, DeadLetterPage, ReplayError};

/// Store label of the outbox and dead letters (always local).
const LOCAL_STORE: &str = "default";

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
        outbox::list_dead_letters(&local()?, cursor, limit)
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

    fn signing_key(&self) -> Option<Vec<u8>> {
        spin_sdk::variables::get("hmac_key")
            .ok()
            .filter(|k| !k.is_empty())
            .map(String::into_bytes)
    }

    fn signature_ttl_secs(&self) -> u64 {
        spin_sdk::variables::get("signature_ttl_seconds")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(tasks_signing::DEFAULT_TTL_SECS)
    }

    fn now_secs(&self) -> i64 {
        Timestamp::now().millis() / 1000
    }
}
