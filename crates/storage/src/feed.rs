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
//! Reading: [`read_after`] reads the head, then the slots after a sequence
//! number. A slot not written yet (its writer is between the increment and
//! the `set-many`) stops the read there; [`Cursor`] steps over one that stays
//! missing (a writer that died) after [`GAP_MILLIS`]. A reader more than
//! [`keys::FEED_CAPACITY`] behind gets [`Read::Reset`]: what it missed is
//! overwritten.

use std::cell::RefCell;
use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use tasks_domain::event::EventKind;
use tasks_domain::keys::{self, FEED_CAPACITY};
use tasks_domain::{Status, Timestamp};

use crate::counts::{Counts, Delta};
use crate::kv::{AtomicKv, KeyValue, StoreError, decode_counter, encode};

/// How long a reader waits on a slot that is not written before stepping
/// over it (its writer died between taking the number and writing it).
pub const GAP_MILLIS: i64 = 5_000;

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

/// What one call changed and counted, committed by [`Journal::commit`].
pub struct Journal {
    changes: RefCell<Vec<Change>>,
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
            changes: RefCell::default(),
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

    /// Records a change that reached the `tasks` store.
    pub fn changed(&self, change: Change) {
        self.changes.borrow_mut().push(change);
    }

    /// Adds to the counts (see [`crate::metrics`] for the series).
    pub fn count(&self, f: impl FnOnce(&mut Counts)) {
        if self.counting {
            f(&mut self.counts.borrow_mut());
        }
    }

    /// The changes recorded so far.
    pub fn changes(&self) -> Vec<Change> {
        self.changes.borrow().clone()
    }

    /// Appends what was recorded to the feed (see [`append`]) and empties
    /// the journal; nothing to write writes nothing.
    pub fn commit<F: AtomicKv>(&self, feed: &F) -> Result<Option<u64>, StoreError> {
        let changes = std::mem::take(&mut *self.changes.borrow_mut());
        let counts = std::mem::take(&mut *self.counts.borrow_mut());
        append(feed, changes, counts)
    }
}

/// Writes `changes` to the feed with `counts`: one increment, one
/// `set-many`. Returns the last sequence number taken (`None`: nothing to
/// write).
pub fn append<F: AtomicKv>(
    feed: &F,
    changes: Vec<Change>,
    counts: Counts,
) -> Result<Option<u64>, StoreError> {
    if changes.is_empty() && counts.is_empty() {
        return Ok(None);
    }
    let span = changes.len().max(1) as u64;
    let last = feed.increment(keys::FEED_HEAD, span as i64)?;
    let last = u64::try_from(last)
        .map_err(|_| StoreError::Other(format!("{} is negative: {last}", keys::FEED_HEAD)))?;
    let first = last + 1 - span;
    let mut pairs = Vec::with_capacity(span as usize + 1);
    let mut changes = changes.into_iter();
    for seq in first..=last {
        let key = keys::feed_slot(seq);
        let slot = Slot {
            seq,
            change: changes.next(),
        };
        pairs.push((key.clone(), encode(&key, &slot)?));
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
    Ok(feed
        .get(keys::FEED_HEAD)?
        .and_then(|v| decode_counter(&v))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0))
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
    /// The reader is behind what the follower keeps: read the store itself.
    Behind,
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
            return Since::Behind;
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
