//! The key-value layer the storage crates are written against: the
//! [`KeyValue`] and [`AtomicKv`] traits (so the same logic runs over Spin's
//! key-value API inside components, over SQLite in native tools and in
//! memory in tests), JSON encoding of records ([`encode`]), counters
//! ([`decode_counter`]), and what builds on the traits alone: [`backoff`]
//! (the retry schedule) and [`lease`] (compare-and-swap claims).
//! Feature `testing`: the store doubles (`testing::MemoryKv`,
//! `testing::Hooked`) for other crates' tests.

pub mod backoff;
pub mod lease;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Why a store call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store did not answer (I/O, locked, network); retrying may succeed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store refused (no such store, access denied, bad data).
    #[error("store error: {0}")]
    Other(String),
}

/// A key-value store: the subset of `wasi:keyvalue` (store + batch) spin-tasks uses.
pub trait KeyValue {
    /// The value under `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The values under `keys`, in the same order, in one round trip.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;

    /// Writes all pairs in one round trip.
    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError>;

    /// Deletes all keys in one round trip; absent keys are fine.
    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError>;

    /// Every key of the store, in no particular order.
    fn list_keys(&self) -> Result<Vec<String>, StoreError>;
}

/// Compare-and-swap on single keys (`wasi:keyvalue/atomics`).
pub trait AtomicKv: KeyValue {
    /// What a read remembers so the write can tell whether the key changed.
    type Cas;

    /// Reads `key` for a later [`AtomicKv::cas_write`].
    fn cas_read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), StoreError>;

    /// Writes `value` if the key is unchanged since `cas` was read:
    /// `Ok(true)` written, `Ok(false)` someone else wrote first.
    fn cas_write(&self, cas: Self::Cas, value: Vec<u8>) -> Result<bool, StoreError>;

    /// Adds `delta` to the counter under `key` (absent counts as 0) in one
    /// atomic step and returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
}

/// `value` as the JSON stored under `key` (the one encoding of every record
/// the storage logic keeps).
pub fn encode<T: serde::Serialize + ?Sized>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    // Most records (feed slots, outbox entries) are a few hundred bytes:
    // one allocation instead of growing from serde_json's 128.
    let mut bytes = Vec::with_capacity(384);
    serde_json::to_writer(&mut bytes, value)
        .map_err(|e| StoreError::Other(format!("encoding {key}: {e}")))?;
    Ok(bytes)
}

/// Reads a counter written by [`AtomicKv::increment`]: Spin's SQLite store
/// keeps it as 8 little-endian bytes, Redis as decimal text.
pub fn decode_counter(bytes: &[u8]) -> Option<i64> {
    if let Ok(le) = <[u8; 8]>::try_from(bytes) {
        return Some(i64::from_le_bytes(le));
    }
    std::str::from_utf8(bytes).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::decode_counter;

    #[test]
    fn counters_decode_from_both_encodings() {
        assert_eq!(decode_counter(&3i64.to_le_bytes()), Some(3));
        assert_eq!(decode_counter(&(-1i64).to_le_bytes()), Some(-1));
        assert_eq!(decode_counter(b"42"), Some(42));
        assert_eq!(decode_counter(b"x"), None);
        assert_eq!(decode_counter(b""), None);
    }
}
