//! The change feed: every create, update and delete that reached the
//! `tasks` store (writer and retrier alike), numbered, in a bounded ring in
//! the `feed` store. Live pages follow it (`GET /api/events`).
//!
//! Writing: a call collects its changes and counts in a [`Journal`];
//! [`append`] then takes a range of sequence numbers with one increment of
//! [`keys::FEED_HEAD`] and writes the slots and the counts (see
//! [`crate::metrics`]) in one `set-many`. A call with counts but no change
//! still takes one number; its slot holds no change.
//!
//! Changes of stream events take their numbers before the write that makes
//! them ([`Journal::reserve`]), and the task document (or tombstone) that
//! write stores keeps them ([`Reserved`], the record's `journal` field). The
//! feed is written after the tasks, in another store: a call that dies in
//! between (or whose feed write fails, which leaves its events
//! unacknowledged) has its events delivered again, finds them applied
//! already, and puts their kept changes in their slots then
//! ([`Journal::refill`]), counted as applied: each change reaches the feed
//! and the counters once.
//!
//! Reading: [`read_after`] reads the head, then the slots after a sequence
//! number. A slot not written yet (its writer is between the increment and
//! the `set-many`) stops the read there; [`Cursor`] steps over one that stays
//! missing (a writer that died) after [`GAP_MILLIS`]. A reader more than
//! [`keys::FEED_CAPACITY`] behind gets [`Read::Reset`]: what it missed is
//! overwritten.
//!
//! This crate holds the change feed with the counters that ride on it:
//! [`counts`] (what one call counts) and [`metrics`] (folding and rendering
//! the counters behind `/metrics`). The three use each other, so they stay
//! together.

pub mod counts;
pub mod metrics;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tasks_domain::event::EventKind;
use tasks_domain::keys::{self, FEED_CAPACITY};
use tasks_domain::{Status, StreamPos, Task, Timestamp};

use crate::counts::{Counts, Delta};
use tasks_kv::{AtomicKv, KeyValue, StoreError, decode_counter, encode};

/// How long a reader waits on a slot that is not written before stepping
/// over it (its writer died between taking the number and writing it).
pub const GAP_MILLIS: i64 = 5_000;

/// A call whose first reserved number is older than this at its commit
/// writes its counts under a number taken then (see [`Journal::commit`]).
const LATE_MILLIS: u64 = (GAP_MILLIS / 2) as u64;

/// What happened to a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Created (or re-created: a create of an existing id).
    Created,
    /// Updated.
    Updated,
    /// Deleted.
    Deleted,
}

impl ChangeKind {
    /// `created`, `updated`, `deleted` (the SSE `event:` name).
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }
}

impl From<EventKind> for ChangeKind {
    fn from(k: EventKind) -> Self {
        match k {
            EventKind::Created => ChangeKind::Created,
            EventKind::Updated => ChangeKind::Updated,
            EventKind::Deleted => ChangeKind::Deleted,
        }
    }
}

/// One change to one task, as the feed keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// What happened.
    pub kind: ChangeKind,
    /// The task.
    pub id: String,
    /// Its version after the change; none for a delete.
    #[serde(default)]
    pub version: Option<u64>,
    /// Its status after the change; none for a delete.
    #[serde(default)]
    pub status: Option<Status>,
    /// Its status before the change, when it existed (a page filtered by
    /// status learns that a task left it).
    #[serde(default)]
    pub previous_status: Option<Status>,
    /// When the change was applied.
    pub at: Timestamp,
    /// The correlation id of the event.
    pub correlation_id: String,
}

/// A change with its sequence number: what `GET /api/events` sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Its number in the feed: grows by one per change, across processes.
    pub seq: u64,
    /// The change.
    #[serde(flatten)]
    pub change: Change,
}

/// What a slot holds.
#[derive(Serialize, Deserialize)]
struct Slot {
    seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    change: Option<Change>,
}

/// A change whose feed number was taken before the write that made it,
/// with the stream position of its event: the record that write stores
/// keeps it (`journal`), until the next call that writes the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reserved {
    /// Its number in the feed.
    pub slot: u64,
    /// The stream sequence of its event.
    pub stream_seq: u64,
    /// That stream's epoch ([`StreamPos`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_epoch: Option<u64>,
    /// The change.
    pub change: Change,
}

impl Reserved {
    /// Where its event stands in its stream.
    pub fn pos(&self) -> StreamPos {
        StreamPos {
            epoch: self.stream_epoch,
            seq: self.stream_seq,
        }
    }
}

