//! The manifest's `[[trigger.nats]]` entries, checked and turned into the
//! subscriptions the listener opens (core NATS, or JetStream).

use crate::config::{
    ConfigError, MAX_IN_FLIGHT, TriggerConfig, subjects_overlap, validate_subject,
};
use crate::jetstream::{unconsumed_error, unconsumed_subjects};
use crate::partition::Partition;

/// One subscription the listener will open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// Component to call.
    pub component: String,
    /// Subject (possibly with wildcards).
    pub subject: String,
    /// Queue group, if any.
    pub queue_group: Option<String>,
    /// Messages handled at once.
    pub max_in_flight: usize,
    /// Longest a handler may run.
    pub handler_timeout: std::time::Duration,
    /// JetStream mode, when the entry names a stream.
    pub jetstream: Option<crate::jetstream::Plan>,
    /// How often the component is called with no message (`tick_ms`).
    pub tick: Option<std::time::Duration>,
}

/// Default [`Subscription::handler_timeout`], in milliseconds.
pub const DEFAULT_HANDLER_TIMEOUT_MS: u64 = 30_000;
/// Allowed `handler_timeout_ms` values.
const HANDLER_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// Allowed `tick_ms` values.
const TICK_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;

/// Turns the manifest's entries into subscriptions, checking each.
pub fn plan(entries: &[TriggerConfig]) -> Result<Vec<Subscription>, ConfigError> {
    let mut subs: Vec<Subscription> = Vec::with_capacity(entries.len());
    for e in entries {
        let at = |msg: String| {
            ConfigError(format!(
                "[[trigger.nats]] for component {:?}: {msg}",
                e.component
            ))
        };
        if e.component.trim().is_empty() {
            return Err(ConfigError(
                "[[trigger.nats]] entry without a component".into(),
            ));
        }
        validate_subject(&e.subject).map_err(at)?;
        let queue_group = match e.queue_group.as_deref() {
            None => None,
            Some(q) if q.is_empty() || q.chars().any(char::is_whitespace) => {
                return Err(at(format!(
                    "queue_group {q:?} must be non-empty and without whitespace"
                )));
            }
            Some(q) => Some(q.to_owned()),
        };
        let max_in_flight = e.max_in_flight.unwrap_or(1);
        if !(1..=MAX_IN_FLIGHT).contains(&max_in_flight) {
            return Err(at(format!(
                "max_in_flight must be between 1 and {MAX_IN_FLIGHT} (got {max_in_flight})"
            )));
        }
        let timeout_ms = e.handler_timeout_ms.unwrap_or(DEFAULT_HANDLER_TIMEOUT_MS);
        if !HANDLER_TIMEOUT_MS.contains(&timeout_ms) {
            return Err(at(format!(
                "handler_timeout_ms must be between {} and {} (got {timeout_ms})",
                HANDLER_TIMEOUT_MS.start(),
                HANDLER_TIMEOUT_MS.end()
            )));
        }
        let jetstream = crate::jetstream::plan(e, timeout_ms).map_err(at)?;
        let tick = match e.tick_ms {
            None => None,
            Some(ms) if TICK_MS.contains(&ms) => Some(std::time::Duration::from_millis(ms)),
            Some(ms) => {
                return Err(at(format!(
                    "tick_ms must be between {} and {} (got {ms})",
                    TICK_MS.start(),
                    TICK_MS.end()
                )));
            }
        };
        let sub = Subscription {
            component: e.component.clone(),
            subject: e.subject.clone(),
            queue_group,
            max_in_flight,
            handler_timeout: std::time::Duration::from_millis(timeout_ms),
            jetstream,
            tick,
        };
        if subs.iter().any(|s| {
            s.component == sub.component
                && s.subject == sub.subject
                && s.queue_group == sub.queue_group
        }) {
            return Err(at(format!("subject {:?} is listed twice", sub.subject)));
        }
        subs.extend(partitioned(sub));
    }
    share_streams(&mut subs)?;
    refuse_both_modes(&subs)?;
    refuse_shared_durables(&subs)?;
    Ok(subs)
}

