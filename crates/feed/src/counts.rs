//! What a call counts for `/metrics`: counter series by name and labels,
//! added in memory ([`Counts`]) and written with the call's change feed range
//! as one [`Delta`] (see [`crate::append`] and [`crate::metrics`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tasks_domain::event::EventKind;

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

    /// Every series and its value, in name order.
    pub fn series(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
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
    /// Applied already (a redelivery, or a replayed dead letter the task
    /// has moved past): removed from the outbox without a write.
    Skipped,
    /// Failed again; tried later.
    Rescheduled,
    /// Out of attempts, or refused for good: a dead letter.
    DeadLettered,
}

impl RetryOutcome {
    fn as_str(self) -> &'static str {
        match self {
            RetryOutcome::Applied => "applied",
            RetryOutcome::Skipped => "skipped",
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

pub(crate) const PROCESSING: &str = "tasks_event_processing_seconds";

/// Histogram buckets: the `le` label and its bound in microseconds.
pub(crate) const BUCKETS: &[(&str, u64)] = &[
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
