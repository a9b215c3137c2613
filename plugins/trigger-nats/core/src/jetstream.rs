//! JetStream mode of a `[[trigger.nats]]` entry: what the manifest asks for
//! (checked here, without a server), and how it compares with a stream or
//! consumer that already exists. `consumer.rs` does the talking.
//!
//! An entry with `stream = "…"` consumes through a durable pull consumer:
//! messages survive restarts of the app, each is acknowledged only after the
//! component returned Ok for it, and an error or a timeout has it delivered
//! again.

use std::time::Duration;

use crate::config::{TriggerConfig, subject_covers, validate_subject};
use crate::partition::{MAX_CONCURRENCY, MAX_PARTITIONS, OrderingKey, Partition};

/// Default [`Plan::batch`].
pub const DEFAULT_BATCH: usize = 100;
/// Largest [`Plan::batch`].
pub const MAX_BATCH: usize = 1_000;
/// Default `ack_wait_ms`.
pub const DEFAULT_ACK_WAIT_MS: u64 = 60_000;
/// Default `max_wait_ms`.
pub const DEFAULT_MAX_WAIT_MS: u64 = 1_000;
/// Allowed `max_wait_ms` values.
const MAX_WAIT_MS: std::ops::RangeInclusive<u64> = 10..=30_000;
/// Default `max_attempts`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default `stream_duplicate_window_ms` (the server's own default).
pub const DEFAULT_DUPLICATE_WINDOW_MS: u64 = 120_000;
/// How long a pull's first message waits for earlier deliveries held by
/// another instance to be acknowledged before the pull is handed back
/// (`consumer.rs`).
pub const TAKEOVER_GRACE: Duration = Duration::from_secs(2);
/// Smallest `ack_wait_ms`: twice [`TAKEOVER_GRACE`]. A pull's messages wait
/// up to the grace before they are handled, and the first progress
/// acknowledgement comes a third of `ack_wait` into the call; both must fit
/// in `ack_wait`, or the messages are delivered again while held.
pub const MIN_ACK_WAIT_MS: u64 = 2 * TAKEOVER_GRACE.as_millis() as u64;

/// Where a created stream keeps its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// On disk: survives a server restart.
    File,
    /// In memory.
    Memory,
}

/// A stream to create when it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    /// Subjects it captures.
    pub subjects: Vec<String>,
    /// File or memory.
    pub storage: Storage,
    /// Oldest message kept (`None`: no limit).
    pub max_age: Option<Duration>,
    /// Most messages kept (-1: no limit).
    pub max_msgs: i64,
    /// Most bytes kept (-1: no limit).
    pub max_bytes: i64,
    /// How long a `Nats-Msg-Id` is remembered.
    pub duplicate_window: Duration,
    /// Copies kept in a cluster (1 on a single server).
    pub replicas: u32,
}

/// The durable pull consumer an entry uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsumerSpec {
    /// Its name.
    pub durable: String,
    /// The entry's subject.
    pub filter_subject: String,
    /// Redelivery after this long without an acknowledgement.
    pub ack_wait: Duration,
    /// Deliveries before the server gives up (-1: never).
    pub max_deliver: i64,
    /// Unacknowledged messages allowed across all instances.
    pub max_ack_pending: i64,
    /// Where the consumer starts when the trigger makes it; `None` (unset in
    /// the manifest): from the stream's first message, and an existing
    /// consumer's start is not checked.
    pub deliver: Option<Deliver>,
}

/// Where a new consumer starts in the stream (`deliver_policy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deliver {
    /// Every message the stream holds.
    All,
    /// Only messages stored after the consumer is made.
    New,
    /// From this stream sequence.
    ByStartSequence(u64),
    /// From the first message stored at or after this time.
    ByStartTime(time::OffsetDateTime),
}

