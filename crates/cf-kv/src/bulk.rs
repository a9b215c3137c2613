//! Bulk write, get and delete: split to Cloudflare's per-request limits and
//! retry the keys a response reports as unsuccessful.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::Client;
use crate::envelope::Envelope;
use crate::error::Error;
use crate::http::{Http, Method};
use crate::limits::{self, check_key, check_value};

#[derive(Serialize)]
struct WriteItem<'a> {
    key: &'a str,
    value: Cow<'a, str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    base64: bool,
}

#[derive(Default, Deserialize)]
struct BulkResult {
    #[serde(default)]
    successful_key_count: Option<u64>,
    #[serde(default)]
    unsuccessful_keys: Vec<String>,
}

#[derive(Deserialize)]
struct GetResult {
    #[serde(default)]
    values: HashMap<String, Value>,
}

/// Index of the last occurrence of each key, in first-seen order, so a
/// batch never carries one key twice (miniflare refuses that) and the last
/// write wins as it would with single puts.
fn last_wins<'a, T>(items: impl Iterator<Item = (&'a str, T)>) -> Vec<(&'a str, T)> {
    let mut out: Vec<(&str, T)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (key, value) in items {
        match at.get(key) {
            Some(&i) => out[i].1 = value,
            None => {
                at.insert(key, out.len());
                out.push((key, value));
            }
        }
    }
    out
}

/// Splits encoded items (each a JSON value) into JSON arrays of at most
/// `max_items` items and `max_bytes` bytes.
fn json_arrays<'a>(
    items: impl Iterator<Item = &'a [u8]>,
    max_items: usize,
    max_bytes: usize,
) -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut body = vec![b'['];
    let mut count = 0;
    for item in items {
        // One more item needs its bytes, a comma and the closing bracket.
        let full = count == max_items || (count > 0 && body.len() + 1 + item.len() + 1 > max_bytes);
        if full {
            body.push(b']');
            bodies.push(std::mem::replace(&mut body, vec![b'[']));
            count = 0;
        }
        if count > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
        count += 1;
    }
    if count > 0 {
        body.push(b']');
        bodies.push(body);
    }
    bodies
}

impl<H: Http> Client<H> {
    /// Writes many pairs (no expiry, no metadata), in as few requests as the
    /// limits allow. Values that are not UTF-8 travel base64-encoded; one too
    /// big for a bulk item goes by single [`put`](Client::put). Keys reported
    /// unsuccessful are sent again up to `Options::unsuccessful_rounds` times,
    /// then [`Error::Incomplete`]. A failed request leaves earlier batches
    /// written; writes are idempotent, so callers retry the whole call.
    pub fn bulk_write(&self, pairs: &[(String, Vec<u8>)]) -> Result<(), Error> {
        for (key, value) in pairs {
            check_key(key)?;
            check_value(key, value.len())?;
        }
        let pairs = last_wins(pairs.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
        let mut encoded: Vec<(&str, Vec<u8>)> = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let item = match std::str::from_utf8(value) {
                Ok(text) => WriteItem {
                    key,
                    value: Cow::Borrowed(text),
                    base64: false,
                },
                Err(_) => WriteItem {
                    key,
                    value: Cow::Owned(base64::engine::general_purpose::STANDARD.encode(value)),
                    base64: true,
                },
            };
            // Base64 grows a value by a third, past the bulk item's 25 MiB cap.
            let json = serde_json::to_vec(&item)
                .map_err(|e| Error::Invalid(format!("encoding key {key:?}: {e}")))?;
            if item.value.len() > limits::MAX_VALUE_BYTES
                || json.len() + 2 > self.options.bulk_write_bytes
            {
                self.put(key, value)?;
            } else {
                encoded.push((key, json));
            }
        }
        let index: HashMap<&str, &[u8]> = encoded.iter().map(|(k, j)| (*k, j.as_slice())).collect();
        let mut pending: Vec<&str> = encoded.iter().map(|(k, _)| *k).collect();
        let (max_items, max_bytes) = (self.options.bulk_write_pairs, self.options.bulk_write_bytes);
        self.rounds(&mut pending, |keys| {
            let bodies = json_arrays(
                keys.iter().filter_map(|k| index.get(k).copied()),
                max_items,
                max_bytes,
            );
            self.send_batches(Method::Put, "bulk", bodies)
        })
    }

    /// Deletes many keys, in batches of at most 10,000; missing keys count as
    /// deleted. Unsuccessful keys are retried as in [`bulk_write`](Client::bulk_write).
    pub fn bulk_delete(&self, keys: &[String]) -> Result<(), Error> {
        for key in keys {
            check_key(key)?;
        }
        let mut pending: Vec<&str> = last_wins(keys.iter().map(|k| (k.as_str(), ())))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.rounds(&mut pending, |keys| {
            let mut bodies = Vec::new();
            for chunk in keys.chunks(self.options.bulk_delete_keys) {
                let body = serde_json::to_vec(chunk)
                    .map_err(|e| Error::Invalid(format!("encoding keys: {e}")))?;
                bodies.push(body);
            }
            self.send_batches(Method::Post, "bulk/delete", bodies)
        })
    }

