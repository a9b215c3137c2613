//! `event::parse` refuses each broken rule with a reason that names it, and
//! keeps the task id and correlation id it could read.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use tasks_domain::event::{EventKind, TASK_FIELDS};

use crate::events::{Draft, KINDS, STATUSES, padding, parse, valid_event};
use crate::json::{any_json, id, is_valid_id};
use tasks_proptest_kit::check;

/// One rule broken on an otherwise valid event.
#[derive(Clone, Debug)]
enum Break {
    Id(Value),
    NoId,
    Title(Value),
    NoTitleOnCreate,
    Description(Value),
    Status(Value),
    Unknown(String),
    EmptyUpdate,
    Data(Value),
    Subject(String),
    NotAnObject(Value),
    /// A control character inside a title.
    TitleControl(char),
    /// An invisible or text-direction character inside a title.
    TitleInvisible(char),
    /// A control character other than tab and line breaks inside a description.
    DescriptionControl(char),
    /// A known field of the wrong JSON type.
    WrongType(&'static str, Value),
}

/// Control characters: C0, DEL and C1, tab and line breaks among them.
const CONTROLS: [char; 10] = [
    '\0', '\u{1}', '\t', '\n', '\r', '\u{b}', '\u{1b}', '\u{7f}', '\u{85}', '\u{9f}',
];

/// Invisible and text-direction characters: bidi overrides, embeddings,
/// isolates and marks, zero-width space and joiner, word joiner, BOM, soft
/// hyphen, a tag character.
const INVISIBLES: [char; 10] = [
    '\u{202E}',
    '\u{202A}',
    '\u{2066}',
    '\u{200F}',
    '\u{200B}',
    '\u{200D}',
    '\u{2060}',
    '\u{FEFF}',
    '\u{AD}',
    '\u{E0041}',
];

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn non_string() -> impl Strategy<Value = Value> {
    any_json().prop_map(|v| if v.is_string() { json!(7) } else { v })
}

fn broken_rule() -> impl Strategy<Value = Break> {
    prop_oneof![
        Just(Break::Id(json!(""))),
        "[A-Za-z0-9._:-]{129,200}".prop_map(|s| Break::Id(json!(s))),
        (id(), any::<Index>(), any::<char>()).prop_map(|(id, at, c)| {
            let c = if is_valid_id(&c.to_string()) { ' ' } else { c };
            let mut chars: Vec<char> = id.chars().collect();
            let at = at.index(chars.len());
            chars[at] = c;
            Break::Id(json!(String::from_iter(chars)))
        }),
        non_string().prop_map(Break::Id),
        Just(Break::NoId),
        padding().prop_map(|s| Break::Title(json!(s))),
        (padding(), "[^\\s]{201,260}").prop_map(|(p, t)| Break::Title(json!(format!("{p}{t}{p}")))),
        non_string().prop_map(Break::Title),
        Just(Break::NoTitleOnCreate),
        prop::sample::select(&CONTROLS[..]).prop_map(Break::TitleControl),
        prop::sample::select(&INVISIBLES[..]).prop_map(Break::TitleInvisible),
        prop::sample::select(&CONTROLS[..])
            .prop_filter("tab and line breaks are allowed", |c| !matches!(
                c,
                '\t' | '\n' | '\r'
            ))
            .prop_map(Break::DescriptionControl),
        (
            prop::sample::select(&["correlationId", "createdAt", "updatedAt"][..]),
            non_string(),
        )
            .prop_map(|(field, v)| Break::WrongType(field, v)),
        any_json()
            .prop_map(|v| if v.is_number() { json!("7") } else { v })
            .prop_map(|v| Break::WrongType("version", v)),
        "\\PC{4001,4040}".prop_map(|d| Break::Description(json!(d))),
        non_string()
            .prop_map(|v| if v.is_null() { json!([]) } else { v })
            .prop_map(Break::Description),
        any::<String>()
            .prop_map(|s| if STATUSES.iter().any(|k| k.0 == s) {
                s + "!"
            } else {
                s
            })
            .prop_map(|s| Break::Status(json!(s))),
        non_string().prop_map(Break::Status),
        "[a-zA-Z_]{1,12}".prop_map(|k| {
            let known = TASK_FIELDS.contains(&k.as_str()) || k == "data";
            Break::Unknown(if known { format!("{k}_") } else { k })
        }),
        Just(Break::EmptyUpdate),
        non_string()
            .prop_map(|v| if v.is_null() || v.is_object() {
                json!("t-1")
            } else {
                v
            })
            .prop_map(Break::Data),
        any::<String>()
            .prop_map(|s| if KINDS.iter().any(|k| k.1 == s) {
                s + "."
            } else {
                s
            })
            .prop_map(Break::Subject),
        any_json()
            .prop_map(|v| if v.is_object() { json!(null) } else { v })
            .prop_map(Break::NotAnObject),
    ]
}

#[test]
fn each_broken_rule_is_refused_with_its_reason() {
    check(
        "broken rule refused",
        (valid_event(), broken_rule()),
        |(mut draft, broken)| {
            let mut subject = None;
            // Deletes check only the id; other rules are broken on a create or
            // an update.
            let on_fields = |draft: &mut Draft| {
                if draft.kind.0 == EventKind::Deleted {
                    draft.kind = KINDS[0];
                }
            };
            let mut task_id = draft
                .task
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let mut cid = draft.want.correlation_id.clone();
            let want = match &broken {
                Break::Id(v) => {
                    draft.task.insert("id".into(), v.clone());
                    // An id that breaks the rules is not kept as the task's:
                    // it would reach logs and listings as sent.
                    task_id = None;
                    match v.as_str() {
                        Some("") => "id must not be empty".to_owned(),
                        Some(s) if s.chars().count() > 128 => {
                            format!(
                                "id must be at most 128 characters (got {})",
                                s.chars().count()
                            )
                        }
                        Some(s) => {
                            let (at, c) = s
                                .chars()
                                .enumerate()
                                .find(|(_, c)| !is_valid_id(&c.to_string()))
                                .unwrap_or((0, '?'));
                            format!("found {c:?} at position {}", at + 1)
                        }
                        None => format!("id must be a string, not {}", json_type(v)),
                    }
                }
                Break::NoId => {
                    draft.task.remove("id");
                    task_id = None;
                    "id is required".to_owned()
                }
                Break::Title(v) => {
                    on_fields(&mut draft);
                    draft.task.insert("title".into(), v.clone());
                    match v.as_str() {
                        Some(t) if t.trim().is_empty() => "title must not be empty".to_owned(),
                        Some(t) => format!(
                            "title must be at most 200 characters (got {})",
                            t.trim().chars().count()
                        ),
                        None => format!("title must be a string, not {}", json_type(v)),
                    }
                }
                Break::NoTitleOnCreate => {
                    draft.kind = KINDS[0];
                    draft.task.remove("title");
                    "title is required".to_owned()
                }
                Break::Description(v) => {
                    on_fields(&mut draft);
                    draft.task.insert("description".into(), v.clone());
                    match v.as_str() {
                        Some(d) => format!(
                            "description must be at most 4000 characters (got {})",
                            d.chars().count()
                        ),
                        None => {
                            format!("description must be a string or null, not {}", json_type(v))
                        }
                    }
                }
                Break::Status(v) => {
                    on_fields(&mut draft);
                    draft.task.insert("status".into(), v.clone());
                    match v.as_str() {
                        Some(s) => format!("unknown status {s:?}"),
                        None => format!("status must be a string, not {}", json_type(v)),
                    }
                }
                Break::Unknown(k) => {
                    draft.task.insert(k.clone(), json!(1));
                    format!("unknown field {k:?}")
                }
                Break::EmptyUpdate => {
                    draft.kind = KINDS[1];
                    for k in ["title", "description", "status"] {
                        draft.task.remove(k);
                    }
                    "an update must set at least one of title, description or status".to_owned()
                }
                Break::Data(v) => {
                    let meta = draft.envelope.get_or_insert_with(Map::new);
                    meta.insert("data".into(), v.clone());
                    // Only the top level's correlation id is read when data is not an object.
                    cid = meta
                        .get("correlationId")
                        .and_then(Value::as_str)
                        .filter(|c| is_valid_id(c))
                        .map(str::to_owned);
                    task_id = None;
                    format!("data must be a JSON object, not {}", json_type(v))
                }
                Break::TitleControl(c) => {
                    on_fields(&mut draft);
                    draft.task.insert("title".into(), json!(format!("a{c}b")));
                    format!(
                        "title must not contain control characters (found U+{:04X} at position 2)",
                        u32::from(*c)
                    )
                }
                Break::TitleInvisible(c) => {
                    on_fields(&mut draft);
                    draft.task.insert("title".into(), json!(format!("a{c}b")));
                    format!(
                        "title must not contain invisible or text-direction characters (bidi overrides, zero-width spaces) (found U+{:04X} at position 2)",
                        u32::from(*c)
                    )
                }
                Break::DescriptionControl(c) => {
                    on_fields(&mut draft);
                    draft
                        .task
                        .insert("description".into(), json!(format!("x{c}")));
                    format!(
                        "description must not contain control characters other than tab and line breaks (found U+{:04X} at position 2)",
                        u32::from(*c)
                    )
                }
                Break::WrongType(field, v) => {
                    draft.task.insert((*field).into(), v.clone());
                    if *field == "correlationId" {
                        // Only an envelope's own correlation id is left to use.
                        cid = draft
                            .envelope
                            .as_ref()
                            .and_then(|m| m.get("correlationId"))
                            .and_then(Value::as_str)
                            .filter(|c| is_valid_id(c))
                            .map(str::to_owned);
                    }
                    let want = if *field == "version" {
                        "a number"
                    } else {
                        "a string"
                    };
                    format!("{field} must be {want}, not {}", json_type(v))
                }
                Break::Subject(s) => {
                    subject = Some(s.clone());
                    format!("unknown subject {s:?}")
                }
                Break::NotAnObject(v) => {
                    let got = parse(draft.kind.1, v.to_string().as_bytes());
                    let want = format!("payload must be a JSON object, not {}", json_type(v));
                    let reason = got.map_err(|r| r.reason);
                    prop_assert!(matches!(&reason, Err(r) if r.contains(&want)), "{reason:?}");
                    return Ok(());
                }
            };
            let payload = match (&broken, &draft.envelope) {
                // The data key replaces the task object.
                (Break::Data(_), Some(meta)) => {
                    Value::Object(meta.clone()).to_string().into_bytes()
                }
                _ => draft.payload(),
            };
            let subject = subject.as_deref().unwrap_or(draft.kind.1);
            match parse(subject, &payload) {
                Ok(e) => {
                    return Err(TestCaseError::fail(format!(
                        "accepted as {e:?}; want {want:?}"
                    )));
                }
                Err(r) => {
                    prop_assert!(
                        r.reason.contains(&want),
                        "reason {:?}, want {want:?}",
                        r.reason
                    );
                    prop_assert_eq!(r.task_id, task_id);
                    prop_assert_eq!(r.correlation_id, cid);
                }
            }
            Ok(())
        },
    );
}
