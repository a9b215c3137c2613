//! Cloudflare Workers KV as the `tasks` store: read-through and write-behind
//! over a local working copy.
//!
//! Cloudflare's REST API is rate-limited account-wide and eventually
//! consistent, so [`CloudKv`] serves reads from a working copy (Spin's
//! `tasks` store, a local SQLite file in this mode) and fetches from
//! Cloudflare only what is missing there or older than the TTL. Writes land
//! in the working copy at once and leave a flush record in the `default`
//! store; `tasks_cloud_flush::Flusher` sends those to Cloudflare in bulk.
//!
//! Each working-copy entry is an envelope under the task store's own key: a
//! tag byte, the time in 13-digit milliseconds, the payload. `V` and `A` are
//! a value and an absence fetched from Cloudflare, fresh for the TTL. `W` and
//! `D` are a write and a delete not flushed yet: never stale, so reads see
//! their own writes until the flush turns them into `V` and `A`.

use tasks_domain::{Timestamp, keys};

use tasks_kv::{AtomicKv, KeyValue, StoreError};

/// Working-copy envelopes read per `get_many` when listing.
const CACHE_BATCH: usize = 500;

/// The remote side (Cloudflare), as the storage logic needs it.
/// Implementations batch (bulk get ≤100 keys per call etc.).
pub trait Remote {
    /// The values under `keys`, in the same order.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    /// Every key starting with `prefix`, in no particular order.
    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Writes `puts` and deletes `deletes` (distinct keys); `Ok` only when
    /// all of it was accepted.
    fn write_many(
        &self,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
    ) -> Result<(), StoreError>;
}

/// What a working-copy envelope says about its key (public for the flush,
/// `tasks-cloud-flush`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// A value fetched from Cloudflare (or flushed to it).
    Fetched,
    /// An absence seen at Cloudflare (or a delete flushed to it).
    Absent,
    /// Written locally, not flushed yet.
    Written,
    /// Deleted locally, not flushed yet.
    Deleted,
    /// Seen in a Cloudflare key listing; its value is fetched when read.
    Listed,
}

impl Tag {
    fn byte(self) -> u8 {
        match self {
            Tag::Fetched => b'V',
            Tag::Absent => b'A',
            Tag::Written => b'W',
            Tag::Deleted => b'D',
            Tag::Listed => b'K',
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'V' => Some(Tag::Fetched),
            b'A' => Some(Tag::Absent),
            b'W' => Some(Tag::Written),
            b'D' => Some(Tag::Deleted),
            b'K' => Some(Tag::Listed),
            _ => None,
        }
    }
}

/// A decoded working-copy entry, borrowing its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Envelope<'b> {
    /// What the entry says about its key.
    pub tag: Tag,
    /// When it was fetched or written, in Unix milliseconds.
    pub at_millis: i64,
    /// The value (empty for an absence or a delete).
    pub payload: &'b [u8],
}

impl Envelope<'_> {
    /// The value the key reads as.
    pub(crate) fn value(&self) -> Option<Vec<u8>> {
        matches!(self.tag, Tag::Fetched | Tag::Written).then(|| self.payload.to_vec())
    }

    /// Whether it may be served at `now` without asking Cloudflare.
    fn fresh(&self, now: i64, ttl_millis: i64) -> bool {
        match self.tag {
            Tag::Written | Tag::Deleted => true,
            Tag::Fetched | Tag::Absent => now - self.at_millis < ttl_millis,
            Tag::Listed => false,
        }
    }
}

