//! Dead letters: events (and flush records) that will never apply, kept
//! in the local store with the exact payload and the reason, listed oldest
//! first for the admin API. Every dead letter is built by
//! [`DeadLetter::new`] and written by [`DeadLetter::store`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use tasks_domain::{ReadError, Timestamp, cursor, keys};

use tasks_kv::{AtomicKv, KeyValue, StoreError, encode};

/// A payload as received: text when it is UTF-8, base64 otherwise, so a
/// record always gives back the exact bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPayload {
    /// The payload, when it is valid UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in base64, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

impl RawPayload {
    /// Keeps `bytes` losslessly.
    pub fn keep(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => RawPayload {
                payload: Some(s.to_owned()),
                payload_base64: None,
            },
            Err(_) => RawPayload {
                payload: None,
                payload_base64: Some(STANDARD.encode(bytes)),
            },
        }
    }

    /// The original bytes.
    pub fn bytes(&self) -> Vec<u8> {
        match (&self.payload, &self.payload_base64) {
            (Some(s), _) => s.clone().into_bytes(),
            (None, Some(b)) => STANDARD.decode(b).unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// An event that will never apply, kept with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// NATS subject it arrived on.
    pub subject: String,
    /// The payload as received.
    #[serde(flatten)]
    pub raw: RawPayload,
    /// Correlation id it was handled under.
    pub correlation_id: String,
    /// The task it names, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Every error met on the way, oldest first (retries add to it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Retries made before it was dead-lettered.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Its JetStream stream sequence, when it came from a stream: a replay
    /// carries it, so an event the task has moved past is skipped, not
    /// applied over newer state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_seq: Option<u64>,
    /// The epoch of that stream ([`tasks_domain::StreamPos`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_epoch: Option<u64>,
    /// When the event first arrived, when it differs from `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<Timestamp>,
    /// When it was dead-lettered.
    pub at: Timestamp,
    /// Set while a replay moves it back to the outbox, so two replays of
    /// the same record cannot both enqueue it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaying: Option<Timestamp>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl DeadLetter {
    /// A dead letter of `payload` (as received on `subject`, handled under
    /// `correlation_id`) refused at `at` for `reason`; no task, errors or
    /// retries yet (set those fields where they are known).
    pub fn new(
        subject: &str,
        payload: RawPayload,
        correlation_id: &str,
        reason: String,
        at: Timestamp,
    ) -> Self {
        DeadLetter {
            subject: subject.to_owned(),
            raw: payload,
            correlation_id: correlation_id.to_owned(),
            task_id: None,
            reason,
            errors: Vec::new(),
            attempts: 0,
            stream_seq: None,
            stream_epoch: None,
            received_at: None,
            at,
            replaying: None,
        }
    }

    /// Writes it under `key` (from [`keys::dead_letter`] or its kin).
    pub fn store(&self, local: &dyn KeyValue, key: &str) -> Result<(), StoreError> {
        local.set_many(vec![(key.to_owned(), encode(key, self)?)])
    }

    /// The marker of its stream event ([`keys::dead_letter_seen`]), when
    /// it came from a stream.
    pub fn seen_marker(&self) -> Option<String> {
        self.stream_seq
            .map(|seq| keys::dead_letter_seen(self.stream_epoch, seq))
    }

    /// Files it under `key`, or, for a stream event (its
    /// [`DeadLetter::seen_marker`]), once however many deliveries,
    /// calls and instances file it. The first to swap the marker from
    /// absent to its key decides where the record lives, and writes it
    /// after; a later one finds the marker and writes the record under
    /// that key only if it is missing (its first writer stopped in
    /// between). A read of the marker and then a write would let two
    /// holders of the same event (one paused past `ack_wait`, its
    /// redelivery at another instance) both file it.
    ///
    /// A marker left by a replay ([`keys::dead_letter_replayed`]) means
    /// the event left the dead letters for the outbox: a delivery of it
    /// again is not filed (`after_replay` false), the replay failing again
    /// is (`after_replay` true).
    pub fn file_once<L: AtomicKv>(
        &self,
        local: &L,
        key: &str,
        after_replay: bool,
    ) -> Result<Filed, StoreError> {
        let Some(seen) = self.seen_marker() else {
            self.store(local, key)?;
            return Ok(Filed::New(key.to_owned()));
        };
        // Each lost swap means another writer marked the event: the next
        // read finds its key. A third loss means the marker keeps changing.
        for _ in 0..3 {
            let (cas, current) = local.cas_read(&seen)?;
            let current = current.map(|v| String::from_utf8_lossy(&v).into_owned());
            match current.as_deref() {
                Some(marked) if keys::dead_letter_id(marked).is_some() => {
                    if local.get(marked)?.is_none() {
                        self.store(local, marked)?;
                    }
                    return Ok(Filed::Earlier(marked.to_owned()));
                }
                Some(marked) if !after_replay => {
                    if let Some(replayed) = keys::replayed_dead_letter(marked) {
                        return Ok(Filed::Replayed(replayed.to_owned()));
                    }
                }
                _ => {}
            }
            if local.cas_write(cas, key.as_bytes().to_vec())? {
                self.store(local, key)?;
                return Ok(Filed::New(key.to_owned()));
            }
        }
        Err(StoreError::Other(format!(
            "{seen} changed under three attempts to mark it; not filed"
        )))
    }
}

/// Where [`DeadLetter::file_once`] filed a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filed {
    /// Under the key it was given.
    New(String),
    /// The same stream event was filed already, under this key (the record
    /// is there: written now if its first writer had stopped before it).
    Earlier(String),
    /// The same stream event was filed under this key and replayed since:
    /// not filed again.
    Replayed(String),
}

