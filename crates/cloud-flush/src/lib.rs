//! Flushing the write-behind records of [`tasks_cloud::CloudKv`] to
//! Cloudflare: one run at a time under a lease, every pending record in one
//! bulk call with later writes of a key winning, backoff while Cloudflare
//! fails, dead letters when it keeps failing.
//!
//! Records are deleted only after Cloudflare accepted them, and only the
//! records this run read: a write made during the flush has a higher
//! sequence number and waits for the next run. A run that dies half-way
//! sends its records again next time (puts and deletes repeat harmlessly).
//!
//! A flush that runs in the instant between a write's working-copy change
//! and its flush record (see [`tasks_cloud::CloudKv`]) can see a later
//! write of the same key first; the earlier record then follows in the next
//! run and Cloudflare holds the older value until the key is written again.
//! Two writes of one task within microseconds of each other and of a flush
//! are needed for that.

use std::collections::BTreeMap;

use tasks_domain::{Timestamp, keys};

use tasks_cloud as cloud;
use tasks_cloud::{Remote, Tag};
use tasks_kv::backoff::{Backoff, MAX_ATTEMPTS, Next};
use tasks_kv::lease::{self, Claim};
use tasks_kv::{AtomicKv, StoreError, encode};
use tasks_outbox::dead_letters::{DeadLetter, RawPayload};

/// How long a run holds the flush lease. A flush takes a few seconds; a
/// run that died frees the lease after this.
pub const LEASE_MILLIS: i64 = 30_000;

/// Flush records read per `get_many`.
const READ_BATCH: usize = 256;

/// What one flush run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Flush records read (and, on success, removed).
    pub records: usize,
    /// Keys put at Cloudflare, after coalescing.
    pub puts: usize,
    /// Keys deleted at Cloudflare, after coalescing.
    pub deletes: usize,
    /// Remote write calls made: 0 or 1.
    pub calls: usize,
    /// Whether the remote write failed.
    pub calls_failed: bool,
    /// Records dead-lettered (after the last failed attempt, or unreadable).
    pub dead: usize,
    /// Working-copy entries marked as flushed (`W`/`D` turned `V`/`A`).
    pub confirmed: usize,
    /// Another run holds the lease: nothing was done.
    pub held: bool,
    /// Backing off after failures until this time: nothing was done.
    pub waiting_until: Option<Timestamp>,
    /// The keys Cloudflare now holds (put or deleted) after a successful
    /// flush; empty otherwise.
    pub keys: Vec<String>,
}

/// One flush record as read.
struct Record {
    /// Its key in the local store.
    key: String,
    seq: i64,
    /// The `tasks` key it writes.
    target: String,
    /// The value to put, `None` to delete.
    value: Option<Vec<u8>>,
}

/// Sends the flush records in the `local` store to Cloudflare.
pub struct Flusher<'a, C: AtomicKv, L: AtomicKv, R: Remote> {
    /// The working copy, whose entries are marked flushed afterwards.
    pub cache: &'a C,
    /// The `default` store: flush records, their lease and backoff state,
    /// dead letters.
    pub local: &'a L,
    /// Cloudflare.
    pub remote: &'a R,
    /// The current time.
    pub clock: &'a dyn Fn() -> Timestamp,
    /// A fresh unique string (lease tokens, dead-letter keys).
    pub unique: &'a dyn Fn() -> String,
    /// Where log lines go.
    pub log: &'a dyn Fn(&str),
}