impl Deliver {
    /// What `deliver_policy` (with `opt_start_seq` / `opt_start_time`) asks
    /// for; `None` when unset.
    fn parse(
        policy: Option<&str>,
        seq: Option<u64>,
        start_time: Option<&str>,
    ) -> Result<Option<Deliver>, String> {
        let needs =
            |field: &str, policy: &str| format!("{field} needs deliver_policy = {policy:?}");
        let deliver = match policy {
            None => None,
            Some("all") => Some(Deliver::All),
            Some("new") => Some(Deliver::New),
            Some("by_start_sequence") => match seq {
                Some(0) => {
                    return Err(
                        "opt_start_seq must be 1 or more (stream sequences start at 1)".into(),
                    );
                }
                Some(n) => Some(Deliver::ByStartSequence(n)),
                None => {
                    return Err("deliver_policy = \"by_start_sequence\" needs opt_start_seq".into());
                }
            },
            Some("by_start_time") => match start_time {
                Some(t) => {
                    let at = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .map_err(|e| format!("opt_start_time {t:?} is not an RFC 3339 time such as 2026-12-06T20:00:00Z ({e})"))?;
                    Some(Deliver::ByStartTime(at))
                }
                None => {
                    return Err("deliver_policy = \"by_start_time\" needs opt_start_time".into());
                }
            },
            Some(other) => {
                return Err(format!(
                    "deliver_policy must be \"all\", \"new\", \"by_start_sequence\" or \"by_start_time\" (got {other:?})"
                ));
            }
        };
        if seq.is_some() && !matches!(deliver, Some(Deliver::ByStartSequence(_))) {
            return Err(needs("opt_start_seq", "by_start_sequence"));
        }
        if start_time.is_some() && !matches!(deliver, Some(Deliver::ByStartTime(_))) {
            return Err(needs("opt_start_time", "by_start_time"));
        }
        Ok(deliver)
    }

    /// As the manifest writes it.
    pub fn describe(&self) -> String {
        match self {
            Deliver::All => "\"all\"".into(),
            Deliver::New => "\"new\"".into(),
            Deliver::ByStartSequence(n) => format!("\"by_start_sequence\" from {n}"),
            Deliver::ByStartTime(t) => format!(
                "\"by_start_time\" from {}",
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|_| t.to_string())
            ),
        }
    }
}

/// Where a message the component keeps failing on goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetterSpec {
    /// The subject it is published on (a stream must store it).
    pub subject: String,
    /// Failed calls in a row before it goes there.
    pub max_attempts: u32,
}

/// JetStream settings of one entry, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The stream.
    pub stream: String,
    /// How to create the stream when it is missing.
    pub create_stream: Option<StreamSpec>,
    /// The consumer, created when missing.
    pub consumer: ConsumerSpec,
    /// The subjects of every entry of the app on this stream (this one's
    /// included): together they must take every subject the stream stores,
    /// unless [`Plan::allow_unconsumed_subjects`].
    pub stream_filters: Vec<String>,
    /// Another app consumes what this app's entries do not take.
    pub allow_unconsumed_subjects: bool,
    /// Where a message goes after `max_attempts` failed calls, if anywhere.
    pub dead_letter: Option<DeadLetterSpec>,
    /// Most messages handed to one guest call.
    pub batch: usize,
    /// Longest one pull waits for messages.
    pub max_wait: Duration,
    /// The partition this consumer handles, when the entry has
    /// `partitions` (see [`crate::partition`]; [`crate::plan::plan`] makes
    /// one subscription per partition).
    pub partition: Option<Partition>,
    /// What a message's key is, with `partitions` or `concurrency`.
    pub ordering_key: Option<OrderingKey>,
    /// Guest calls at once per pull, the messages split by key (1: one).
    pub concurrency: usize,
    /// Where the JetStream API is (`[application.trigger.nats]`'s
    /// `jetstream_domain` / `api_prefix`, set by the plugin).
    pub api: crate::config::JetStreamApi,
}

/// Stream and consumer names: what the server accepts in a subject token.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} must be 1-255 characters of A-Z a-z 0-9 - _"
        ))
    }
}