/// The reserved changes a stored record keeps (its `journal` field); none
/// for a record without one or one that does not parse.
pub fn kept(record: Option<&[u8]>) -> Vec<Reserved> {
    #[derive(Deserialize)]
    struct Kept {
        #[serde(default)]
        journal: Vec<Reserved>,
    }
    record
        .and_then(|b| serde_json::from_slice::<Kept>(b).ok())
        .map(|k| k.journal)
        .unwrap_or_default()
}

/// A task document as stored: the task and the reserved changes of the call
/// writing it (none: exactly [`Task::to_json`]).
pub fn stored_doc(task: &Task, journal: &[Reserved]) -> Vec<u8> {
    if journal.is_empty() {
        return task.to_json();
    }
    // The task's object with one more field, spliced in before its closing
    // brace, in one buffer sized for both: a flattened struct goes through
    // serde's map path, which cost a tenth of a batch's time in the writer.
    let mut doc = Vec::with_capacity(256 + 256 * journal.len());
    let spliced = serde_json::to_writer(&mut doc, task).is_ok() && doc.pop() == Some(b'}') && {
        doc.extend_from_slice(b",\"journal\":");
        serde_json::to_writer(&mut doc, journal).is_ok()
    };
    if !spliced {
        // Serializing plain strings and numbers cannot fail.
        return task.to_json();
    }
    doc.push(b'}');
    doc
}

/// Which of `kept` did not reach their slots (the call that wrote them
/// ended before the feed): the slot holds another change, none, or
/// nothing. One read. A slot a later lap of the ring has taken is not lost:
/// no reader can see it any more.
pub fn lost(feed: &dyn FeedStore, kept: &[Reserved]) -> Result<Vec<bool>, StoreError> {
    let mut wanted = vec![keys::FEED_HEAD.to_owned()];
    wanted.extend(kept.iter().map(|r| keys::feed_slot(r.slot)));
    let mut values = feed.get_many(&wanted)?.into_iter();
    let head = values
        .next()
        .flatten()
        .and_then(|v| decode_counter(&v))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    Ok(kept
        .iter()
        .zip(values)
        .map(|(r, value)| {
            if head >= r.slot + FEED_CAPACITY {
                return false;
            }
            match value.and_then(|v| serde_json::from_slice::<Slot>(&v).ok()) {
                Some(s) if s.seq == r.slot => s.change.as_ref() != Some(&r.change),
                Some(s) => s.seq < r.slot,
                None => true,
            }
        })
        .collect())
}

/// The part of the `feed` store [`Journal::reserve`] and the check before a
/// [`Journal::refill`] use (every [`AtomicKv`] is one).
pub trait FeedStore: KeyValue {
    /// Takes `n` numbers: one increment of [`keys::FEED_HEAD`]; returns the
    /// last.
    fn take(&self, n: u64) -> Result<u64, StoreError>;
}

impl<F: AtomicKv> FeedStore for F {
    fn take(&self, n: u64) -> Result<u64, StoreError> {
        let last = self.increment(keys::FEED_HEAD, n as i64)?;
        u64::try_from(last)
            .map_err(|_| StoreError::Other(format!("{} is negative: {last}", keys::FEED_HEAD)))
    }
}

/// One recorded change: in a slot of its own (reserved or refilled) or
/// numbered at commit.
struct Recorded {
    slot: Option<u64>,
    pos: Option<StreamPos>,
    change: Change,
}

