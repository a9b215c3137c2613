//! The first-page caches in the local store: kv-read keeps each listing's
//! first page (the data), web keeps its rendering (the HTML), both valid
//! under one generation ([`keys::PAGE_CACHE_GEN`]) that every task write
//! deletes after it commits.
//!
//! Safe against a concurrent write because the order is fixed on both
//! sides: a reader reads (or creates) the generation *before* it reads the
//! documents, a writer deletes it *after* its write commits. A page built
//! from documents older than a write therefore always carries a generation
//! that write deleted.
//!
//! Policy: pages are cached only while this app sees every write to the
//! `tasks` store, i.e. while it lives in Spin's own store (each write goes
//! through our writer or retrier, which invalidate). On a store other
//! instances write to behind our back (Cloudflare), the working copy's TTL is
//! the cache and nothing is stored here. The policy is asked on a miss only,
//! off the hot path of a hit.

use tasks_domain::keys;

use tasks_kv::{KeyValue, StoreError};

/// What a lookup found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The cached body, valid under the current generation.
    Hit(Vec<u8>),
    /// Not cached: build the page, then [`PageCache::store`] it under this generation.
    Miss(String),
    /// Caching is off (policy): build the page and keep nothing.
    Off,
}

/// The first-page cache over the local store.
pub struct PageCache<'a> {
    local: &'a dyn KeyValue,
    make_generation: &'a dyn Fn() -> String,
    sees_every_write: &'a dyn Fn() -> bool,
}

impl<'a> PageCache<'a> {
    /// A cache in `local`. `make_generation` makes a fresh unique value when
    /// there is none; `sees_every_write` tells the policy (see the module).
    pub fn new(
        local: &'a dyn KeyValue,
        make_generation: &'a dyn Fn() -> String,
        sees_every_write: &'a dyn Fn() -> bool,
    ) -> Self {
        PageCache {
            local,
            make_generation,
            sees_every_write,
        }
    }

    /// The entry under `key` (from [`keys::page_cache`] or
    /// [`keys::html_cache`]): one local round trip for a hit, and on a miss
    /// the generation to store the page under (created when there is none).
    pub fn lookup(&self, key: &str) -> Result<Lookup, StoreError> {
        let wanted = [keys::PAGE_CACHE_GEN.to_owned(), key.to_owned()];
        let mut found = self.local.get_many(&wanted)?.into_iter();
        let generation = found.next().flatten();
        if let (Some(generation), Some(Some(stored))) = (&generation, found.next())
            && let Some(body) = stored
                .strip_prefix(generation.as_slice())
                .and_then(|rest| rest.strip_prefix(b"\n"))
        {
            return Ok(Lookup::Hit(body.to_vec()));
        }
        if !(self.sees_every_write)() {
            return Ok(Lookup::Off);
        }
        match generation {
            Some(g) => Ok(Lookup::Miss(String::from_utf8_lossy(&g).into_owned())),
            None => {
                let g = (self.make_generation)();
                self.local.set_many(vec![(
                    keys::PAGE_CACHE_GEN.to_owned(),
                    g.clone().into_bytes(),
                )])?;
                Ok(Lookup::Miss(g))
            }
        }
    }

    /// Keeps `body` under `key` for `generation` (from [`Lookup::Miss`]).
    /// A cache that cannot be written only costs the next reader.
    pub fn store(&self, key: &str, generation: &str, body: &[u8]) {
        let mut value = Vec::with_capacity(generation.len() + 1 + body.len());
        value.extend_from_slice(generation.as_bytes());
        value.push(b'\n');
        value.extend_from_slice(body);
        let _ = self.local.set_many(vec![(key.to_owned(), value)]);
    }
}

/// Drops every cached page (after a task write committed, or on a purge):
/// one local read, and a delete only when a cache exists. Returns whether
/// there was one.
pub fn invalidate(local: &dyn KeyValue) -> Result<bool, StoreError> {
    if local.get(keys::PAGE_CACHE_GEN)?.is_none() {
        return Ok(false);
    }
    local.delete_many(vec![keys::PAGE_CACHE_GEN.to_owned()])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tasks_kv::testing::MemoryKv;

    #[test]
    fn a_page_is_served_until_the_generation_goes() -> Result<(), StoreError> {
        let local = MemoryKv::new();
        let cache = PageCache::new(&local, &|| "g1".to_owned(), &|| true);
        let key = keys::page_cache(None, 50);
        assert_eq!(cache.lookup(&key)?, Lookup::Miss("g1".into()));
        cache.store(&key, "g1", b"page");
        assert_eq!(cache.lookup(&key)?, Lookup::Hit(b"page".to_vec()));
        assert!(invalidate(&local)?);
        assert!(!invalidate(&local)?, "nothing left to drop");
        let cache = PageCache::new(&local, &|| "g2".to_owned(), &|| true);
        assert_eq!(cache.lookup(&key)?, Lookup::Miss("g2".into()));
        Ok(())
    }

    #[test]
    fn the_policy_is_asked_on_a_miss_only() -> Result<(), StoreError> {
        let local = MemoryKv::new();
        let key = keys::html_cache("all:50");
        local.put(keys::PAGE_CACHE_GEN, "g");
        local.put(&key, "g\nhtml");
        let off = PageCache::new(&local, &|| "new".to_owned(), &|| false);
        assert_eq!(off.lookup(&key)?, Lookup::Hit(b"html".to_vec()));
        assert_eq!(off.lookup(&keys::html_cache("other"))?, Lookup::Off);
        Ok(())
    }
}