/// The JetStream plan of `e`, or `None` for a core NATS entry. Settings
/// that only one mode knows are refused in the other, by name.
pub fn plan(e: &TriggerConfig, handler_timeout_ms: u64) -> Result<Option<Plan>, String> {
    let js_only = [
        ("consumer", e.consumer.is_some()),
        ("ack_wait_ms", e.ack_wait_ms.is_some()),
        ("max_deliver", e.max_deliver.is_some()),
        ("batch", e.batch.is_some()),
        ("max_wait_ms", e.max_wait_ms.is_some()),
        ("max_ack_pending", e.max_ack_pending.is_some()),
        ("deliver_policy", e.deliver_policy.is_some()),
        ("opt_start_seq", e.opt_start_seq.is_some()),
        ("opt_start_time", e.opt_start_time.is_some()),
        (
            "allow_unconsumed_subjects",
            e.allow_unconsumed_subjects.is_some(),
        ),
        ("dead_letter_subject", e.dead_letter_subject.is_some()),
        ("max_attempts", e.max_attempts.is_some()),
        ("partitions", e.partitions.is_some()),
        ("ordering_key", e.ordering_key.is_some()),
        ("concurrency", e.concurrency.is_some()),
        ("stream_subjects", e.stream_subjects.is_some()),
        ("stream_storage", e.stream_storage.is_some()),
        ("stream_replicas", e.stream_replicas.is_some()),
        ("stream_max_age_ms", e.stream_max_age_ms.is_some()),
        ("stream_max_msgs", e.stream_max_msgs.is_some()),
        ("stream_max_bytes", e.stream_max_bytes.is_some()),
        (
            "stream_duplicate_window_ms",
            e.stream_duplicate_window_ms.is_some(),
        ),
    ];
    let Some(stream) = e.stream.as_deref() else {
        if let Some((name, _)) = js_only.iter().find(|(_, set)| *set) {
            return Err(format!("{name} needs stream = \"…\" (JetStream mode)"));
        }
        return Ok(None);
    };
    check_name("stream", stream)?;
    if e.queue_group.is_some() {
        return Err(
            "queue_group has no meaning with stream: instances share the durable consumer instead"
                .into(),
        );
    }
    if e.max_in_flight.is_some() {
        return Err("max_in_flight has no meaning with stream: use batch".into());
    }
    let durable = e
        .consumer
        .as_deref()
        .ok_or("stream needs consumer = \"…\" (the durable consumer's name)")?;
    check_name("consumer", durable)?;
    let batch = e.batch.unwrap_or(DEFAULT_BATCH);
    if !(1..=MAX_BATCH).contains(&batch) {
        return Err(format!(
            "batch must be between 1 and {MAX_BATCH} (got {batch})"
        ));
    }
    let max_wait_ms = e.max_wait_ms.unwrap_or(DEFAULT_MAX_WAIT_MS);
    if !MAX_WAIT_MS.contains(&max_wait_ms) {
        return Err(format!(
            "max_wait_ms must be between {} and {} (got {max_wait_ms})",
            MAX_WAIT_MS.start(),
            MAX_WAIT_MS.end()
        ));
    }
    let ack_wait_ms = e.ack_wait_ms.unwrap_or(DEFAULT_ACK_WAIT_MS);
    if ack_wait_ms < MIN_ACK_WAIT_MS {
        return Err(format!(
            "ack_wait_ms must be at least {MIN_ACK_WAIT_MS} (got {ack_wait_ms}): a pull may wait {} ms \
             for an instance that holds earlier messages before it is handled",
            TAKEOVER_GRACE.as_millis()
        ));
    }
    if ack_wait_ms <= handler_timeout_ms {
        return Err(format!(
            "ack_wait_ms ({ack_wait_ms}) must be more than handler_timeout_ms ({handler_timeout_ms}): \
             a message still being handled would be delivered again"
        ));
    }
    if ack_wait_ms <= max_wait_ms {
        return Err(format!(
            "ack_wait_ms ({ack_wait_ms}) must be more than max_wait_ms ({max_wait_ms}): \
             messages of an open pull would be delivered again"
        ));
    }
    let max_deliver = e.max_deliver.unwrap_or(-1);
    if max_deliver == 0 || max_deliver < -1 {
        return Err(format!(
            "max_deliver must be -1 (never give up) or at least 1 (got {max_deliver})"
        ));
    }
    let batch_i64 = i64::try_from(batch).unwrap_or(i64::MAX);
    let max_ack_pending = e.max_ack_pending.unwrap_or(batch_i64);
    if max_ack_pending < batch_i64 {
        return Err(format!(
            "max_ack_pending ({max_ack_pending}) must be at least batch ({batch})"
        ));
    }
    let dead_letter = match (&e.dead_letter_subject, e.max_attempts) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err("max_attempts needs dead_letter_subject (where the message goes)".into());
        }
        (Some(subject), attempts) => {
            validate_subject(subject)?;
            if subject.contains(['*', '>']) {
                return Err(format!(
                    "dead_letter_subject {subject:?} must be one subject, without wildcards"
                ));
            }
            if subject_covers(&e.subject, subject) {
                return Err(format!(
                    "dead_letter_subject {subject:?} is taken by the entry's own subject {:?}: \
                     a dead letter would come back to the component",
                    e.subject
                ));
            }
            let max_attempts = attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS);
            if max_attempts == 0 {
                return Err("max_attempts must be at least 1".into());
            }
            Some(DeadLetterSpec {
                subject: subject.clone(),
                max_attempts,
            })
        }
    };
    let count = e.partitions.unwrap_or(1);
    if !(1..=MAX_PARTITIONS).contains(&count) {
        return Err(format!(
            "partitions must be between 1 and {MAX_PARTITIONS} (got {count})"
        ));
    }
    let concurrency = e.concurrency.unwrap_or(1);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(format!(
            "concurrency must be between 1 and {MAX_CONCURRENCY} (got {concurrency})"
        ));
    }
    let ordering_key = match (count > 1 || concurrency > 1, e.ordering_key.as_deref()) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(
                "ordering_key needs partitions or concurrency (2 or more) to have a meaning".into(),
            );
        }
        (true, None) => {
            let what = if count > 1 {
                "partitions"
            } else {
                "concurrency"
            };
            return Err(format!(
                "{what} needs ordering_key (payload:<path>, subject:<n> or header:<name>): \
                 the messages of one key stay in order"
            ));
        }
        (true, Some(key)) => Some(OrderingKey::parse(key)?),
    };
    let partition = (count > 1).then_some(Partition { index: 0, count });
    if let Some(p) = &partition {
        check_name(
            "consumer",
            &Partition::durable(durable, p.count - 1, p.count),
        )?;
    }
    let create_stream = match &e.stream_subjects {
        None => {
            let creating = js_only
                .iter()
                .skip_while(|(name, _)| *name != "stream_storage")
                .find(|(_, set)| *set);
            if let Some((name, _)) = creating {
                return Err(format!(
                    "{name} only applies when creating the stream: set stream_subjects too"
                ));
            }
            None
        }
        Some(subjects) => {
            if subjects.is_empty() {
                return Err("stream_subjects must name at least one subject".into());
            }
            for s in subjects {
                validate_subject(s)?;
            }
            let storage = match e.stream_storage.as_deref() {
                None | Some("file") => Storage::File,
                Some("memory") => Storage::Memory,
                Some(other) => {
                    return Err(format!(
                        "stream_storage must be \"file\" or \"memory\" (got {other:?})"
                    ));
                }
            };
            let replicas = e.stream_replicas.unwrap_or(1);
            if !(1..=5).contains(&replicas) {
                return Err(format!(
                    "stream_replicas must be between 1 and 5 (got {replicas})"
                ));
            }
            Some(StreamSpec {
                subjects: subjects.clone(),
                storage,
                replicas,
                max_age: e.stream_max_age_ms.map(Duration::from_millis),
                max_msgs: e.stream_max_msgs.unwrap_or(-1),
                max_bytes: e.stream_max_bytes.unwrap_or(-1),
                duplicate_window: Duration::from_millis(
                    e.stream_duplicate_window_ms
                        .unwrap_or(DEFAULT_DUPLICATE_WINDOW_MS),
                ),
            })
        }
    };
    Ok(Some(Plan {
        stream: stream.to_owned(),
        create_stream,
        consumer: ConsumerSpec {
            durable: durable.to_owned(),
            filter_subject: e.subject.clone(),
            ack_wait: Duration::from_millis(ack_wait_ms),
            max_deliver,
            max_ack_pending,
            deliver: Deliver::parse(
                e.deliver_policy.as_deref(),
                e.opt_start_seq,
                e.opt_start_time.as_deref(),
            )?,
        },
        stream_filters: vec![e.subject.clone()],
        allow_unconsumed_subjects: e.allow_unconsumed_subjects.unwrap_or(false),
        dead_letter,
        batch,
        max_wait: Duration::from_millis(max_wait_ms),
        partition,
        ordering_key,
        concurrency: concurrency as usize,
        api: crate::config::JetStreamApi::Default,
    }))
}