    /// Reads many values as text, in batches of at most 100 keys; the result
    /// lines up with `keys`, `None` for a missing key. The endpoint returns
    /// text only: a value that is not UTF-8 comes back altered (miniflare
    /// substitutes U+FFFD); use [`get_many`](Client::get_many) for bytes.
    pub fn bulk_get(&self, keys: &[String]) -> Result<Vec<Option<String>>, Error> {
        for key in keys {
            check_key(key)?;
        }
        let unique: Vec<&str> = last_wins(keys.iter().map(|k| (k.as_str(), ())))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let mut found: HashMap<String, Option<String>> = HashMap::with_capacity(unique.len());
        for chunk in unique.chunks(self.options.bulk_get_keys) {
            let body = serde_json::json!({ "keys": chunk, "type": "text" })
                .to_string()
                .into_bytes();
            let resp = self.call(Method::Post, "bulk/get", Some("application/json"), body)?;
            let env = self.envelope::<GetResult>(resp)?;
            for (key, value) in env.result.map(|r| r.values).unwrap_or_default() {
                let text = match value {
                    Value::Null => None,
                    Value::String(s) => Some(s),
                    other => Some(other.to_string()),
                };
                found.insert(key, text);
            }
        }
        Ok(keys
            .iter()
            .map(|k| found.get(k).cloned().flatten())
            .collect())
    }

    /// Reads many values as bytes: a bulk get, then a single [`get`](Client::get)
    /// for each value holding U+FFFD, the mark of bytes that were not UTF-8
    /// (a text value that really holds U+FFFD costs one extra read).
    pub fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let texts = self.bulk_get(keys)?;
        let mut out = Vec::with_capacity(keys.len());
        for (key, text) in keys.iter().zip(texts) {
            out.push(match text {
                Some(t) if t.contains('\u{FFFD}') => self.get(key)?,
                other => other.map(String::into_bytes),
            });
        }
        Ok(out)
    }

    /// Runs `send` on `pending` until it reports no unsuccessful keys, at most
    /// `1 + unsuccessful_rounds` times, waiting between rounds when a sleeper is set.
    fn rounds<'k>(
        &self,
        pending: &mut Vec<&'k str>,
        send: impl Fn(&[&'k str]) -> Result<Vec<String>, Error>,
    ) -> Result<(), Error> {
        let mut round = 0;
        while !pending.is_empty() {
            let failed = send(pending)?;
            let failed: HashSet<&str> = failed.iter().map(String::as_str).collect();
            pending.retain(|k| failed.contains(k));
            if pending.is_empty() {
                return Ok(());
            }
            if round >= self.options.unsuccessful_rounds {
                return Err(Error::Incomplete {
                    unsuccessful_keys: pending.iter().map(|k| (*k).to_owned()).collect(),
                });
            }
            if let Some((policy, sleeper)) = &self.retry {
                sleeper.sleep(policy.backoff(round));
            }
            round += 1;
        }
        Ok(())
    }

    /// Sends each body; returns the keys the answers reported unsuccessful.
    fn send_batches(
        &self,
        method: Method,
        path: &str,
        bodies: Vec<Vec<u8>>,
    ) -> Result<Vec<String>, Error> {
        let mut failed = Vec::new();
        for body in bodies {
            let resp = self.call(method, path, Some("application/json"), body)?;
            let env = Envelope::<Value>::parse(&resp.body);
            let result: BulkResult = env
                .as_ref()
                .and_then(|e| e.result.clone())
                .and_then(|r| serde_json::from_value(r).ok())
                .unwrap_or_default();
            let ok = (200..300).contains(&resp.status) && env.as_ref().is_none_or(|e| e.success);
            // A failure envelope may still be a partial success: some keys
            // applied, the rest listed for retry.
            let partial = result.successful_key_count.unwrap_or(0) > 0
                && !result.unsuccessful_keys.is_empty();
            if !ok && !partial {
                return Err(self.failure(&resp));
            }
            failed.extend(result.unsuccessful_keys);
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_wins_keeps_first_position_and_last_value() {
        let got = last_wins([("a", 1), ("b", 2), ("a", 3)].into_iter());
        assert_eq!(got, vec![("a", 3), ("b", 2)]);
    }

    #[test]
    fn json_arrays_split_by_count_and_bytes() {
        let items: Vec<Vec<u8>> = (0..5).map(|i| format!("\"{i}\"").into_bytes()).collect();
        let split = |n, b| {
            json_arrays(items.iter().map(Vec::as_slice), n, b)
                .into_iter()
                .map(|v| String::from_utf8(v).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            split(2, 1000),
            vec![r#"["0","1"]"#, r#"["2","3"]"#, r#"["4"]"#]
        );
        // `["0","1"]` is 9 bytes: a 9-byte cap fits two items, 8 fits one.
        assert_eq!(
            split(10, 9),
            vec![r#"["0","1"]"#, r#"["2","3"]"#, r#"["4"]"#]
        );
        assert_eq!(split(10, 8).len(), 5);
        assert!(split(10, 8).iter().all(|b| b.len() <= 8));
        assert!(json_arrays(std::iter::empty(), 10, 10).is_empty());
    }
}
