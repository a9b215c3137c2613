//! `event::parse`: valid events of both shapes parse to the fields given,
//! the two shapes answer alike, and no input panics it. Broken rules are in
//! `rejections.rs`.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use tasks_domain::Status;
use tasks_domain::event::{self, Event, EventKind, Fields, Rejection};
use tasks_domain::validate::is_invisible;

use crate::json::{JSON_BYTES, JSON_TOKENS, any_json, id, is_valid_id};
use tasks_proptest_kit::{check, edits, fed, mutate};

/// `event::parse`, counted.
pub fn parse(subject: &str, payload: &[u8]) -> Result<Event, Rejection> {
    fed();
    event::parse(subject, payload)
}

/// Each kind with its subject.
pub const KINDS: [(EventKind, &str); 3] = [
    (EventKind::Created, "tasks.created"),
    (EventKind::Updated, "tasks.updated"),
    (EventKind::Deleted, "tasks.deleted"),
];

/// Every spelling the README allows, with what it means.
pub const STATUSES: [(&str, Status); 5] = [
    ("pending", Status::Pending),
    ("in_progress", Status::InProgress),
    ("in-progress", Status::InProgress),
    ("completed", Status::Completed),
    ("cancelled", Status::Cancelled),
];

/// Characters `str::trim` removes, ASCII and not.
const SPACES: &[char] = &[
    ' ', '\t', '\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{a0}', '\u{2003}', '\u{2028}', '\u{3000}',
];

/// A valid event as a producer would publish it, and what it must parse to.
#[derive(Clone, Debug)]
pub struct Draft {
    /// The kind and the subject it is published on.
    pub kind: (EventKind, &'static str),
    /// The task object's fields.
    pub task: Map<String, Value>,
    /// `None` for the flat shape, else the envelope's other top-level keys.
    pub envelope: Option<Map<String, Value>>,
    /// What `parse` must return.
    pub want: Event,
}

impl Draft {
    /// The payload as published.
    pub fn payload(&self) -> Vec<u8> {
        let top = match &self.envelope {
            None => self.task.clone(),
            Some(meta) => {
                let mut top = meta.clone();
                top.insert("data".into(), Value::Object(self.task.clone()));
                top
            }
        };
        Value::Object(top).to_string().into_bytes()
    }
}

/// Whitespace `str::trim` removes, to pad titles with.
pub fn padding() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(SPACES), 0..4).prop_map(String::from_iter)
}

/// A title as sent (padded) and as it must come out (trimmed, 1-200 chars).
fn title() -> impl Strategy<Value = (String, String)> {
    let solid = || {
        any::<char>().prop_map(|c| {
            if c.is_whitespace() || c.is_control() || is_invisible(c) {
                'x'
            } else {
                c
            }
        })
    };
    // Any character but a control, invisible or text-direction character
    // (those are refused).
    let char = || {
        any::<char>().prop_map(|c| {
            if c.is_control() || is_invisible(c) {
                'c'
            } else {
                c
            }
        })
    };
    let middle = prop_oneof![
        4 => prop::collection::vec(char(), 0..24),
        1 => prop::collection::vec(char(), 190..=198),
    ];
    (
        padding(),
        solid(),
        middle,
        prop::option::of(solid()),
        padding(),
    )
        .prop_map(|(left, first, middle, last, right)| {
            let mut core = String::from(first);
            // Without a solid last character the middle's could end it.
            if let Some(last) = last {
                core.extend(middle);
                core.push(last);
            }
            (format!("{left}{core}{right}"), core)
        })
}

/// A description as sent, and what it must set (`Some(None)` clears).
fn description() -> impl Strategy<Value = (Value, Option<Option<String>>)> {
    // Any character but a control character other than tab and line breaks.
    let char = || {
        any::<char>().prop_map(|c| {
            if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
                'c'
            } else {
                c
            }
        })
    };
    let text = prop_oneof![
        6 => prop::collection::vec(char(), 0..40),
        // Blank: cleared; the control characters among the spaces become plain ones.
        2 => padding().prop_map(|s| s
            .chars()
            .map(|c| if c.is_control() && !matches!(c, '\t' | '\n' | '\r') { ' ' } else { c })
            .collect()),
        1 => prop::collection::vec(char(), 3_990..=4_000),
    ]
    .prop_map(String::from_iter);
    prop_oneof![
        Just((Value::Null, Some(None))),
        text.prop_map(|d| {
            let want = (!d.trim().is_empty()).then(|| d.clone());
            (Value::String(d), Some(want))
        }),
    ]
}