/// Refuses two entries on one consumer (say `w` in two partitions, whose
/// second is `w-p1of2`, and another entry's `w-p1of2`): each would take the
/// other's messages.
fn refuse_shared_durables(subs: &[Subscription]) -> Result<(), ConfigError> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for p in subs.iter().filter_map(|s| s.jetstream.as_ref()) {
        let id = (p.stream.as_str(), p.consumer.durable.as_str());
        if seen.contains(&id) {
            return Err(ConfigError(format!(
                "two [[trigger.nats]] entries use the durable consumer {:?} on stream {:?} \
                 (partitions name theirs <consumer>-p<i>of<P>): give each entry its own consumer",
                id.1, id.0
            )));
        }
        seen.push(id);
    }
    Ok(())
}

/// One subscription per partition of an entry with `partitions` (each its
/// own durable consumer, see [`crate::partition`]); the entry itself
/// otherwise.
fn partitioned(sub: Subscription) -> Vec<Subscription> {
    let Some((plan, part)) = sub
        .jetstream
        .as_ref()
        .and_then(|p| Some((p, p.partition.as_ref()?)))
    else {
        return vec![sub];
    };
    (0..part.count)
        .map(|index| {
            let mut plan = plan.clone();
            plan.consumer.durable = Partition::durable(&plan.consumer.durable, index, part.count);
            plan.partition = Some(Partition {
                index,
                ..part.clone()
            });
            Subscription {
                jetstream: Some(plan),
                ..sub.clone()
            }
        })
        .collect()
}

/// Gives each JetStream entry the subjects of every entry on its stream,
/// and refuses a stream the manifest creates with subjects none of them
/// takes (the listener checks an existing stream the same way).
fn share_streams(subs: &mut [Subscription]) -> Result<(), ConfigError> {
    let on = |subs: &[Subscription], stream: &str| -> Vec<String> {
        subs.iter()
            .filter(|s| s.jetstream.as_ref().is_some_and(|p| p.stream == stream))
            .map(|s| s.subject.clone())
            .collect()
    };
    let streams: Vec<String> = subs
        .iter()
        .filter_map(|s| s.jetstream.as_ref().map(|p| p.stream.clone()))
        .collect();
    for stream in streams {
        let mut filters = on(subs, &stream);
        // The partitions of an entry share its subject: named once.
        filters.dedup();
        let plans = || {
            subs.iter()
                .filter_map(|s| s.jetstream.as_ref())
                .filter(|p| p.stream == stream)
        };
        let allowed = plans().any(|p| p.allow_unconsumed_subjects);
        for spec in plans().filter_map(|p| p.create_stream.as_ref()) {
            let missing = unconsumed_subjects(&spec.subjects, &filters);
            if !missing.is_empty() && !allowed {
                return Err(ConfigError(unconsumed_error(&stream, &missing, &filters)));
            }
        }
        for s in subs.iter_mut() {
            if let Some(p) = s.jetstream.as_mut().filter(|p| p.stream == stream) {
                p.stream_filters = filters.clone();
                p.allow_unconsumed_subjects = allowed;
            }
        }
    }
    Ok(())
}

