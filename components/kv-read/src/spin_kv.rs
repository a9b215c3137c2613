//! [`KeyValue`] over Spin's `wasi:keyvalue` (store + batch).

use spin_sdk::wit::wasi::keyvalue::{batch, store};
use tasks_domain::ReadError;
use tasks_storage::{KeyValue, StoreError};

/// One opened Spin key-value store.
pub(crate) struct SpinKv {
    label: &'static str,
    bucket: store::Bucket,
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
    /// Opens the store with this label.
    pub(crate) fn open(label: &'static str) -> Result<Self, ReadError> {
        store::open(label)
            .map(|bucket| SpinKv { label, bucket })
            .map_err(|e| match describe(label, e) {
                StoreError::Unavailable(m) => ReadError::Unavailable(m),
                StoreError::Other(m) => ReadError::Other(m),
            })
    }
}

impl KeyValue for SpinKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.bucket.get(key).map_err(|e| describe(self.label, e))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let found = batch::get_many(&self.bucket, keys).map_err(|e| describe(self.label, e))?;
        // The host returns pairs in no promised order and may omit absent keys.
        let mut by_key: std::collections::HashMap<String, Option<Vec<u8>>> =
            found.into_iter().collect();
        Ok(keys.iter().map(|k| by_key.remove(k).flatten()).collect())
    }

    fn set_many(&self, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
        batch::set_many(&self.bucket, &pairs).map_err(|e| describe(self.label, e))
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<(), StoreError> {
        batch::delete_many(&self.bucket, &keys).map_err(|e| describe(self.label, e))
    }

    fn list_keys(&self) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let resp = self
                .bucket
                .list_keys(cursor.as_deref())
                .map_err(|e| describe(self.label, e))?;
            keys.extend(resp.keys);
            match resp.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(keys),
            }
        }
    }
}