/// A correlation id as sent, and the id it yields when it is usable.
fn correlation_id() -> impl Strategy<Value = (Value, Option<String>)> {
    prop_oneof![
        3 => id().prop_map(|c| (Value::String(c.clone()), Some(c))),
        1 => prop_oneof![
            Just(String::new()),
            "[a-z]{0,6} [a-z]{0,6}",
            "[a-z]{129,140}",
            "[a-z]{0,4}[é/<{]",
        ]
        .prop_map(|c| (Value::String(c), None)),
    ]
}

/// `createdAt`, `updatedAt` (strings), `version` (a number): accepted and
/// ignored, whatever string or number they hold.
fn read_only() -> impl Strategy<Value = Vec<(&'static str, Value)>> {
    let field = prop_oneof![
        (
            prop::sample::select(&["createdAt", "updatedAt"][..]),
            any::<String>().prop_map(Value::String),
        ),
        (
            Just("version"),
            prop_oneof![
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
            ],
        ),
    ];
    prop::collection::vec(field, 0..3)
}

/// Top-level keys of an envelope other than `data` and `correlationId`.
fn metadata() -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(
        (
            prop::sample::select(&["type", "source", "time", "id", "title", "specversion"][..]),
            any_json(),
        ),
        0..4,
    )
    .prop_map(|pairs| pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A valid event of either shape, and what it must parse to.
pub fn valid_event() -> impl Strategy<Value = Draft> {
    (
        prop::sample::select(&KINDS[..]),
        id(),
        prop::option::of(title()),
        prop::option::of(description()),
        prop::option::of(prop::sample::select(&STATUSES[..])),
        prop::option::of(metadata()),
        prop::option::of(correlation_id()),
        prop::option::of(correlation_id()),
        read_only(),
    )
        .prop_map(
            |(kind, id, title, description, status, envelope, inner_cid, outer_cid, read_only)| {
                let mut task = Map::new();
                task.insert("id".into(), json!(id));
                let mut fields = Fields::default();
                // A create needs a title and an update needs something to set.
                let title = match (kind.0, title) {
                    (EventKind::Created, None) => Some(("t".to_owned(), "t".to_owned())),
                    (_, t) => t,
                };
                if let Some((sent, want)) = title {
                    task.insert("title".into(), json!(sent));
                    fields.title = Some(want);
                }
                if let Some((sent, want)) = description {
                    task.insert("description".into(), sent);
                    fields.description = want;
                }
                let status = match (kind.0, &fields, status) {
                    (EventKind::Updated, f, None) if f.is_empty() => Some(STATUSES[0]),
                    (_, _, s) => s,
                };
                if let Some((sent, want)) = status {
                    task.insert("status".into(), json!(sent));
                    fields.status = Some(want);
                }
                for (k, v) in read_only {
                    task.insert(k.into(), v);
                }
                let mut cid = None;
                let envelope = envelope.map(|mut meta| {
                    if let Some((sent, usable)) = outer_cid {
                        meta.insert("correlationId".into(), sent);
                        cid = usable;
                    }
                    meta
                });
                if let Some((sent, usable)) = inner_cid {
                    task.insert("correlationId".into(), sent);
                    cid = cid.or(usable);
                }
                if kind.0 == EventKind::Deleted {
                    fields = Fields::default();
                }
                let want = Event {
                    kind: kind.0,
                    id,
                    fields,
                    correlation_id: cid,
                };
                Draft {
                    kind,
                    task,
                    envelope,
                    want,
                }
            },
        )
}

/// What every answer promises, whatever the input.
fn sound(subject: &str, outcome: &Result<Event, Rejection>) -> Result<(), TestCaseError> {
    let usable = |c: &Option<String>| c.as_deref().is_none_or(is_valid_id);
    match outcome {
        Ok(e) => {
            prop_assert_eq!(Some(e.kind), EventKind::from_subject(subject));
            prop_assert!(is_valid_id(&e.id), "id {:?}", e.id);
            prop_assert!(usable(&e.correlation_id));
            if let Some(t) = &e.fields.title {
                prop_assert!(t.trim() == t && (1..=200).contains(&t.chars().count()));
            }
            if let Some(Some(d)) = &e.fields.description {
                prop_assert!(!d.trim().is_empty() && d.chars().count() <= 4_000);
            }
            match e.kind {
                EventKind::Created => prop_assert!(e.fields.title.is_some()),
                EventKind::Updated => prop_assert!(!e.fields.is_empty()),
                EventKind::Deleted => prop_assert!(e.fields.is_empty()),
            }
        }
        Err(r) => {
            prop_assert!(!r.reason.trim().is_empty());
            prop_assert!(usable(&r.correlation_id));
        }
    }
    Ok(())
}

#[test]
fn valid_events_parse_to_the_fields_given() {
    check("valid event parses", valid_event(), |draft| {
        let got = parse(draft.kind.1, &draft.payload());
        prop_assert_eq!(got, Ok(draft.want));
        Ok(())
    });
}

/// A task object that may break any rule, but has no `data` key (which
/// would make it an envelope).
fn any_task_object() -> impl Strategy<Value = Map<String, Value>> {
    (
        valid_event(),
        any_json(),
        prop::collection::vec(any::<Index>(), 0..3),
    )
        .prop_map(|(draft, noise, drops)| {
            let mut task = draft.task;
            for drop in drops {
                if !task.is_empty() {
                    let key = task.keys().nth(drop.index(task.len())).cloned();
                    key.map(|k| task.remove(&k));
                }
            }
            if let Value::Object(extra) = noise {
                task.extend(extra.into_iter().filter(|(k, _)| k != "data"));
            }
            task
        })
}

fn subject() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(&KINDS[..]).prop_map(|k| k.1.to_owned()),
        1 => prop_oneof![Just("tasks.archived".to_owned()), any::<String>()],
    ]
}