/// Refuses a component taking the same subject from core NATS and from a
/// stream: JetStream stores what core NATS also delivers, so each message
/// would be handled twice.
fn refuse_both_modes(subs: &[Subscription]) -> Result<(), ConfigError> {
    for core in subs.iter().filter(|s| s.jetstream.is_none()) {
        for js in subs.iter().filter(|s| s.jetstream.is_some()) {
            let stream_subjects = js
                .jetstream
                .as_ref()
                .and_then(|p| p.create_stream.as_ref())
                .map(|c| c.subjects.clone())
                .unwrap_or_default();
            let clash = std::iter::once(&js.subject)
                .chain(stream_subjects.iter())
                .any(|s| subjects_overlap(&core.subject, s));
            if core.component == js.component && clash {
                return Err(ConfigError(format!(
                    "[[trigger.nats]] for component {:?}: subject {:?} (core NATS) overlaps {:?} (JetStream, stream {:?}): \
                     every message on both would be handled twice; take it in one mode",
                    core.component,
                    core.subject,
                    js.subject,
                    js.jetstream.as_ref().map_or("", |p| p.stream.as_str())
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::entry;

    #[test]
    fn plan_defaults_and_checks() -> Result<(), ConfigError> {
        let subs = plan(&[entry("tasks.*")])?;
        assert_eq!(subs[0].max_in_flight, 1);
        assert_eq!(subs[0].queue_group, None);
        let bad = |e: TriggerConfig| plan(&[e]).expect_err("invalid").0;
        assert!(
            bad(TriggerConfig {
                max_in_flight: Some(0),
                ..entry("a")
            })
            .contains("max_in_flight must be between 1 and 1024 (got 0)")
        );
        assert!(
            bad(TriggerConfig {
                queue_group: Some("a b".into()),
                ..entry("a")
            })
            .contains("queue_group")
        );
        assert!(bad(entry("a..b")).contains("component \"writer\""));
        assert!(
            plan(&[entry("a"), entry("a")])
                .expect_err("dup")
                .0
                .contains("listed twice")
        );
        Ok(())
    }

    fn js(subject: &str, extra: serde_json::Value) -> TriggerConfig {
        let mut v = serde_json::json!({"component": "writer", "subject": subject,
            "stream": "TASKS", "consumer": "c"});
        if let (Some(m), Some(x)) = (v.as_object_mut(), extra.as_object()) {
            m.extend(x.clone());
        }
        serde_json::from_value(v).expect("an entry")
    }

    #[test]
    fn a_stream_storing_subjects_no_entry_takes_is_refused() -> Result<(), ConfigError> {
        let created = serde_json::json!({"stream_subjects": ["tasks.>"]});
        let err = plan(&[js("tasks.*", created.clone())]).expect_err("tasks.a.b untaken");
        assert!(
            err.0
                .contains("stores tasks.> that no [[trigger.nats]] entry takes"),
            "{}",
            err.0
        );
        assert!(err.0.contains("allow_unconsumed_subjects"), "{}", err.0);
        plan(&[js("tasks.>", created.clone())])?;
        // Two entries on one stream share it: together they take tasks.>.
        let two = plan(&[
            js("tasks.>", created.clone()),
            TriggerConfig {
                component: "audit".into(),
                consumer: Some("audit".into()),
                ..js("tasks.created", serde_json::json!({}))
            },
        ])?;
        let filters = |i: usize| two[i].jetstream.as_ref().map(|p| p.stream_filters.clone());
        assert_eq!(
            filters(0),
            Some(vec!["tasks.>".into(), "tasks.created".into()])
        );
        assert_eq!(filters(1), filters(0));
        let allowed = plan(&[js(
            "tasks.*",
            serde_json::json!({"stream_subjects": ["tasks.>"], "allow_unconsumed_subjects": true}),
        )])?;
        assert!(
            allowed[0]
                .jetstream
                .as_ref()
                .is_some_and(|p| p.allow_unconsumed_subjects)
        );
        Ok(())
    }

    #[test]
    fn partitions_make_one_consumer_each_and_need_an_ordering_key() -> Result<(), ConfigError> {
        let subs = plan(&[js(
            "tasks.>",
            serde_json::json!({"partitions": 3, "ordering_key": "payload:id"}),
        )])?;
        let parts: Vec<(String, u32, u32)> = subs
            .iter()
            .filter_map(|s| {
                let p = s.jetstream.as_ref()?;
                let part = p.partition.as_ref()?;
                Some((p.consumer.durable.clone(), part.index, part.count))
            })
            .collect();
        assert_eq!(
            parts,
            [
                ("c-p0of3".to_owned(), 0, 3),
                ("c-p1of3".to_owned(), 1, 3),
                ("c-p2of3".to_owned(), 2, 3)
            ]
        );
        // One partition is the entry as it was.
        let one = plan(&[js("tasks.>", serde_json::json!({"partitions": 1}))])?;
        assert_eq!(one.len(), 1);
        assert!(
            one[0]
                .jetstream
                .as_ref()
                .is_some_and(|p| p.partition.is_none() && p.consumer.durable == "c")
        );
        let bad = |extra: serde_json::Value| plan(&[js("tasks.>", extra)]).expect_err("refused").0;
        assert!(
            bad(serde_json::json!({"partitions": 4})).contains("partitions needs ordering_key")
        );
        assert!(
            bad(serde_json::json!({"ordering_key": "payload:id"}))
                .contains("ordering_key needs partitions")
        );
        assert!(
            bad(serde_json::json!({"partitions": 0, "ordering_key": "payload:id"}))
                .contains("between 1 and 64")
        );
        assert!(
            bad(serde_json::json!({"partitions": 65, "ordering_key": "payload:id"}))
                .contains("between 1 and 64")
        );
        assert!(
            bad(serde_json::json!({"partitions": 2, "ordering_key": "id"}))
                .contains("payload:<path>")
        );
        let core = TriggerConfig {
            partitions: Some(2),
            ..entry("tasks.*")
        };
        assert!(
            plan(&[core])
                .expect_err("core NATS")
                .0
                .contains("partitions needs stream")
        );
        // Another entry on a consumer a partition is named after.
        let clash = plan(&[
            js(
                "tasks.>",
                serde_json::json!({"partitions": 2, "ordering_key": "payload:id"}),
            ),
            TriggerConfig {
                component: "audit".into(),
                consumer: Some("c-p1of2".into()),
                ..js("tasks.created", serde_json::json!({}))
            },
        ])
        .expect_err("one consumer for two entries");
        assert!(clash.0.contains("\"c-p1of2\""), "{}", clash.0);
        Ok(())
    }

    #[test]
    fn concurrency_splits_a_pull_by_key_on_one_consumer_and_needs_an_ordering_key()
    -> Result<(), ConfigError> {
        let subs = plan(&[js(
            "tasks.>",
            serde_json::json!({"concurrency": 4, "ordering_key": "payload:data.id|id"}),
        )])?;
        let p = subs[0].jetstream.as_ref().expect("JetStream");
        assert_eq!(subs.len(), 1, "one consumer");
        assert_eq!((p.concurrency, p.partition.as_ref()), (4, None));
        assert_eq!(p.consumer.durable, "c");
        assert!(p.ordering_key.is_some());
        // With partitions: each partition's consumer splits its share.
        let both = plan(&[js(
            "tasks.>",
            serde_json::json!({"partitions": 2, "concurrency": 3, "ordering_key": "subject:2"}),
        )])?;
        assert_eq!(both.len(), 2);
        assert!(both.iter().all(|s| {
            s.jetstream
                .as_ref()
                .is_some_and(|p| p.concurrency == 3 && p.ordering_key.is_some())
        }));
        let bad = |extra: serde_json::Value| plan(&[js("tasks.>", extra)]).expect_err("refused").0;
        assert!(
            bad(serde_json::json!({"concurrency": 2})).contains("concurrency needs ordering_key")
        );
        for n in [0, 17] {
            let e = bad(serde_json::json!({"concurrency": n, "ordering_key": "payload:id"}));
            assert!(e.contains("concurrency must be between 1 and 16"), "{e}");
        }
        assert!(
            bad(serde_json::json!({"concurrency": 1, "ordering_key": "payload:id"}))
                .contains("ordering_key needs partitions or concurrency")
        );
        let core = TriggerConfig {
            concurrency: Some(2),
            ..entry("tasks.*")
        };
        assert!(
            plan(&[core])
                .expect_err("core NATS")
                .0
                .contains("concurrency needs stream")
        );
        Ok(())
    }

    #[test]
    fn one_component_cannot_take_a_subject_in_both_modes() -> Result<(), ConfigError> {
        let err = plan(&[entry("tasks.created"), js("tasks.>", serde_json::json!({}))])
            .expect_err("both modes");
        assert!(err.0.contains("handled twice"), "{}", err.0);
        let err = plan(&[
            entry("tasks.x.y"),
            js("tasks.*", serde_json::json!({"stream_subjects": ["tasks.>"], "allow_unconsumed_subjects": true})),
        ])
        .expect_err("the stream stores what core takes");
        assert!(err.0.contains("handled twice"), "{}", err.0);
        // Another component may take them both ways; unrelated subjects too.
        plan(&[
            TriggerConfig {
                component: "logger".into(),
                ..entry("tasks.created")
            },
            js("tasks.>", serde_json::json!({})),
        ])?;
        plan(&[entry("orders.*"), js("tasks.>", serde_json::json!({}))])?;
        Ok(())
    }
}