/// `<tag><millis, 13 digits><payload>`.
pub fn encode(tag: Tag, at_millis: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    out.push(tag.byte());
    out.extend_from_slice(format!("{:013}", at_millis.clamp(0, 9_999_999_999_999)).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The envelope in `bytes`, or `None` when they are not one (such an entry
/// counts as missing and is fetched again).
pub fn decode(bytes: &[u8]) -> Option<Envelope<'_>> {
    let (&tag, rest) = bytes.split_first()?;
    let millis = rest.get(..13)?;
    if !millis.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(Envelope {
        tag: Tag::from_byte(tag)?,
        at_millis: std::str::from_utf8(millis).ok()?.parse().ok()?,
        payload: &rest[13..],
    })
}

/// A flush record's value: `P` and the value to put, or `X` for a delete.
pub(crate) fn flush_record(value: Option<&[u8]>) -> Vec<u8> {
    match value {
        Some(v) => [b"P".as_slice(), v].concat(),
        None => b"X".to_vec(),
    }
}

/// The write a flush record holds: `Some(value)` to put, `None` to delete;
/// `Err` when it is neither.
pub fn parse_flush_record(bytes: &[u8]) -> Result<Option<&[u8]>, String> {
    match bytes.split_first() {
        Some((b'P', value)) => Ok(Some(value)),
        Some((b'X', [])) => Ok(None),
        _ => Err("not a P or X flush record".into()),
    }
}

/// The `tasks` store over Cloudflare: a working copy in `cache`, flush
/// records in `local`, Cloudflare behind `remote`.
///
/// Order of a write: the flush sequence number is taken first, then the
/// working copy changes, then the flush record is written. A compare-and-swap
/// write therefore holds a higher number than every write it read, so the
/// highest-numbered record of a key is the working copy's latest value. A
/// failure after the working copy changed returns `Err` with the record
/// missing: the writer then defers the event and applies it again, which
/// writes a record. Two plain `set_many` calls of one key at the same moment
/// (the writer's concurrent creates of one new id, last-writer-wins) may
/// number their records in the other order than they reached the working
/// copy; the working copy then keeps `W` and differs from Cloudflare until
/// the key's next write.
pub struct CloudKv<'a, C: AtomicKv, L: AtomicKv, R: Remote> {
    /// The working copy: in Cloudflare mode Spin's `tasks` label points at a
    /// local SQLite file.
    pub cache: &'a C,
    /// The `default` store: flush records and their counter.
    pub local: &'a L,
    /// Cloudflare.
    pub remote: &'a R,
    /// How long a value or absence fetched from Cloudflare is served
    /// without asking again.
    pub ttl_millis: i64,
    /// The current time.
    pub clock: &'a dyn Fn() -> Timestamp,
}

impl<C: AtomicKv, L: AtomicKv, R: Remote> CloudKv<'_, C, L, R> {
    fn now(&self) -> i64 {
        (self.clock)().millis()
    }

    /// Lists every key at Cloudflare, marks those the working copy has no
    /// entry for as `Listed`, and stamps [`keys::CF_LISTED_AT`].
    fn refresh_listing(&self) -> Result<Vec<String>, StoreError> {
        let now = self.now();
        let listed = self.remote.list_keys("")?;
        let mut marks = Vec::new();
        for chunk in listed.chunks(CACHE_BATCH) {
            for (key, bytes) in chunk.iter().zip(self.cache.get_many(chunk)?) {
                if bytes.is_none() {
                    marks.push((key.clone(), encode(Tag::Listed, now, b"")));
                }
            }
        }
        marks.push((
            keys::CF_LISTED_AT.to_owned(),
            format!("{now:013}").into_bytes(),
        ));
        self.cache.set_many(marks)?;
        Ok(listed)
    }

    /// The time of a listing fresher than the TTL, listing now if needed
    /// (one call per 1,000 keys).
    fn fresh_listing(&self) -> Result<i64, StoreError> {
        let now = self.now();
        let at = self
            .cache
            .get(keys::CF_LISTED_AT)?
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok());
        match at {
            Some(at) if now - at < self.ttl_millis => Ok(at),
            _ => {
                self.refresh_listing()?;
                Ok(now)
            }
        }
    }

    /// Forgets fetched entries (`V`/`A`) of `keys`, or of every key, so the
    /// next read asks Cloudflare; writes not yet flushed (`W`/`D`) stay.
    /// Returns how many entries were forgotten. A write landing between the
    /// read and the overwrite here is lost from the working copy only (its
    /// flush record still sends it), as in the read path.
    pub fn purge(&self, keys: Option<&[String]>) -> Result<usize, StoreError> {
        let keys: Vec<String> = match keys {
            Some(k) => k.to_vec(),
            None => self.cache.list_keys()?,
        };
        let mut fetched = Vec::new();
        for chunk in keys.chunks(256) {
            for (key, value) in chunk.iter().zip(self.cache.get_many(chunk)?) {
                let is_fetched = value
                    .as_deref()
                    .and_then(decode)
                    .is_some_and(|e| matches!(e.tag, Tag::Fetched | Tag::Absent));
                if is_fetched {
                    fetched.push(key.clone());
                }
            }
        }
        // Marked "listed, value not fetched" rather than removed: with a
        // fresh listing, a key with no entry would read as absent.
        let n = fetched.len();
        if n > 0 {
            let now = self.now();
            let marks = fetched
                .into_iter()
                .map(|k| (k, encode(Tag::Listed, now, b"")))
                .collect();
            self.cache.set_many(marks)?;
        }
        Ok(n)
    }

    /// Reads `keys` through the working copy: fresh envelopes are served as
    /// they are, the rest is fetched in one remote call and kept as `V`/`A`.
    ///
    /// Fetched values are stored with a plain set, and only under keys whose
    /// envelope is still the stale one read before the fetch (re-read after
    /// it). A local write landing between that re-read and the set is
    /// overwritten in the working copy; its flush record still sends it to
    /// Cloudflare, and the working copy shows it again once the fetched
    /// entry expires.
    fn read(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let now = self.now();
        let seen = self.cache.get_many(keys)?;
        let mut out = Vec::with_capacity(keys.len());
        let mut stale = Vec::new();
        for (i, bytes) in seen.iter().enumerate() {
            match bytes.as_deref().and_then(decode) {
                Some(e) if e.fresh(now, self.ttl_millis) => out.push(e.value()),
                _ => {
                    out.push(None);
                    stale.push(i);
                }
            }
        }
        if stale.is_empty() {
            return Ok(out);
        }
        // Keys with no entry at all: absent if a fresh listing did not name them.
        if stale.iter().any(|&i| seen[i].is_none()) {
            let listed_at = self.fresh_listing()?;
            let unnamed: Vec<usize> = stale
                .iter()
                .copied()
                .filter(|&i| seen[i].is_none())
                .collect();
            let wanted: Vec<String> = unnamed.iter().map(|&i| keys[i].clone()).collect();
            let mut absent = Vec::new();
            for (&i, bytes) in unnamed.iter().zip(self.cache.get_many(&wanted)?) {
                if bytes.is_none() {
                    absent.push(i);
                }
            }
            if !absent.is_empty() {
                let marks = absent
                    .iter()
                    .map(|&i| (keys[i].clone(), encode(Tag::Absent, listed_at, b"")))
                    .collect();
                self.cache.set_many(marks)?;
                stale.retain(|i| !absent.contains(i));
                if stale.is_empty() {
                    return Ok(out);
                }
            }
        }
        let wanted: Vec<String> = stale.iter().map(|&i| keys[i].clone()).collect();
        let fetched = self.remote.get_many(&wanted)?;
        if fetched.len() != wanted.len() {
            return Err(StoreError::Other(format!(
                "remote get of {} keys returned {} values",
                wanted.len(),
                fetched.len()
            )));
        }
        for (&i, value) in stale.iter().zip(&fetched) {
            out[i].clone_from(value);
        }
        // Keeping what was fetched only spares later remote calls: the
        // values returned are right either way.
        let Ok(again) = self.cache.get_many(&wanted) else {
            return Ok(out);
        };
        let mut keep = Vec::new();
        for ((&i, value), now_bytes) in stale.iter().zip(fetched).zip(again) {
            let listed = now_bytes
                .as_deref()
                .and_then(decode)
                .is_some_and(|e| e.tag == Tag::Listed);
            if now_bytes == seen[i] || listed {
                let envelope = match &value {
                    Some(v) => encode(Tag::Fetched, now, v),
                    None => encode(Tag::Absent, now, b""),
                };
                keep.push((keys[i].clone(), envelope));
            } else if let Some(e) = now_bytes.as_deref().and_then(decode) {
                // Written while we fetched: our own write wins.
                out[i] = e.value();
            }
        }
        if !keep.is_empty() {
            let _ = self.cache.set_many(keep);
        }
        Ok(out)
    }

    /// Changes the working copy (`W`/`D`), then records the writes for the
    /// flush; `None` deletes.
    fn write(&self, writes: Vec<(String, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        let Ok(n) = i64::try_from(writes.len()) else {
            return Err(StoreError::Other("too many writes in one call".into()));
        };
        if n == 0 {
            return Ok(());
        }
        let first = self.local.increment(keys::FLUSH_SEQ, n)? - n + 1;
        let now = self.now();
        let envelopes = writes
            .iter()
            .map(|(key, value)| {
                let envelope = match value {
                    Some(v) => encode(Tag::Written, now, v),
                    None => encode(Tag::Deleted, now, b""),
                };
                (key.clone(), envelope)
            })
            .collect();
        self.cache.set_many(envelopes)?;
        let records = (first..)
            .zip(writes)
            .map(|(seq, (key, value))| (keys::flush(seq, &key), flush_record(value.as_deref())))
            .collect();
        self.local.set_many(records)
    }
}