/// What one call changed and counted, committed by [`Journal::commit`].
pub struct Journal {
    recorded: RefCell<Vec<Recorded>>,
    /// Every range this call took ([`Journal::reserve`]): first, length.
    reserved: RefCell<Vec<(u64, u64)>>,
    /// When the first of them was taken.
    reserved_at: Cell<Option<Instant>>,
    counts: RefCell<Counts>,
    counting: bool,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        Journal {
            recorded: RefCell::default(),
            reserved: RefCell::default(),
            reserved_at: Cell::new(None),
            counts: RefCell::default(),
            counting: true,
        }
    }

    /// A journal that keeps changes and counts nothing: what counting costs
    /// is measured against it (bench/counting.sh).
    pub fn uncounted() -> Self {
        Journal {
            counting: false,
            ..Self::new()
        }
    }

    /// Takes `n` feed numbers for changes about to be written (one store
    /// call); returns the first. Each is either recorded with
    /// [`Journal::changed_in`] once its write succeeds or committed as a
    /// slot without a change.
    pub fn reserve(&self, feed: &dyn FeedStore, n: u64) -> Result<u64, StoreError> {
        let last = feed.take(n.max(1))?;
        let first = last + 1 - n.max(1);
        self.reserved.borrow_mut().push((first, n.max(1)));
        if self.reserved_at.get().is_none() {
            self.reserved_at.set(Some(Instant::now()));
        }
        Ok(first)
    }

    /// Records a change that reached the `tasks` store (numbered at commit).
    pub fn changed(&self, change: Change) {
        self.recorded.borrow_mut().push(Recorded {
            slot: None,
            pos: None,
            change,
        });
    }

    /// Records a change that reached the `tasks` store in the slot reserved
    /// for it.
    pub fn changed_in(&self, reserved: Reserved) {
        self.recorded.borrow_mut().push(Recorded {
            slot: Some(reserved.slot),
            pos: Some(reserved.pos()),
            change: reserved.change,
        });
    }

    /// Records the change of an earlier call that wrote it and died before
    /// the feed (its slot holds no such change): written to its slot with
    /// this call's.
    pub fn refill(&self, reserved: Reserved) {
        self.changed_in(reserved);
    }

    /// Whether this call recorded a change in `slot` already (its own, or
    /// refilled): such a change is not lost, only not committed yet.
    pub fn holds(&self, slot: u64) -> bool {
        self.recorded.borrow().iter().any(|r| r.slot == Some(slot))
    }

    /// The reserved changes recorded so far for task `id`: what a record of
    /// it written now keeps ([`stored_doc`]).
    pub fn kept_for(&self, id: &str) -> Vec<Reserved> {
        self.recorded
            .borrow()
            .iter()
            .filter(|r| r.change.id == id)
            .filter_map(|r| {
                let (slot, pos) = (r.slot?, r.pos?);
                Some(Reserved {
                    slot,
                    stream_seq: pos.seq,
                    stream_epoch: pos.epoch,
                    change: r.change.clone(),
                })
            })
            .collect()
    }

    /// Adds to the counts (see [`crate::metrics`] for the series).
    pub fn count(&self, f: impl FnOnce(&mut Counts)) {
        if self.counting {
            f(&mut self.counts.borrow_mut());
        }
    }

    /// The changes recorded so far, in the order recorded.
    pub fn changes(&self) -> Vec<Change> {
        self.recorded
            .borrow()
            .iter()
            .map(|r| r.change.clone())
            .collect()
    }

    /// Appends what was recorded to the feed and empties the journal: the
    /// reserved ranges (a slot whose write did not happen holds no change)
    /// and refilled slots, then the other changes and the counts with one
    /// increment (see [`append`]); all in one `set-many`. Nothing to write
    /// writes nothing.
    pub fn commit(&self, feed: &dyn FeedStore) -> Result<Option<u64>, StoreError> {
        let recorded = std::mem::take(&mut *self.recorded.borrow_mut());
        let reserved = std::mem::take(&mut *self.reserved.borrow_mut());
        let counts = std::mem::take(&mut *self.counts.borrow_mut());
        let mut slotted: Vec<(u64, Change)> = Vec::new();
        let mut loose: Vec<Change> = Vec::new();
        for r in recorded {
            match r.slot {
                Some(slot) => slotted.push((slot, r.change)),
                None => loose.push(r.change),
            }
        }
        if reserved.is_empty() && slotted.is_empty() {
            return append(feed, loose, counts);
        }
        let ours = |seq: u64| reserved.iter().any(|&(f, n)| (f..f + n).contains(&seq));
        // Refilled slots (an earlier call's) go in as they are.
        let mut pairs = Vec::new();
        for (seq, change) in slotted.iter().filter(|(seq, _)| !ours(*seq)) {
            pairs.push(slot_pair(*seq, Some(change.clone()))?);
        }
        // This call's ranges: the reserved ones, then one for the others.
        let mut ranges: Vec<(u64, Vec<Option<Change>>)> = reserved
            .iter()
            .map(|&(first, n)| {
                let changes = (first..first + n)
                    .map(|seq| {
                        slotted
                            .iter()
                            .find(|(s, _)| *s == seq)
                            .map(|(_, c)| c.clone())
                    })
                    .collect();
                (first, changes)
            })
            .collect();
        // The counts go with the first range, unless its numbers were taken
        // so long ago that the fold may have stepped over them (it waits
        // GAP_MILLIS on a range whose delta has not come): then with a
        // range taken now.
        let late = self
            .reserved_at
            .take()
            .is_some_and(|t| t.elapsed() >= Duration::from_millis(LATE_MILLIS));
        if !loose.is_empty() || ((ranges.is_empty() || late) && !counts.is_empty()) {
            let span = loose.len().max(1) as u64;
            let first = feed.take(span)? + 1 - span;
            let mut loose = loose.into_iter();
            ranges.push((first, (0..span).map(|_| loose.next()).collect()));
        }
        let counted = if late {
            ranges.len().saturating_sub(1)
        } else {
            0
        };
        let mut counts = Some(counts);
        let mut last = None;
        for (i, (first, changes)) in ranges.into_iter().enumerate() {
            let span = changes.len() as u64;
            for (seq, change) in (first..).zip(changes) {
                pairs.push(slot_pair(seq, change)?);
            }
            // Each range has a delta (the counts go with the first), so the
            // fold never waits on one (see crate::metrics).
            let key = keys::metrics_delta(first);
            let counts = match i == counted {
                true => counts.take().unwrap_or_default(),
                false => Counts::default(),
            };
            pairs.push((key.clone(), encode(&key, &Delta { span, counts })?));
            last = last.max(Some(first + span - 1));
        }
        feed.set_many(pairs)?;
        Ok(last)
    }
}

