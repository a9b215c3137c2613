//! The `tasks` store's health, kept in the local store while it fails (a
//! circuit breaker): the writer defers at once instead of waiting on a store
//! that is down, and one retrier run at a time probes it.

use serde::{Deserialize, Serialize};
use tasks_domain::{Timestamp, keys};

use tasks_kv::lease::{self, Claim};
use tasks_kv::{AtomicKv, KeyValue, StoreError, encode};

/// How long after its last observed failure the `tasks` store counts as
/// down for the retrier: it probes (one call per run) meanwhile, instead of
/// running every due record.
pub const CIRCUIT_MILLIS: i64 = 30_000;

/// How long after its last observed failure the writer defers new events
/// at once instead of calling the `tasks` store; then the next call tries
/// it (one failing call a second at most). Short, so the writer is back as
/// soon as its own client is (trigger-nats's Redis client reconnects within
/// a second), without waiting for a retrier run to find the store up: the
/// retrier may be waiting on a slower client (Spin's own Redis store, under
/// trigger-cron), and what the writer defers meanwhile queues every later
/// event of its task behind it.
pub const WRITER_CIRCUIT_MILLIS: i64 = 1_000;

/// The `tasks` store's recent failures, kept under
/// [`tasks_domain::keys::TASKS_HEALTH`] in the local store while it fails.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreHealth {
    /// First failure of this outage.
    pub down_since: Timestamp,
    /// Latest failure.
    pub last_failure_at: Timestamp,
    /// What the latest failure said.
    pub last_error: String,
    /// The retrier run probing the store, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Claim>,
}

impl StoreHealth {
    /// Whether the store counts as down at `now` (for the retrier).
    pub fn is_down(&self, now: Timestamp) -> bool {
        now.millis() - self.last_failure_at.millis() < CIRCUIT_MILLIS
    }

    /// Whether the writer defers at `now` without calling the store.
    pub fn writer_defers(&self, now: Timestamp) -> bool {
        now.millis() - self.last_failure_at.millis() < WRITER_CIRCUIT_MILLIS
    }

    /// The record after one more failure at `now` (the probe released).
    pub fn failed(previous: Option<StoreHealth>, error: &str, now: Timestamp) -> Self {
        StoreHealth {
            down_since: previous
                .filter(|h| h.is_down(now))
                .map_or(now, |h| h.down_since),
            last_failure_at: now,
            last_error: error.to_owned(),
            probe: None,
        }
    }
}

/// The health record, if the store has failed lately.
pub fn read(value: Option<&[u8]>) -> Option<StoreHealth> {
    serde_json::from_slice(value?).ok()
}

/// Records that the `tasks` store just failed (after `previous`), so the
/// next events defer at once; logs the outage's first failure.
pub fn mark_down(
    local: &dyn KeyValue,
    log: &dyn Fn(&str),
    cid: &str,
    previous: Option<StoreHealth>,
    error: &str,
    now: Timestamp,
) {
    let first = previous.as_ref().is_none_or(|h| !h.is_down(now));
    let health = StoreHealth::failed(previous, error, now);
    let stored = encode(keys::TASKS_HEALTH, &health)
        .and_then(|v| local.set_many(vec![(keys::TASKS_HEALTH.to_owned(), v)]));
    match stored {
        Ok(()) if first => log(&format!(
            "[{cid}] STORE tasks is DOWN: {error}; events defer to the outbox until a retry succeeds"
        )),
        Ok(()) => {}
        Err(e) => log(&format!(
            "[{cid}] KV PUT {} — FAILED: {e}",
            keys::TASKS_HEALTH
        )),
    }
}

/// Takes the probe of a store that is down, as `found` (from
/// [`lease::read`]) shows it, for `millis` (as long as the run's claims):
/// `false` when another run holds it.
pub fn claim_probe<L: AtomicKv>(
    local: &L,
    found: (L::Cas, Option<StoreHealth>),
    token: String,
    now: Timestamp,
    millis: i64,
) -> Result<bool, StoreError> {
    let won = lease::claim_read(local, keys::TASKS_HEALTH, found, |h| {
        let mut h = h?;
        if h.probe.as_ref().is_some_and(|p| p.live_at(now)) {
            return None;
        }
        h.probe = Some(Claim::new(token, now, millis));
        Some(h)
    })?;
    Ok(won.is_some())
}

/// Gives the probe back (nothing was probed).
pub fn release_probe<L: AtomicKv>(local: &L) -> Result<(), StoreError> {
    lease::release(local, keys::TASKS_HEALTH, |mut h: StoreHealth| {
        h.probe = None;
        Some(h)
    })
}

/// The store answered again: the record goes, and the outage is logged.
pub fn mark_up(local: &dyn KeyValue, log: &dyn Fn(&str)) -> Result<(), StoreError> {
    if let Some(h) = read(local.get(keys::TASKS_HEALTH)?.as_deref()) {
        log(&format!(
            "[-] STORE tasks is UP again (down since {}, last error: {})",
            h.down_since, h.last_error
        ));
    }
    local.delete_many(vec![keys::TASKS_HEALTH.to_owned()])
}
