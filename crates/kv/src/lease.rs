//! Claims by compare-and-swap: one holder at a time for a piece of work (a
//! task's outbox records, the probe of a failing store, the flush), and a
//! hold that lapses on its own, so a holder that died blocks nothing for
//! long.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tasks_domain::Timestamp;

use crate::{AtomicKv, StoreError, encode};

/// A hold on a piece of work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    /// Unique per holder.
    pub token: String,
    /// The hold lapses at this time.
    pub until: Timestamp,
}

impl Claim {
    /// A hold for `token` from `now`, lasting `millis`.
    pub fn new(token: String, now: Timestamp, millis: i64) -> Self {
        Claim {
            token,
            until: Timestamp(now.millis() + millis),
        }
    }

    /// Whether it still holds at `now`.
    pub fn live_at(&self, now: Timestamp) -> bool {
        self.until > now
    }
}

/// Reads the record under `key` for [`claim_read`].
pub fn read<L: AtomicKv, R: DeserializeOwned>(
    kv: &L,
    key: &str,
) -> Result<(L::Cas, Option<R>), StoreError> {
    let (cas, bytes) = kv.cas_read(key)?;
    Ok((cas, bytes.and_then(|v| serde_json::from_slice(&v).ok())))
}

/// Claims the record under `key`, as [`read`] found it: `take` returns it
/// with the claim set, or `None` when it cannot be taken now (held, not
/// due); it is written only if unchanged since the read. `Some(record)` for
/// the one caller that won.
pub fn claim_read<L: AtomicKv, R: Serialize>(
    kv: &L,
    key: &str,
    (cas, current): (L::Cas, Option<R>),
    take: impl FnOnce(Option<R>) -> Option<R>,
) -> Result<Option<R>, StoreError> {
    let Some(next) = take(current) else {
        return Ok(None);
    };
    let won = kv.cas_write(cas, encode(key, &next)?)?;
    Ok(won.then_some(next))
}

/// [`read`] then [`claim_read`].
pub fn claim<L: AtomicKv, R: Serialize + DeserializeOwned>(
    kv: &L,
    key: &str,
    take: impl FnOnce(Option<R>) -> Option<R>,
) -> Result<Option<R>, StoreError> {
    let found = read(kv, key)?;
    claim_read(kv, key, found, take)
}

/// Gives a hold back: `release` returns the record without it (`None`:
/// not ours, leave it). Losing to a concurrent change is fine: the other
/// writer released or replaced it.
pub fn release<L: AtomicKv, R: Serialize + DeserializeOwned>(
    kv: &L,
    key: &str,
    release: impl FnOnce(R) -> Option<R>,
) -> Result<(), StoreError> {
    claim(kv, key, |current: Option<R>| current.and_then(release)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemoryKv;

    #[test]
    fn one_claim_wins_until_it_lapses_or_is_released() -> Result<(), StoreError> {
        let kv = MemoryKv::new();
        let take = |token: &str, now: i64| {
            let token = token.to_owned();
            move |c: Option<Claim>| {
                (!c.is_some_and(|c| c.live_at(Timestamp(now))))
                    .then(|| Claim::new(token, Timestamp(now), 30))
            }
        };
        assert!(claim(&kv, "lock", take("a", 0))?.is_some());
        assert!(claim(&kv, "lock", take("b", 10))?.is_none(), "held");
        assert!(claim(&kv, "lock", take("b", 30))?.is_some(), "lapsed");
        release(&kv, "lock", |c: Claim| {
            (c.token == "a").then_some(Claim {
                until: Timestamp(0),
                ..c
            })
        })?;
        assert!(
            claim(&kv, "lock", take("c", 31))?.is_none(),
            "not a's to release"
        );
        release(&kv, "lock", |c: Claim| {
            (c.token == "b").then_some(Claim {
                until: Timestamp(0),
                ..c
            })
        })?;
        assert!(claim(&kv, "lock", take("c", 31))?.is_some());
        Ok(())
    }

    #[test]
    fn a_concurrent_write_loses_the_claim() -> Result<(), StoreError> {
        let kv = MemoryKv::new();
        let found = read::<_, Claim>(&kv, "lock")?;
        kv.put(
            "lock",
            encode("lock", &Claim::new("other".into(), Timestamp(0), 30))?,
        );
        let won = claim_read(&kv, "lock", found, |_| {
            Some(Claim::new("me".into(), Timestamp(0), 30))
        })?;
        assert!(won.is_none());
        Ok(())
    }
}