impl<C: AtomicKv, L: AtomicKv, R: Remote> KeyValue for CloudKv<'_, C, L, R> {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read(&[key.to_owned()])?.pop().flatten())
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.read(keys)
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        self.write(pairs.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        self.write(keys.into_iter().map(|k| (k, None)).collect())
    }

    /// Cloudflare's keys, plus keys written here and not flushed yet, minus
    /// keys deleted here and not flushed yet. Fresh fetched entries count
    /// too (a value adds its key, an absence removes it): Cloudflare's
    /// listing lags its writes by up to a minute, and a flushed write is a
    /// fresh fetched entry for the TTL, so with a TTL of a minute or more a
    /// listing never misses a key that was just flushed.
    fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut listed: std::collections::BTreeSet<String> =
            self.refresh_listing()?.into_iter().collect();
        let now = self.now();
        let cached = self.cache.list_keys()?;
        for chunk in cached.chunks(CACHE_BATCH) {
            for (key, bytes) in chunk.iter().zip(self.cache.get_many(chunk)?) {
                let Some(e) = bytes.as_deref().and_then(decode) else {
                    continue;
                };
                match e.tag {
                    Tag::Written => {
                        listed.insert(key.clone());
                    }
                    Tag::Deleted => {
                        listed.remove(key);
                    }
                    Tag::Fetched if e.fresh(now, self.ttl_millis) => {
                        listed.insert(key.clone());
                    }
                    Tag::Absent if e.fresh(now, self.ttl_millis) => {
                        listed.remove(key);
                    }
                    Tag::Fetched | Tag::Absent | Tag::Listed => {}
                }
            }
        }
        Ok(listed.into_iter().collect())
    }
}

