//! The counters behind `/metrics`, kept in the `feed` store.
//!
//! A call adds to [`Counts`] in memory and writes them as one delta
//! (`metrics:delta:<seq>`) in the same `set-many` as its change feed slots
//! ([`crate::append`]): counting costs the writer no store call of its
//! own. The HTTP components' request counts carry no change: they go to a
//! sequence of their own ([`append_counts`], [`keys::COUNTS_HEAD`]), so
//! that traffic never spends change feed numbers (which would shorten what
//! the feed keeps for reconnecting pages). The retrier folds both kinds of
//! deltas into [`keys::METRICS_TOTALS`] every run
//! ([`compact`], compare-and-swap, so overlapping runs never count twice);
//! `/metrics` reads the totals plus the deltas not folded yet ([`snapshot`])
//! and renders Prometheus text ([`render`]).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tasks_domain::{Timestamp, keys};

use crate::counts::{BUCKETS, PROCESSING};
pub use crate::counts::{Counts, Delta, EventOutcome, RetryOutcome};
use crate::{GAP_MILLIS, counter_value};
use tasks_kv::{AtomicKv, KeyValue, StoreError, encode};

/// Deltas read per store call.
const READ_BATCH: u64 = 1_000;

/// Most sequence numbers a snapshot or a compaction looks at.
const MAX_SCAN: u64 = 20_000;

/// How long numbers a fold stepped over are looked at again: a delta
/// written under one of them within this time (its call was held up, not
/// dead) is still folded, once.
pub const SKIPPED_KEEP_MILLIS: i64 = 10 * 60 * 1_000;

/// Most numbers stepped over kept per lane (the oldest go first): each
/// fold and each snapshot reads them all, in one call.
const MAX_SKIPPED: u64 = READ_BATCH;

/// Values read from the stores rather than counted (the retrier measures
/// them each run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gauges {
    /// Outbox records waiting.
    pub outbox: u64,
    /// Dead letters kept.
    pub dead_letters: u64,
}

/// The compacted counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Every delta of a range starting at or below this is folded in.
    pub upto: u64,
    /// The counts.
    pub counts: Counts,
    /// As of the last retrier run.
    #[serde(default)]
    pub gauges: Option<Gauges>,
    /// A sequence number whose delta has not come, and since when.
    #[serde(default)]
    pub waiting: Option<(u64, Timestamp)>,
    /// Every counts-only delta up to this is folded in.
    #[serde(default)]
    pub counts_upto: u64,
    /// A counts-only delta that has not come, and since when.
    #[serde(default)]
    pub counts_waiting: Option<(u64, Timestamp)>,
    /// Change feed numbers the fold stepped over (see [`Skipped`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
    /// Counts-only numbers the fold stepped over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub counts_skipped: Vec<Skipped>,
}

/// Numbers `first..=last` of a lane that the fold stepped over at `at`
/// (their delta had not come after [`GAP_MILLIS`]): a delta written under
/// one of them after all is folded when it comes, for
/// [`SKIPPED_KEEP_MILLIS`], so a call held up past the wait is counted
/// once, late, rather than never.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The first number stepped over.
    pub first: u64,
    /// The last.
    pub last: u64,
    /// When.
    pub at: Timestamp,
}

/// Where a lane's fold stands: every delta up to `upto` is folded, except
/// under the numbers `skipped`; `waiting` is the next number, not written
/// yet, and since when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct LaneState {
    upto: u64,
    waiting: Option<(u64, Timestamp)>,
    skipped: Vec<Skipped>,
}

impl Totals {
    fn lane(&self, lane: Lane) -> LaneState {
        match lane.counts_only {
            false => LaneState {
                upto: self.upto,
                waiting: self.waiting,
                skipped: self.skipped.clone(),
            },
            true => LaneState {
                upto: self.counts_upto,
                waiting: self.counts_waiting,
                skipped: self.counts_skipped.clone(),
            },
        }
    }

    fn set_lane(&mut self, lane: Lane, state: LaneState) {
        match lane.counts_only {
            false => {
                (self.upto, self.waiting, self.skipped) = (state.upto, state.waiting, state.skipped)
            }
            true => {
                (self.counts_upto, self.counts_waiting, self.counts_skipped) =
                    (state.upto, state.waiting, state.skipped)
            }
        }
    }
}

/// A numbered sequence of deltas: the change feed's (a delta is keyed by
/// the first number of its range and spans it) or the counts-only one.
#[derive(Clone, Copy)]
struct Lane {
    /// The key of delta number `n`.
    delta: fn(u64) -> String,
    /// The counts-only lane (its state has fields of its own in [`Totals`]).
    counts_only: bool,
}

