//! The counters behind `/metrics`, kept in the `feed` store.
//!
//! A call adds to [`Counts`] in memory and writes them as one delta
//! (`metrics:delta:<seq>`) in the same `set-many` as its change feed slots
//! ([`crate::feed::append`]): counting costs the writer no store call of its
//! own. The retrier folds deltas into [`keys::METRICS_TOTALS`] every run
//! ([`compact`], compare-and-swap, so overlapping runs never count twice);
//! `/metrics` reads the totals plus the deltas not folded yet ([`snapshot`])
//! and renders Prometheus text ([`render`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tasks_domain::event::EventKind;
use tasks_domain::{Timestamp, keys};

use crate::feed::GAP_MILLIS;
use crate::kv::{AtomicKv, KeyValue, StoreError, encode};

/// Deltas read per store call.
const READ_BATCH: u64 = 1_000;

/// Most sequence numbers a snapshot or a compaction looks at.
const MAX_SCAN: u64 = 20_000;

/// Counter values by series (`name{labels}`, labels in a fixed order).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Counts(BTreeMap<String, u64>);

impl Counts {
    /// Adds `n` to `series`.
    pub fn add(&mut self, series: String, n: u64) {
        if n > 0 {
            *self.0.entry(series).or_default() += n;
        }
    }

    /// Adds every series of `other`.
    pub fn merge(&mut self, other: &Counts) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `series` (0 when never counted).
    pub fn get(&self, series: &str) -> u64 {
        self.0.get(series).copied().unwrap_or(0)
    }

    /// Counts one event handled by the writer.
    pub fn event(&mut self, subject: &str, outcome: EventOutcome) {
        self.add(
            format!(
                "tasks_events_total{{outcome=\"{}\",subject=\"{}\"}}",
                outcome.as_str(),
                subject_label(subject)
            ),
            1,
        );
        if matches!(outcome, EventOutcome::Rejected) {
            self.dead_letter(subject, "writer");
        }
    }

    /// Counts one outbox record the retrier tried.
    pub fn retry(&mut self, subject: &str, outcome: RetryOutcome) {
        self.add(
            format!(
                "tasks_retries_total{{outcome=\"{}\",subject=\"{}\"}}",
                outcome.as_str(),
                subject_label(subject)
            ),
            1,
        );
        if matches!(outcome, RetryOutcome::DeadLettered) {
            self.dead_letter(subject, "retrier");
        }
    }

    fn dead_letter(&mut self, subject: &str, source: &str) {
        self.add(
            format!(
                "tasks_dead_letters_created_total{{source=\"{source}\",subject=\"{}\"}}",
                subject_label(subject)
            ),
            1,
        );
    }

    /// Observes `events` events handled in one call that took `micros`.
    pub fn processing(&mut self, micros: u64, events: u64) {
        if events == 0 {
            return;
        }
        for (le, bound) in BUCKETS {
            if micros <= *bound {
                self.add(format!("{PROCESSING}_bucket{{le=\"{le}\"}}"), events);
            }
        }
        self.add(format!("{PROCESSING}_bucket{{le=\"+Inf\"}}"), events);
        self.add(format!("{PROCESSING}_sum"), micros * events);
        self.add(format!("{PROCESSING}_count"), events);
    }

    /// Counts one HTTP response; `route` is the route's template.
    pub fn http(&mut self, route: &str, status: u16) {
        self.add(
            format!(
                "tasks_http_requests_total{{route=\"{}\",status=\"{status}\"}}",
                escape(route)
            ),
            1,
        );
    }

    /// Counts one lookup of the rendered page cache.
    pub fn page_cache(&mut self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.add(format!("tasks_page_cache_total{{result=\"{result}\"}}"), 1);
    }
}

/// What became of an event the writer handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Applied to the `tasks` store.
    Applied,
    /// A redelivery of an event applied already.
    Skipped,
    /// Dead-lettered.
    Rejected,
    /// The store failed: kept in the outbox.
    Deferred,
    /// Waits in the outbox behind the task's earlier events.
    Queued,
}

impl EventOutcome {
    fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Applied => "applied",
            EventOutcome::Skipped => "skipped",
            EventOutcome::Rejected => "rejected",
            EventOutcome::Deferred => "deferred",
            EventOutcome::Queued => "queued",
        }
    }
}

/// What became of an outbox record the retrier tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    /// Applied and removed from the outbox.
    Applied,
    /// Failed again; tried later.
    Rescheduled,
    /// Out of attempts, or refused for good: a dead letter.
    DeadLettered,
}

impl RetryOutcome {
    fn as_str(self) -> &'static str {
        match self {
            RetryOutcome::Applied => "applied",
            RetryOutcome::Rescheduled => "rescheduled",
            RetryOutcome::DeadLettered => "dead_lettered",
        }
    }
}

/// Our subjects by name, anything else as `other`: a producer publishing
/// on made-up subjects cannot grow the number of series.
fn subject_label(subject: &str) -> &str {
    EventKind::from_subject(subject).map_or("other", EventKind::subject)
}