impl<C: AtomicKv, L: AtomicKv, R: Remote> AtomicKv for CloudKv<'_, C, L, R> {
    type Cas = (String, C::Cas);

    /// Reads `key` from the working copy, fetching it first when stale (the
    /// fetched entry is stored by compare-and-swap, so it never replaces a
    /// local write).
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError> {
        let (cas, bytes) = self.cache.cas_read(key)?;
        let now = self.now();
        if let Some(e) = bytes.as_deref().and_then(decode)
            && e.fresh(now, self.ttl_millis)
        {
            return Ok(((key.to_owned(), cas), e.value()));
        }
        if bytes.is_none() {
            // No entry at all: absent if a fresh listing did not name it.
            let listed_at = self.fresh_listing()?;
            let (cas, bytes) = self.cache.cas_read(key)?;
            if bytes.is_none() {
                let _ = self
                    .cache
                    .cas_write(cas, encode(Tag::Absent, listed_at, b""))?;
                let (cas, bytes) = self.cache.cas_read(key)?;
                let value = bytes.as_deref().and_then(decode).and_then(|e| e.value());
                return Ok(((key.to_owned(), cas), value));
            }
            return self.cas_read(key);
        }
        let fetched = self.remote.get_many(&[key.to_owned()])?.pop().flatten();
        let envelope = match &fetched {
            Some(v) => encode(Tag::Fetched, now, v),
            None => encode(Tag::Absent, now, b""),
        };
        // Lost: someone wrote meanwhile, and the read below sees it.
        let _ = self.cache.cas_write(cas, envelope)?;
        let (cas, bytes) = self.cache.cas_read(key)?;
        let value = match bytes.as_deref().map(decode) {
            Some(Some(e)) => e.value(),
            None => None,
            Some(None) => {
                return Err(StoreError::Other(format!(
                    "working-copy entry {key:?} is not an envelope"
                )));
            }
        };
        Ok(((key.to_owned(), cas), value))
    }

    /// Writes `value` into the working copy if unchanged since `cas_read`,
    /// then records it for the flush.
    fn cas_write(&self, (key, cas): Self::Cas, value: Vec<u8>) -> Result<bool, StoreError> {
        // Numbered before the swap: a later writer's swap (and number) comes
        // after ours.
        let seq = self.local.increment(keys::FLUSH_SEQ, 1)?;
        let envelope = encode(Tag::Written, self.now(), &value);
        if !self.cache.cas_write(cas, envelope)? {
            return Ok(false);
        }
        self.local
            .set_many(vec![(keys::flush(seq, &key), flush_record(Some(&value)))])?;
        Ok(true)
    }

    fn increment(&self, _key: &str, _delta: i64) -> Result<i64, StoreError> {
        Err(StoreError::Other(
            "increment is not supported on the Cloudflare tasks store".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let cases: [(Tag, i64, &[u8]); 5] = [
            (Tag::Fetched, 1_795_327_314_000, b"{\"id\":\"t\"}"),
            (Tag::Absent, 5, b""),
            (Tag::Written, 0, b"\x00\xff"),
            (Tag::Deleted, 42, b""),
            (Tag::Written, 7, b"0123456789012345"),
        ];
        for (tag, at, payload) in cases {
            let bytes = encode(tag, at, payload);
            assert_eq!(bytes.len(), 14 + payload.len());
            assert_eq!(
                decode(&bytes),
                Some(Envelope {
                    tag,
                    at_millis: at,
                    payload
                })
            );
        }
        assert_eq!(&encode(Tag::Fetched, 12, b"x"), b"V0000000000012x");
    }

    #[test]
    fn non_envelopes_decode_to_none() {
        for bytes in [
            &b""[..],
            b"V",
            b"V000000000001",
            b"Q0000000000001x",
            b"V00000000000x1x",
            b"{\"id\":\"t\"}",
        ] {
            assert_eq!(decode(bytes), None, "{bytes:?}");
        }
    }

    #[test]
    fn freshness_and_values_by_tag() {
        let ttl = 1_000;
        let at = 10_000;
        let cases = [
            (Tag::Fetched, 10_999, true, Some(b"p".to_vec())),
            (Tag::Fetched, 11_000, false, Some(b"p".to_vec())),
            (Tag::Absent, 10_500, true, None),
            (Tag::Absent, 11_000, false, None),
            (Tag::Written, 99_999_999, true, Some(b"p".to_vec())),
            (Tag::Deleted, 99_999_999, true, None),
        ];
        for (tag, now, fresh, value) in cases {
            let payload: &[u8] = if matches!(tag, Tag::Fetched | Tag::Written) {
                b"p"
            } else {
                b""
            };
            let e = Envelope {
                tag,
                at_millis: at,
                payload,
            };
            assert_eq!(e.fresh(now, ttl), fresh, "{tag:?} at {now}");
            assert_eq!(e.value(), value, "{tag:?}");
        }
    }

    #[test]
    fn flush_records_round_trip() {
        assert_eq!(flush_record(Some(b"{}")), b"P{}");
        assert_eq!(flush_record(None), b"X");
        assert_eq!(parse_flush_record(b"P{}"), Ok(Some(&b"{}"[..])));
        assert_eq!(parse_flush_record(b"P"), Ok(Some(&b""[..])));
        assert_eq!(parse_flush_record(b"X"), Ok(None));
        for bad in [&b""[..], b"Xy", b"{}"] {
            assert!(parse_flush_record(bad).is_err(), "{bad:?}");
        }
    }
}