impl<C: AtomicKv, L: AtomicKv, R: Remote> Flusher<'_, C, L, R> {
    /// One run: takes the lease, sends every pending record in one remote
    /// call unless backing off, releases the lease. `Err` only when the
    /// local store or the working copy failed.
    pub fn flush(&self) -> Result<FlushReport, StoreError> {
        let mut report = FlushReport::default();
        let Some(token) = self.claim()? else {
            report.held = true;
            return Ok(report);
        };
        let result = self.flush_held(&mut report);
        self.release(&token);
        result.map(|()| report)
    }

    fn flush_held(&self, report: &mut FlushReport) -> Result<(), StoreError> {
        let now = (self.clock)();
        let state = self
            .local
            .get(keys::FLUSH_STATE)?
            .and_then(|v| serde_json::from_slice::<Backoff>(&v).ok());
        if let Some(s) = state.as_ref().filter(|s| s.next_attempt_at > now) {
            report.waiting_until = Some(s.next_attempt_at);
            return Ok(());
        }
        let records = self.read_records(now, report)?;
        if records.is_empty() {
            return Ok(());
        }
        report.records = records.len();
        // Records come in sequence order: the last one of a key wins.
        let latest: BTreeMap<&str, Option<&[u8]>> = records
            .iter()
            .map(|r| (r.target.as_str(), r.value.as_deref()))
            .collect();
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        for (&key, value) in &latest {
            match value {
                Some(v) => puts.push((key.to_owned(), v.to_vec())),
                None => deletes.push(key.to_owned()),
            }
        }
        report.puts = puts.len();
        report.deletes = deletes.len();
        report.calls = 1;
        match self.remote.write_many(puts, deletes) {
            Ok(()) => {
                report.keys = latest.keys().map(|k| (*k).to_owned()).collect();
                self.flushed(&records, &latest, report)
            }
            Err(e) => {
                report.calls_failed = true;
                self.failed(&records, state, &e, now, report)
            }
        }
    }

    /// Takes the lease when it is free or lapsed; `None` when another run
    /// holds it.
    fn claim(&self) -> Result<Option<String>, StoreError> {
        let now = (self.clock)();
        let token = (self.unique)();
        let lease = lease::claim(self.local, keys::FLUSH_LOCK, |held: Option<Claim>| {
            (!held.is_some_and(|c| c.live_at(now))).then(|| Claim::new(token, now, LEASE_MILLIS))
        })?;
        Ok(lease.map(|c| c.token))
    }

    /// Gives the lease back by writing it lapsed, if it is still ours. A
    /// failure only delays the next run until the lease lapses.
    fn release(&self, token: &str) {
        let now = (self.clock)();
        let released = lease::release(self.local, keys::FLUSH_LOCK, |c: Claim| {
            (c.token == token).then_some(Claim { until: now, ..c })
        });
        if let Err(e) = released {
            (self.log)(&format!(
                "[-] KV PUT {} — FAILED: {e}; the lease lapses within {} s",
                keys::FLUSH_LOCK,
                LEASE_MILLIS / 1000
            ));
        }
    }

    /// Every flush record, in sequence order. One that no longer parses is
    /// dead-lettered with its bytes, so it neither blocks nor vanishes.
    fn read_records(
        &self,
        now: Timestamp,
        report: &mut FlushReport,
    ) -> Result<Vec<Record>, StoreError> {
        let mut listed: Vec<(i64, String, String)> = self
            .local
            .list_keys()?
            .into_iter()
            .filter_map(|k| {
                let (seq, target) = keys::flush_key(&k)?;
                let target = target.to_owned();
                Some((seq, target, k))
            })
            .collect();
        listed.sort_unstable_by_key(|(seq, _, _)| *seq);
        let mut records = Vec::with_capacity(listed.len());
        let mut unreadable = Vec::new();
        for chunk in listed.chunks(READ_BATCH) {
            let wanted: Vec<String> = chunk.iter().map(|(_, _, k)| k.clone()).collect();
            for ((seq, target, key), value) in chunk.iter().zip(self.local.get_many(&wanted)?) {
                // Absent: removed since the listing.
                let Some(value) = value else { continue };
                match cloud::parse_flush_record(&value) {
                    Ok(v) => records.push(Record {
                        key: key.clone(),
                        seq: *seq,
                        target: target.clone(),
                        value: v.map(<[u8]>::to_vec),
                    }),
                    Err(e) => unreadable.push((key.clone(), *seq, target.clone(), value, e)),
                }
            }
        }
        if !unreadable.is_empty() {
            let unique = (self.unique)();
            let mut dead = Vec::new();
            let mut gone = Vec::new();
            for (key, seq, target, value, e) in unreadable {
                let reason = format!("flush record {key} is unreadable: {e}");
                (self.log)(&format!("[-] DEAD {reason}"));
                let record = dead_letter(seq, &target, &value, reason, now);
                dead.push(keyed(seq, &unique, &record)?);
                gone.push(key);
            }
            report.dead += dead.len();
            self.local.set_many(dead)?;
            self.local.delete_many(gone)?;
        }
        Ok(records)
    }

    /// Cloudflare took the records: they go, the backoff state goes, and the
    /// working-copy entries that still hold what was sent become fetched
    /// entries, so reads may refresh them again after the TTL.
    fn flushed(
        &self,
        records: &[Record],
        latest: &BTreeMap<&str, Option<&[u8]>>,
        report: &mut FlushReport,
    ) -> Result<(), StoreError> {
        let mut gone: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        gone.push(keys::FLUSH_STATE.to_owned());
        self.local.delete_many(gone)?;
        (self.log)(&format!(
            "[-] FLUSH {} records → {} puts, {} deletes (1 call)",
            report.records, report.puts, report.deletes
        ));
        let now = (self.clock)().millis();
        for (&key, &value) in latest {
            match self.confirm(key, value, now) {
                Ok(true) => report.confirmed += 1,
                Ok(false) => {}
                // Cloudflare has the value and the working copy shows it as
                // `W`/`D`: right, only never refreshed until the next write.
                Err(e) => {
                    (self.log)(&format!(
                        "[-] FLUSH could not mark {key} as flushed in the working copy: {e}"
                    ));
                    break;
                }
            }
        }
        Ok(())
    }

    /// Turns `key`'s `W`/`D` entry into `V`/`A` if it still holds `value`
    /// (else a newer write made it, and its record is still to flush).
    fn confirm(&self, key: &str, value: Option<&[u8]>, now: i64) -> Result<bool, StoreError> {
        let (cas, bytes) = self.cache.cas_read(key)?;
        let Some(e) = bytes.as_deref().and_then(cloud::decode) else {
            return Ok(false);
        };
        let flushed = match (e.tag, value) {
            (Tag::Written, Some(v)) if e.payload == v => cloud::encode(Tag::Fetched, now, v),
            (Tag::Deleted, None) => cloud::encode(Tag::Absent, now, b""),
            _ => return Ok(false),
        };
        self.cache.cas_write(cas, flushed)
    }

    /// Cloudflare refused or did not answer: back off, or after the last
    /// attempt dead-letter the records read. Their working-copy entries
    /// stay `W`/`D`, so this instance keeps showing the writes Cloudflare
    /// never got; the dead letters say which.
    fn failed(
        &self,
        records: &[Record],
        state: Option<Backoff>,
        error: &StoreError,
        now: Timestamp,
        report: &mut FlushReport,
    ) -> Result<(), StoreError> {
        // The same schedule as a deferred event: the first try's failure,
        // then retries after 1 s, 3 s, 10 s, 20 s, 30 s; the fifth failed
        // retry dead-letters.
        let first = state.is_none();
        let mut state = state.unwrap_or_default();
        let next = if first {
            Next::RetryIn(state.first_failed(now, error.to_string()))
        } else {
            state.retry_failed(now, error.to_string())
        };
        if let Next::RetryIn(delay) = next {
            let value = encode(keys::FLUSH_STATE, &state)?;
            self.local
                .set_many(vec![(keys::FLUSH_STATE.to_owned(), value)])?;
            let which = if first {
                "failed".to_owned()
            } else {
                format!("attempt={}/{MAX_ATTEMPTS}", state.retries)
            };
            (self.log)(&format!(
                "[-] FLUSH {which} — {error}; next attempt in {} s",
                delay / 1000
            ));
            return Ok(());
        }
        let attempt = state.retries;
        let unique = (self.unique)();
        let reason = format!("gave up flushing to Cloudflare after {attempt} attempts: {error}");
        let mut dead = Vec::with_capacity(records.len());
        for r in records {
            let op = if r.value.is_some() { "put" } else { "delete" };
            let payload = r.value.as_deref().unwrap_or_default();
            let record = DeadLetter {
                errors: state.errors.clone(),
                attempts: attempt,
                ..dead_letter(
                    r.seq,
                    &r.target,
                    payload,
                    format!("{reason} ({op} of {})", r.target),
                    now,
                )
            };
            dead.push(keyed(r.seq, &unique, &record)?);
        }
        self.local.set_many(dead)?;
        let mut gone: Vec<String> = records.iter().map(|r| r.key.clone()).collect();
        gone.push(keys::FLUSH_STATE.to_owned());
        self.local.delete_many(gone)?;
        report.dead += records.len();
        (self.log)(&format!(
            "[-] DEAD flush of {} records after {attempt} attempts: {error}",
            records.len()
        ));
        Ok(())
    }
}

/// A dead letter for the flush record numbered `seq` that writes `target`
/// (no errors or attempts yet).
fn dead_letter(
    seq: i64,
    target: &str,
    payload: &[u8],
    reason: String,
    now: Timestamp,
) -> DeadLetter {
    DeadLetter {
        task_id: keys::task_id(target).map(str::to_owned),
        ..DeadLetter::new(
            "flush",
            RawPayload::keep(payload),
            &format!("flush-{seq}"),
            reason,
            now,
        )
    }
}

/// The dead letter's key and value; the sequence number in the key keeps
/// the records of one run in order.
fn keyed(seq: i64, unique: &str, record: &DeadLetter) -> Result<(String, Vec<u8>), StoreError> {
    let key = keys::flush_dead_letter(record.at.millis(), seq, unique);
    let value = encode(&key, record)?;
    Ok((key, value))
}