/// The key, and when the record was filed before, that it was.
impl std::fmt::Display for Filed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filed::New(k) => f.write_str(k),
            Filed::Earlier(k) => write!(f, "{k} (filed already)"),
            Filed::Replayed(k) => write!(f, "{k} (filed already, and replayed since)"),
        }
    }
}

impl Filed {
    /// The dead letter's key.
    pub fn key(&self) -> &str {
        match self {
            Filed::New(k) | Filed::Earlier(k) | Filed::Replayed(k) => k,
        }
    }
}

/// One page of dead letters, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterPage {
    /// `(id, record)`; the id is the key without `dlq:`.
    pub items: Vec<(String, DeadLetter)>,
    /// Opaque cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// The most stored bytes one page of dead letters carries (a payload may
/// be as large as NATS allows, 1 MiB by default): a page ends before the
/// record that would pass it, and always holds at least one record.
pub const PAGE_BYTES: usize = 4 << 20;

/// Records read per `get-many` while a page fills.
const READ_CHUNK: usize = 20;

/// Lists dead letters after `cursor` (from a previous page), at most
/// `limit` and [`PAGE_BYTES`] at a time. A record that no longer parses is
/// listed with its problem as the reason rather than hidden.
pub fn list(
    local: &dyn KeyValue,
    cursor: Option<&str>,
    limit: usize,
) -> Result<DeadLetterPage, ReadError> {
    let after = cursor.map(cursor::decode).transpose()?;
    let unavailable = |e: StoreError| ReadError::Unavailable(e.to_string());
    let mut ids: Vec<String> = local
        .list_keys()
        .map_err(unavailable)?
        .into_iter()
        .filter_map(|k| keys::dead_letter_id(&k).map(str::to_owned))
        .filter(|id| after.as_ref().is_none_or(|a| id > a))
        .collect();
    ids.sort_unstable();
    let mut more = ids.len() > limit;
    ids.truncate(limit);
    let mut items = Vec::new();
    let mut bytes = 0usize;
    'page: for chunk in ids.chunks(READ_CHUNK) {
        let wanted: Vec<String> = chunk
            .iter()
            .map(|id| keys::dead_letter_with_id(id))
            .collect();
        let values = local.get_many(&wanted).map_err(unavailable)?;
        for (id, v) in chunk.iter().zip(values) {
            let Some(v) = v else { continue }; // deleted since the listing
            if !items.is_empty() && bytes + v.len() > PAGE_BYTES {
                more = true;
                break 'page;
            }
            bytes += v.len();
            let record = serde_json::from_slice(&v).unwrap_or_else(|e| {
                let reason = format!("dead-letter record {id} is unreadable: {e}");
                DeadLetter::new("", RawPayload::keep(b""), "", reason, Timestamp(0))
            });
            items.push((id.clone(), record));
        }
    }
    let next_cursor = match (more, items.last()) {
        (true, Some((id, _))) => Some(cursor::encode(id)),
        _ => None,
    };
    Ok(DeadLetterPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_of_large_dead_letters_stops_at_its_byte_budget_and_the_next_goes_on() {
        let local = tasks_kv::testing::MemoryKv::default();
        let big = vec![b'x'; 1 << 20];
        for i in 0..10 {
            let dl = DeadLetter::new(
                "tasks.created",
                RawPayload::keep(&big),
                "c",
                "too big".into(),
                Timestamp(i),
            );
            dl.store(&local, &keys::dead_letter_with_id(&format!("{i:03}-a")))
                .expect("stored");
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = list(&local, cursor.as_deref(), 200).expect("listed");
            let bytes: usize = page
                .items
                .iter()
                .map(|(_, d)| serde_json::to_vec(d).map_or(0, |v| v.len()))
                .sum();
            assert!(bytes <= PAGE_BYTES, "a page of {bytes} bytes");
            assert!(!page.items.is_empty());
            seen.extend(page.items.into_iter().map(|(id, _)| id));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let want: Vec<String> = (0..10).map(|i| format!("{i:03}-a")).collect();
        assert_eq!(seen, want, "every record once, in order");
    }

    #[test]
    fn payloads_round_trip_exactly() {
        for bytes in [&b"{\"id\":\"t\"}"[..], b"\x00\xff\xfe", b""] {
            assert_eq!(RawPayload::keep(bytes).bytes(), bytes);
        }
        assert!(RawPayload::keep(b"\xff").payload.is_none());
    }

    #[test]
    fn dead_letters_are_flat_json() -> Result<(), serde_json::Error> {
        let d = DeadLetter::new(
            "tasks.created",
            RawPayload::keep(b"{}"),
            "c",
            "id is required".into(),
            Timestamp(0),
        );
        let v: serde_json::Value = serde_json::to_value(&d)?;
        assert_eq!(v["payload"], "{}");
        assert_eq!(v["reason"], "id is required");
        assert_eq!(v["at"], "1970-01-01T00:00:00.000Z");
        assert!(v.get("attempts").is_none() && v.get("receivedAt").is_none());
        assert_eq!(serde_json::from_value::<DeadLetter>(v)?, d);
        Ok(())
    }
}