/// Numbered by [`keys::FEED_HEAD`].
const FEED_LANE: Lane = Lane {
    delta: keys::metrics_delta,
    counts_only: false,
};

/// Numbered by [`keys::COUNTS_HEAD`].
const COUNTS_LANE: Lane = Lane {
    delta: keys::counts_delta,
    counts_only: true,
};

/// Writes `counts` as a counts-only delta: one increment of
/// [`keys::COUNTS_HEAD`] and one write; no change feed number is taken.
/// Nothing to count writes nothing.
pub fn append_counts<F: AtomicKv>(feed: &F, counts: Counts) -> Result<(), StoreError> {
    if counts.is_empty() {
        return Ok(());
    }
    let n = feed.increment(keys::COUNTS_HEAD, 1)?;
    let n = u64::try_from(n)
        .map_err(|_| StoreError::Other(format!("{} is negative: {n}", keys::COUNTS_HEAD)))?;
    let key = keys::counts_delta(n);
    let delta = encode(&key, &Delta { span: 1, counts })?;
    feed.set_many(vec![(key, delta)])
}

/// The deltas of `lane` written after `after` (up to `head`, at most
/// [`MAX_SCAN`] numbers), in sequence order: (first number of the range,
/// delta).
fn scan(
    feed: &dyn KeyValue,
    lane: Lane,
    after: u64,
    head: u64,
) -> Result<Vec<(u64, Delta)>, StoreError> {
    let mut found = Vec::new();
    let end = head.min(after + MAX_SCAN);
    let mut from = after + 1;
    while from <= end {
        let to = end.min(from + READ_BATCH - 1);
        let wanted: Vec<String> = (from..=to).map(lane.delta).collect();
        for (seq, value) in (from..=to).zip(feed.get_many(&wanted)?) {
            if let Some(delta) = value.and_then(|v| serde_json::from_slice::<Delta>(&v).ok()) {
                found.push((seq, delta));
            }
        }
        from = to + 1;
    }
    Ok(found)
}

/// The deltas written after all under numbers the fold stepped over
/// (one read per [`READ_BATCH`] numbers; [`MAX_SKIPPED`] bounds them).
fn scan_skipped(
    feed: &dyn KeyValue,
    lane: Lane,
    skipped: &[Skipped],
) -> Result<Vec<(u64, Delta)>, StoreError> {
    let numbers: Vec<u64> = skipped.iter().flat_map(|s| s.first..=s.last).collect();
    let mut found = Vec::new();
    for chunk in numbers.chunks(READ_BATCH as usize) {
        let wanted: Vec<String> = chunk.iter().map(|&n| (lane.delta)(n)).collect();
        for (&seq, value) in chunk.iter().zip(feed.get_many(&wanted)?) {
            if let Some(delta) = value.and_then(|v| serde_json::from_slice::<Delta>(&v).ok()) {
                found.push((seq, delta));
            }
        }
    }
    Ok(found)
}

/// `skipped` without the numbers `from..=to`.
fn without(skipped: Vec<Skipped>, from: u64, to: u64) -> Vec<Skipped> {
    let mut kept = Vec::with_capacity(skipped.len() + 1);
    for s in skipped {
        if s.last < from || s.first > to {
            kept.push(s);
            continue;
        }
        if s.first < from {
            kept.push(Skipped {
                last: from - 1,
                ..s
            });
        }
        if s.last > to {
            kept.push(Skipped { first: to + 1, ..s });
        }
    }
    kept
}

/// What `/metrics` shows: the totals and every delta written since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Counter values.
    pub counts: Counts,
    /// As of the last retrier run, if any ran.
    pub gauges: Option<Gauges>,
    /// The change feed's head.
    pub feed_head: u64,
}

/// How many times [`snapshot`] reads again when a fold moved the totals
/// while it read the deltas.
const SNAPSHOT_ATTEMPTS: usize = 5;