/// The slot pair of change number `seq`.
fn slot_pair(seq: u64, change: Option<Change>) -> Result<(String, Vec<u8>), StoreError> {
    let key = keys::feed_slot(seq);
    let value = encode(&key, &Slot { seq, change })?;
    Ok((key, value))
}

/// Writes `changes` to the feed with `counts`: one increment, one
/// `set-many`. Returns the last sequence number taken (`None`: nothing to
/// write).
pub fn append(
    feed: &dyn FeedStore,
    changes: Vec<Change>,
    counts: Counts,
) -> Result<Option<u64>, StoreError> {
    if changes.is_empty() && counts.is_empty() {
        return Ok(None);
    }
    let span = changes.len().max(1) as u64;
    let last = feed.take(span)?;
    let first = last + 1 - span;
    let mut pairs = Vec::with_capacity(span as usize + 1);
    let mut changes = changes.into_iter();
    for seq in first..=last {
        pairs.push(slot_pair(seq, changes.next())?);
    }
    let delta_key = keys::metrics_delta(first);
    pairs.push((
        delta_key.clone(),
        encode(&delta_key, &Delta { span, counts })?,
    ));
    feed.set_many(pairs)?;
    Ok(Some(last))
}

/// The latest sequence number handed out (0: none yet).
pub fn head(feed: &dyn KeyValue) -> Result<u64, StoreError> {
    Ok(counter_value(feed.get(keys::FEED_HEAD)?))
}

/// A stored counter's value, as read (0 when absent, unreadable or negative).
pub(crate) fn counter_value(value: Option<Vec<u8>>) -> u64 {
    value
        .and_then(|v| decode_counter(&v))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

/// What [`read_after`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// The changes after the given number, in order, up to `next`.
    Entries {
        /// The changes (slots without one are passed over).
        entries: Vec<Entry>,
        /// The last sequence number read; the next read starts after it.
        next: u64,
        /// The head when read.
        head: u64,
    },
    /// What follows the given number is overwritten: start again from `head`.
    Reset {
        /// The head when read.
        head: u64,
    },
}

/// The changes after `after`, at most `max` slots: two store calls (the
/// head, the slots), one when nothing is new.
pub fn read_after(feed: &dyn KeyValue, after: u64, max: usize) -> Result<Read, StoreError> {
    let head = head(feed)?;
    if head <= after {
        return Ok(Read::Entries {
            entries: Vec::new(),
            next: after,
            head,
        });
    }
    if head - after > FEED_CAPACITY {
        return Ok(Read::Reset { head });
    }
    let upto = head.min(after + max.max(1) as u64);
    let wanted: Vec<String> = (after + 1..=upto).map(keys::feed_slot).collect();
    let mut entries = Vec::new();
    let mut next = after;
    for (seq, value) in (after + 1..=upto).zip(feed.get_many(&wanted)?) {
        let slot = value.and_then(|v| serde_json::from_slice::<Slot>(&v).ok());
        match slot {
            Some(s) if s.seq == seq => {
                if let Some(change) = s.change {
                    entries.push(Entry { seq, change });
                }
                next = seq;
            }
            // Overwritten by a later lap while we read.
            Some(s) if s.seq > seq => return Ok(Read::Reset { head }),
            // Not written yet (or an earlier lap's): stop here.
            _ => break,
        }
    }
    Ok(Read::Entries {
        entries,
        next,
        head,
    })
}

/// What a reader sends next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// These changes (possibly none).
    Send(Vec<Entry>),
    /// The reader missed changes that are gone: it must start again.
    Reset,
}

/// One reader's place in the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    /// The last sequence number passed to the reader.
    pub after: u64,
    /// Since when a read has stopped at `after + 1` though the head is past it.
    stuck_since: Option<i64>,
}