/// A label value in the exposition format's escaping.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

const PROCESSING: &str = "tasks_event_processing_seconds";

/// Histogram buckets: the `le` label and its bound in microseconds.
const BUCKETS: &[(&str, u64)] = &[
    ("0.0005", 500),
    ("0.001", 1_000),
    ("0.0025", 2_500),
    ("0.005", 5_000),
    ("0.01", 10_000),
    ("0.025", 25_000),
    ("0.05", 50_000),
    ("0.1", 100_000),
    ("0.25", 250_000),
    ("0.5", 500_000),
    ("1", 1_000_000),
    ("2.5", 2_500_000),
    ("5", 5_000_000),
];

/// The counts one feed range carries.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    /// How many sequence numbers the range took.
    pub span: u64,
    /// What its call counted.
    pub counts: Counts,
}

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
}

/// Counts found in a range of deltas.
struct Scan {
    /// Ranges in sequence order: (first, delta).
    found: Vec<(u64, Delta)>,
}

fn scan(feed: &dyn KeyValue, after: u64, head: u64) -> Result<Scan, StoreError> {
    let mut found = Vec::new();
    let end = head.min(after + MAX_SCAN);
    let mut from = after + 1;
    while from <= end {
        let to = end.min(from + READ_BATCH - 1);
        let wanted: Vec<String> = (from..=to).map(keys::metrics_delta).collect();
        for (seq, value) in (from..=to).zip(feed.get_many(&wanted)?) {
            if let Some(delta) = value.and_then(|v| serde_json::from_slice::<Delta>(&v).ok()) {
                found.push((seq, delta));
            }
        }
        from = to + 1;
    }
    Ok(Scan { found })
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

/// Reads the counters: the totals and the deltas not folded yet.
pub fn snapshot(feed: &dyn KeyValue) -> Result<Snapshot, StoreError> {
    let wanted = [keys::METRICS_TOTALS.to_owned(), keys::FEED_HEAD.to_owned()];
    let mut values = feed.get_many(&wanted)?.into_iter();
    let totals: Totals = values
        .next()
        .flatten()
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    let head = values
        .next()
        .flatten()
        .and_then(|v| crate::kv::decode_counter(&v))
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let mut counts = totals.counts;
    for (_, delta) in scan(feed, totals.upto, head)?.found {
        counts.merge(&delta.counts);
    }
    Ok(Snapshot {
        counts,
        gauges: totals.gauges,
        feed_head: head,
    })
}

/// What one [`compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Deltas folded and deleted.
    pub folded: usize,
    /// Sequence numbers stepped over (their delta never came).
    pub gave_up: u64,
    /// Another run wrote the totals first; nothing was changed.
    pub lost_race: bool,
}

/// Folds the deltas written since the last run into the totals, records
/// `gauges`, and deletes the folded deltas. A range whose delta is not
/// written yet stops the fold there; after [`GAP_MILLIS`] it is stepped over.
pub fn compact<F: AtomicKv>(
    feed: &F,
    gauges: Option<Gauges>,
    now: Timestamp,
) -> Result<Compacted, StoreError> {
    let (cas, current) = feed.cas_read(keys::METRICS_TOTALS)?;
    let mut totals: Totals = current
        .and_then(|v| serde_json::from_slice(&v).ok())
        .unwrap_or_default();
    let head = crate::feed::head(feed)?;
    let scan = scan(feed, totals.upto, head)?;
    let mut report = Compacted::default();
    let mut folded = Vec::new();
    let mut found = scan.found.into_iter().peekable();
    let end = head.min(totals.upto + MAX_SCAN);
    let waiting_before = totals.waiting;
    let mut at = totals.upto + 1;
    while at <= end {
        // A range inside one folded already (cannot happen unless two calls
        // took overlapping numbers): left alone.
        while found.peek().is_some_and(|(seq, _)| *seq < at) {
            found.next();
        }
        match found.peek() {
            Some((seq, _)) if *seq == at => {
                let (seq, delta) = found.next().unwrap_or_default();
                totals.counts.merge(&delta.counts);
                folded.push(keys::metrics_delta(seq));
                at = seq + delta.span.max(1);
                totals.waiting = None;
            }
            _ => match totals.waiting {
                Some((seq, since)) if seq == at && now.millis() - since.millis() >= GAP_MILLIS => {
                    report.gave_up += 1;
                    at += 1;
                    totals.waiting = None;
                }
                Some((seq, _)) if seq == at => break,
                _ => {
                    totals.waiting = Some((at, now));
                    break;
                }
            },
        }
    }
    let changed = at - 1 != totals.upto
        || totals.waiting != waiting_before
        || (gauges.is_some() && gauges != totals.gauges);
    totals.upto = at - 1;
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
        help: "Outbox records the retrier tried, by subject and outcome (applied, rescheduled, dead_lettered).",
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
        for (series, value) in &snap.counts.0 {
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