/// The subjects of `stream_subjects` (patterns) that no filter of
/// `filters` takes whole: messages on them would be stored and never
/// handled.
pub fn unconsumed_subjects(stream_subjects: &[String], filters: &[String]) -> Vec<String> {
    stream_subjects
        .iter()
        .filter(|s| !filters.iter().any(|f| subject_covers(f, s)))
        .cloned()
        .collect()
}

/// The refusal for a stream storing `unconsumed` subjects no entry takes.
pub fn unconsumed_error(stream: &str, unconsumed: &[String], filters: &[String]) -> String {
    format!(
        "stream {stream:?} stores {} that no [[trigger.nats]] entry takes (entries on it take {}): \
         such messages would be acknowledged to their publisher and never handled. Widen the entry's \
         subject (e.g. \"{}\"; the component can dead-letter what it does not know), or set \
         allow_unconsumed_subjects = true when another app consumes them",
        unconsumed.join(", "),
        filters.join(", "),
        unconsumed.first().map_or(">", String::as_str),
    )
}

/// What differs between the consumer the manifest asks for and the one the
/// server has, one phrase each (empty: they agree). Checked instead of
/// changed: another instance, or an operator, may rely on the existing one.
pub fn consumer_differences(want: &ConsumerSpec, have: &ConsumerSpec) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |field: &str, want: String, have: String| {
        if want != have {
            out.push(format!(
                "{field} is {have} on the server, {want} in the manifest"
            ));
        }
    };
    differ(
        "filter subject",
        format!("{:?}", want.filter_subject),
        format!("{:?}", have.filter_subject),
    );
    differ(
        "ack_wait_ms",
        want.ack_wait.as_millis().to_string(),
        have.ack_wait.as_millis().to_string(),
    );
    differ(
        "max_deliver",
        want.max_deliver.to_string(),
        have.max_deliver.to_string(),
    );
    differ(
        "max_ack_pending",
        want.max_ack_pending.to_string(),
        have.max_ack_pending.to_string(),
    );
    if let Some(deliver) = &want.deliver {
        differ(
            "deliver_policy",
            deliver.describe(),
            have.deliver
                .map_or_else(|| "another policy".into(), |d| d.describe()),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::entry;

    fn js(extra: serde_json::Value) -> TriggerConfig {
        let mut v = serde_json::json!({"component": "writer", "subject": "tasks.*",
            "stream": "TASKS", "consumer": "spin-tasks-writer"});
        if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(x.clone());
        }
        serde_json::from_value(v).expect("an entry")
    }

    #[test]
    fn defaults() -> Result<(), String> {
        assert_eq!(plan(&entry("tasks.*"), 30_000)?, None);
        let p = plan(&js(serde_json::json!({})), 30_000)?.ok_or("a plan")?;
        assert_eq!(p.batch, 100);
        assert_eq!(p.create_stream, None);
        assert_eq!(
            p.consumer,
            ConsumerSpec {
                durable: "spin-tasks-writer".into(),
                filter_subject: "tasks.*".into(),
                ack_wait: Duration::from_secs(60),
                max_deliver: -1,
                max_ack_pending: 100,
                deliver: None,
            }
        );
        let created = plan(
            &js(
                serde_json::json!({"stream_subjects": ["tasks.>"], "stream_max_age_ms": 3_600_000}),
            ),
            30_000,
        )?
        .and_then(|p| p.create_stream)
        .ok_or("a stream to create")?;
        assert_eq!(created.storage, Storage::File);
        assert_eq!(created.max_age, Some(Duration::from_secs(3600)));
        assert_eq!((created.max_msgs, created.max_bytes), (-1, -1));
        assert_eq!(created.replicas, 1);
        let replicated = plan(
            &js(serde_json::json!({"stream_subjects": ["tasks.>"], "stream_replicas": 3})),
            30_000,
        )?
        .and_then(|p| p.create_stream)
        .ok_or("a stream to create")?;
        assert_eq!(replicated.replicas, 3);
        let six = plan(
            &js(serde_json::json!({"stream_subjects": ["tasks.>"], "stream_replicas": 6})),
            30_000,
        );
        assert!(six.is_err_and(|e| e.contains("stream_replicas must be between 1 and 5")));
        Ok(())
    }

    #[test]
    fn mistakes_are_named() {
        let cases: [(TriggerConfig, &str); 14] = [
            (
                js(serde_json::json!({"max_attempts": 3})),
                "max_attempts needs dead_letter_subject",
            ),
            (
                js(serde_json::json!({"dead_letter_subject": "dlq.*"})),
                "must be one subject, without wildcards",
            ),
            (
                js(serde_json::json!({"dead_letter_subject": "tasks.dlq"})),
                "is taken by the entry's own subject",
            ),
            (
                serde_json::from_value(
                    serde_json::json!({"component":"w","subject":"a","batch":5}),
                )
                .expect("entry"),
                "batch needs stream",
            ),
            (
                js(serde_json::json!({"consumer": null})),
                "stream needs consumer",
            ),
            (
                js(serde_json::json!({"stream": "TA SKS"})),
                "stream \"TA SKS\" must be",
            ),
            (
                js(serde_json::json!({"queue_group": "g"})),
                "queue_group has no meaning",
            ),
            (js(serde_json::json!({"max_in_flight": 4})), "use batch"),
            (
                js(serde_json::json!({"batch": 0})),
                "batch must be between 1 and 1000 (got 0)",
            ),
            (
                js(serde_json::json!({"ack_wait_ms": 30_000})),
                "must be more than handler_timeout_ms",
            ),
            (
                js(serde_json::json!({"max_deliver": 0})),
                "max_deliver must be -1",
            ),
            (
                js(serde_json::json!({"max_ack_pending": 10})),
                "must be at least batch (100)",
            ),
            (
                js(serde_json::json!({"stream_storage": "file"})),
                "set stream_subjects too",
            ),
            (
                js(serde_json::json!({"stream_subjects": ["tasks.>"], "stream_storage": "disk"})),
                "stream_storage must be \"file\" or \"memory\"",
            ),
        ];
        for (e, want) in cases {
            let got = plan(&e, 30_000).expect_err(want);
            assert!(got.contains(want), "{got} / {want}");
        }
        // A pull stays open up to max_wait_ms with its messages unacknowledged.
        let got = plan(
            &js(serde_json::json!({"ack_wait_ms": 5_000, "max_wait_ms": 10_000})),
            1_000,
        )
        .expect_err("ack_wait_ms below max_wait_ms");
        assert!(
            got.contains("ack_wait_ms (5000) must be more than max_wait_ms (10000)"),
            "{got}"
        );
    }

    #[test]
    fn differences_name_each_field() {
        let want = ConsumerSpec {
            durable: "c".into(),
            filter_subject: "tasks.*".into(),
            ack_wait: Duration::from_secs(60),
            max_deliver: -1,
            max_ack_pending: 100,
            deliver: Some(Deliver::New),
        };
        assert!(consumer_differences(&want, &want).is_empty());
        let have = ConsumerSpec {
            filter_subject: "tasks.>".into(),
            ack_wait: Duration::from_secs(30),
            deliver: Some(Deliver::All),
            ..want.clone()
        };
        assert_eq!(
            consumer_differences(&want, &have),
            [
                "filter subject is \"tasks.>\" on the server, \"tasks.*\" in the manifest",
                "ack_wait_ms is 30000 on the server, 60000 in the manifest",
                "deliver_policy is \"all\" on the server, \"new\" in the manifest"
            ]
        );
        // Unset in the manifest, the consumer's start is not checked.
        let unset = ConsumerSpec {
            deliver: None,
            ..want.clone()
        };
        assert!(
            consumer_differences(
                &unset,
                &ConsumerSpec {
                    deliver: Some(Deliver::All),
                    ..want.clone()
                }
            )
            .is_empty()
        );
    }

    #[test]
    fn deliver_policy_and_its_options_are_checked_together() -> Result<(), String> {
        let deliver = |extra: serde_json::Value| {
            plan(&js(extra), 30_000).map(|p| p.and_then(|p| p.consumer.deliver))
        };
        assert_eq!(deliver(serde_json::json!({}))?, None);
        assert_eq!(
            deliver(serde_json::json!({"deliver_policy": "new"}))?,
            Some(Deliver::New)
        );
        assert_eq!(
            deliver(
                serde_json::json!({"deliver_policy": "by_start_sequence", "opt_start_seq": 9_998})
            )?,
            Some(Deliver::ByStartSequence(9_998))
        );
        let at = deliver(serde_json::json!({"deliver_policy": "by_start_time",
            "opt_start_time": "2026-12-06T20:00:00+01:00"}))?;
        assert_eq!(
            at.map(|d| d.describe()),
            Some("\"by_start_time\" from 2026-12-06T20:00:00+01:00".to_owned())
        );
        for (extra, says) in [
            (
                serde_json::json!({"deliver_policy": "last"}),
                "deliver_policy must be \"all\", \"new\"",
            ),
            (
                serde_json::json!({"deliver_policy": "by_start_sequence"}),
                "needs opt_start_seq",
            ),
            (
                serde_json::json!({"deliver_policy": "by_start_sequence", "opt_start_seq": 0}),
                "must be 1 or more",
            ),
            (
                serde_json::json!({"deliver_policy": "by_start_time"}),
                "needs opt_start_time",
            ),
            (
                serde_json::json!({"deliver_policy": "by_start_time", "opt_start_time": "yesterday"}),
                "not an RFC 3339 time",
            ),
            (
                serde_json::json!({"opt_start_seq": 5}),
                "opt_start_seq needs deliver_policy = \"by_start_sequence\"",
            ),
            (
                serde_json::json!({"deliver_policy": "new", "opt_start_time": "2026-12-06T20:00:00Z"}),
                "opt_start_time needs deliver_policy",
            ),
        ] {
            let got = deliver(extra.clone()).err().unwrap_or_default();
            assert!(got.contains(says), "{extra}: {got}");
        }
        // A core NATS entry has no consumer to start.
        let mut core = entry("tasks.*");
        core.deliver_policy = Some("new".into());
        assert_eq!(
            plan(&core, 30_000),
            Err("deliver_policy needs stream = \"…\" (JetStream mode)".into())
        );
        Ok(())
    }
}