#[test]
fn flat_and_envelope_shapes_answer_alike() {
    check(
        "shapes agree",
        (subject(), any_task_object()),
        |(subject, task)| {
            let flat = Value::Object(task.clone()).to_string();
            let envelope = json!({ "data": task }).to_string();
            let got = parse(&subject, flat.as_bytes());
            sound(&subject, &got)?;
            prop_assert_eq!(got, parse(&subject, envelope.as_bytes()));
            Ok(())
        },
    );
}

#[test]
fn any_bytes_are_answered() {
    check(
        "arbitrary bytes",
        (subject(), prop::collection::vec(any::<u8>(), 0..512)),
        |(subject, payload)| sound(&subject, &parse(&subject, &payload)),
    );
}

#[test]
fn any_json_is_answered() {
    check(
        "arbitrary JSON",
        (subject(), any_json(), any::<bool>()),
        |(subject, value, wrap)| {
            let value = if wrap {
                json!({ "data": value })
            } else {
                value
            };
            let got = parse(&subject, value.to_string().as_bytes());
            sound(&subject, &got)?;
            if !value.is_object() {
                let reason = got.map_err(|r| r.reason);
                prop_assert!(
                    matches!(&reason, Err(r) if r.starts_with("payload must be a JSON object"))
                );
            }
            Ok(())
        },
    );
}

#[test]
fn mutated_events_are_answered() {
    check(
        "mutated event",
        (valid_event(), edits(JSON_BYTES, JSON_TOKENS)),
        |(draft, edits)| {
            let payload = draft.payload();
            let mutated = mutate(payload.clone(), &edits);
            let got = parse(draft.kind.1, &mutated);
            sound(draft.kind.1, &got)?;
            if mutated == payload {
                prop_assert_eq!(got, Ok(draft.want));
            }
            Ok(())
        },
    );
}