impl Cursor {
    /// A reader that has seen everything up to `after`.
    pub fn at(after: u64) -> Self {
        Cursor {
            after,
            stuck_since: None,
        }
    }

    /// Takes a read made from this cursor at `now_ms`.
    pub fn advance(&mut self, read: Read, now_ms: i64) -> Step {
        match read {
            Read::Reset { head } => {
                *self = Cursor::at(head);
                Step::Reset
            }
            Read::Entries {
                entries,
                next,
                head,
            } => {
                let entries: Vec<Entry> =
                    entries.into_iter().filter(|e| e.seq > self.after).collect();
                if next > self.after || head <= self.after {
                    self.after = self.after.max(next);
                    self.stuck_since = None;
                } else {
                    let since = *self.stuck_since.get_or_insert(now_ms);
                    if now_ms - since >= GAP_MILLIS {
                        // Its writer took the number and never wrote the slot.
                        self.after += 1;
                        self.stuck_since = None;
                    }
                }
                Step::Send(entries)
            }
        }
    }
}

/// The recent feed as one process sees it, shared by every reader in the
/// process: it reads the store at most once per `interval_ms` however many
/// readers ask, and keeps the last [`Follower::KEEP`] changes for them.
#[derive(Clone, Debug)]
pub struct Follower {
    cursor: Cursor,
    /// Kept changes, in order; they cover (floor, cursor.after].
    kept: VecDeque<Entry>,
    floor: u64,
    read_at: Option<i64>,
    interval_ms: i64,
}

/// What a reader gets from [`Follower::since`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Since {
    /// The changes after the reader's number, and the number to ask from next.
    Entries(Vec<Entry>, u64),
    /// The reader is behind what the follower keeps: read the store itself
    /// (up to the follower's position, given).
    Behind(u64),
}

impl Follower {
    /// How many changes a follower keeps.
    pub const KEEP: usize = 1_024;

    /// A follower that starts at the feed's current head.
    pub fn start(feed: &dyn KeyValue, now_ms: i64, interval_ms: i64) -> Result<Self, StoreError> {
        let head = head(feed)?;
        Ok(Follower {
            cursor: Cursor::at(head),
            kept: VecDeque::new(),
            floor: head,
            read_at: Some(now_ms),
            interval_ms,
        })
    }

    /// The last sequence number the follower has read up to.
    pub fn position(&self) -> u64 {
        self.cursor.after
    }

    /// Reads the store if the last read is older than the interval; returns
    /// whether it read.
    pub fn refresh(&mut self, feed: &dyn KeyValue, now_ms: i64) -> Result<bool, StoreError> {
        if self.read_at.is_some_and(|t| now_ms - t < self.interval_ms) {
            return Ok(false);
        }
        self.read_at = Some(now_ms);
        let read = read_after(feed, self.cursor.after, Self::KEEP)?;
        match self.cursor.advance(read, now_ms) {
            Step::Reset => {
                self.kept.clear();
                self.floor = self.cursor.after;
            }
            Step::Send(entries) => {
                self.kept.extend(entries);
                while self.kept.len() > Self::KEEP {
                    if let Some(e) = self.kept.pop_front() {
                        self.floor = e.seq;
                    }
                }
            }
        }
        Ok(true)
    }

    /// The kept changes after `after`.
    pub fn since(&self, after: u64) -> Since {
        if after < self.floor {
            return Since::Behind(self.cursor.after);
        }
        let entries = self
            .kept
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect();
        Since::Entries(entries, self.cursor.after.max(after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_document_is_the_task_with_its_journal_and_reads_back_as_both() {
        let task = Task::from_json(
            br#"{"id":"t-1","title":"T","status":"pending","createdAt":"2026-12-06T10:00:00.000Z","updatedAt":"2026-12-06T10:00:01.000Z","version":2}"#,
        )
        .expect("a task");
        let journal = vec![Reserved {
            slot: 7,
            stream_seq: 41,
            stream_epoch: Some(3),
            change: Change {
                kind: ChangeKind::Updated,
                id: "t-1".into(),
                version: Some(2),
                status: Some(Status::Pending),
                previous_status: Some(Status::Pending),
                at: Timestamp(1_796_551_201_000),
                correlation_id: "c-1".into(),
            },
        }];
        let doc = stored_doc(&task, &journal);
        let mut want = serde_json::to_value(&task).expect("json");
        want["journal"] = serde_json::to_value(&journal).expect("json");
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&doc).ok(),
            Some(want)
        );
        assert_eq!(Task::from_json(&doc).ok(), Some(task.clone()));
        assert_eq!(kept(Some(&doc)), journal);
        assert_eq!(stored_doc(&task, &[]), task.to_json());
    }
}