/// Reads the counters: the totals and the deltas not folded yet. A fold
/// (another process's [`compact`]) writes the totals, then deletes the
/// deltas it folded; one that lands while the deltas are read would leave
/// them out of both, so the totals are read again afterwards and the read
/// is made again when they moved (the last attempt is returned as it is).
pub fn snapshot(feed: &dyn KeyValue) -> Result<Snapshot, StoreError> {
    let mut attempt = 1;
    loop {
        let wanted = [
            keys::METRICS_TOTALS.to_owned(),
            keys::FEED_HEAD.to_owned(),
            keys::COUNTS_HEAD.to_owned(),
        ];
        let mut values = feed.get_many(&wanted)?.into_iter();
        let raw_totals = values.next().flatten();
        let totals: Totals = raw_totals
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok())
            .unwrap_or_default();
        let head = counter_value(values.next().flatten());
        let counts_head = counter_value(values.next().flatten());
        let mut counts = totals.counts;
        let deltas = scan(feed, FEED_LANE, totals.upto, head)?
            .into_iter()
            .chain(scan(feed, COUNTS_LANE, totals.counts_upto, counts_head)?)
            .chain(scan_skipped(feed, FEED_LANE, &totals.skipped)?)
            .chain(scan_skipped(feed, COUNTS_LANE, &totals.counts_skipped)?);
        for (_, delta) in deltas {
            counts.merge(&delta.counts);
        }
        if attempt < SNAPSHOT_ATTEMPTS && feed.get(keys::METRICS_TOTALS)? != raw_totals {
            attempt += 1;
            continue;
        }
        return Ok(Snapshot {
            counts,
            gauges: totals.gauges,
            feed_head: head,
        });
    }
}

/// What one [`compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Deltas folded and deleted.
    pub folded: usize,
    /// Sequence numbers stepped over (their delta had not come).
    pub gave_up: u64,
    /// Of the deltas folded, those written under a number stepped over
    /// before (their call was held up past the wait).
    pub folded_late: usize,
    /// Another run wrote the totals first; nothing was changed.
    pub lost_race: bool,
}

/// Folds the deltas written since the last run (of both lanes) into the
/// totals, records `gauges`, and deletes the folded deltas. A range whose
/// delta is not written yet stops its lane's fold there; after
/// [`GAP_MILLIS`] it is stepped over.
pub fn compact<F: AtomicKv>(
    feed: &F,
    gauges: Option<Gauges>,
    now: Timestamp,
) -> Result<Compacted, StoreError> {
    let (cas, current) = feed.cas_read(keys::METRICS_TOTALS)?;
    let mut totals: Totals = current
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    let heads = feed.get_many(&[keys::FEED_HEAD.to_owned(), keys::COUNTS_HEAD.to_owned()])?;
    let mut heads = heads.into_iter().map(counter_value);
    let (head, counts_head) = (heads.next().unwrap_or(0), heads.next().unwrap_or(0));
    let mut report = Compacted::default();
    let mut folded = Vec::new();
    let gauges_before = totals.gauges;
    let lanes = [
        (FEED_LANE, totals.lane(FEED_LANE), head),
        (COUNTS_LANE, totals.lane(COUNTS_LANE), counts_head),
    ];
    let mut fold = Fold {
        counts: &mut totals.counts,
        folded: &mut folded,
        report: &mut report,
        now,
    };
    let mut changed = false;
    let mut states = Vec::with_capacity(2);
    for (lane, before, head) in lanes {
        let after = fold.lane(feed, lane, before.clone(), head)?;
        changed |= after != before;
        states.push((lane, after));
    }
    for (lane, state) in states {
        totals.set_lane(lane, state);
    }
    changed |= gauges.is_some() && gauges != gauges_before;
    if gauges.is_some() {
        totals.gauges = gauges;
    }
    if !changed && folded.is_empty() {
        return Ok(report);
    }
    if !feed.cas_write(cas, encode(keys::METRICS_TOTALS, &totals)?)? {
        report.lost_race = true;
        return Ok(report);
    }
    report.folded = folded.len();
    if !folded.is_empty() {
        feed.delete_many(folded)?;
    }
    Ok(report)
}

/// What one [`compact`] adds to as it folds each lane.
struct Fold<'a> {
    counts: &'a mut Counts,
    folded: &'a mut Vec<String>,
    report: &'a mut Compacted,
    now: Timestamp,
}

impl Fold<'_> {
    /// Folds `lane`'s deltas after `state.upto` (up to `head`), then those
    /// written after all under numbers stepped over; returns where the lane
    /// stands then. A number whose delta has not come is waited on for
    /// [`GAP_MILLIS`]; then it is stepped over, with every number after it
    /// up to the next delta written (one wait for a dead call's range, not
    /// one per number), and kept in `skipped`.
    fn lane(
        &mut self,
        feed: &dyn KeyValue,
        lane: Lane,
        state: LaneState,
        head: u64,
    ) -> Result<LaneState, StoreError> {
        let LaneState {
            upto,
            mut waiting,
            mut skipped,
        } = state;
        let mut found = scan(feed, lane, upto, head)?.into_iter().peekable();
        let end = head.min(upto + MAX_SCAN);
        let mut at = upto + 1;
        while at <= end {
            // A range inside one folded already (cannot happen unless two
            // calls took overlapping numbers): left alone.
            while found.peek().is_some_and(|(seq, _)| *seq < at) {
                found.next();
            }
            let next = found.peek().map(|(seq, _)| *seq);
            if next == Some(at) {
                let (seq, delta) = found.next().unwrap_or_default();
                self.counts.merge(&delta.counts);
                self.folded.push((lane.delta)(seq));
                at = seq + delta.span.max(1);
                waiting = None;
                continue;
            }
            match waiting {
                Some((seq, since))
                    if seq == at && self.now.millis() - since.millis() >= GAP_MILLIS =>
                {
                    let last = next.map_or(at, |n| n - 1);
                    self.report.gave_up += last - at + 1;
                    skipped.push(Skipped {
                        first: at,
                        last,
                        at: self.now,
                    });
                    at = last + 1;
                    waiting = None;
                }
                Some((seq, _)) if seq == at => break,
                _ => {
                    waiting = Some((at, self.now));
                    break;
                }
            }
        }
        // Numbers stepped over: forgotten after a while, and the oldest
        // first beyond MAX_SKIPPED; a delta written under one is folded.
        skipped.retain(|s| self.now.millis() - s.at.millis() < SKIPPED_KEEP_MILLIS);
        let mut kept: u64 = skipped.iter().map(|s| s.last - s.first + 1).sum();
        while kept > MAX_SKIPPED {
            let over = kept - MAX_SKIPPED;
            let oldest = &mut skipped[0];
            if oldest.last - oldest.first < over {
                kept -= oldest.last - oldest.first + 1;
                skipped.remove(0);
            } else {
                oldest.first += over;
                kept -= over;
            }
        }
        for (seq, delta) in scan_skipped(feed, lane, &skipped)? {
            self.counts.merge(&delta.counts);
            self.folded.push((lane.delta)(seq));
            self.report.folded_late += 1;
            skipped = without(skipped, seq, seq + delta.span.max(1) - 1);
        }
        Ok(LaneState {
            upto: at - 1,
            waiting,
            skipped,
        })
    }
}

/// One metric family: name, type, help.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "tasks_events_total",
        kind: "counter",
        help: "Events the writer handled, by subject and outcome (applied, skipped redelivery, rejected, deferred, queued).",
    },
    Family {
        name: "tasks_retries_total",
        kind: "counter",
        help: "Outbox records the retrier tried, by subject and outcome (applied, skipped: applied already, rescheduled, dead_lettered).",
    },
    Family {
        name: "tasks_dead_letters_created_total",
        kind: "counter",
        help: "Dead letters created, by subject and by who created them (writer, retrier).",
    },
    Family {
        name: PROCESSING,
        kind: "histogram",
        help: "Time the writer spent on the call that handled each event (a batch counts once per event).",
    },
    Family {
        name: "tasks_http_requests_total",
        kind: "counter",
        help: "HTTP responses by route and status.",
    },
    Family {
        name: "tasks_page_cache_total",
        kind: "counter",
        help: "Lookups of the rendered first-page cache, by result.",
    },
];

/// Prometheus text exposition (format 0.0.4) of `snap`.
pub fn render(snap: &Snapshot) -> String {
    let mut out = String::new();
    for family in FAMILIES {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        if family.kind == "histogram" {
            for (le, _) in BUCKETS.iter().chain([("+Inf", u64::MAX)].iter()) {
                let series = format!("{}_bucket{{le=\"{le}\"}}", family.name);
                let _ = writeln!(out, "{series} {}", snap.counts.get(&series));
            }
            let sum = snap.counts.get(&format!("{}_sum", family.name));
            let _ = writeln!(out, "{}_sum {}", family.name, sum as f64 / 1e6);
            let count = snap.counts.get(&format!("{}_count", family.name));
            let _ = writeln!(out, "{}_count {count}", family.name);
            continue;
        }
        let prefix = format!("{}{{", family.name);
        for (series, value) in snap.counts.series() {
            if series.starts_with(&prefix) || series == family.name {
                let _ = writeln!(out, "{series} {value}");
            }
        }
    }
    let gauges = [
        (
            "tasks_outbox_depth",
            "Outbox records waiting for the retrier, as of its last run.",
            snap.gauges.map(|g| g.outbox),
        ),
        (
            "tasks_dead_letters",
            "Dead letters kept, as of the retrier's last run.",
            snap.gauges.map(|g| g.dead_letters),
        ),
        (
            "tasks_change_feed_head",
            "Sequence number of the latest change feed entry.",
            Some(snap.feed_head),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        if let Some(v) = value {
            let _ = writeln!(out, "{name} {v}");
        }
    }
    out
}
