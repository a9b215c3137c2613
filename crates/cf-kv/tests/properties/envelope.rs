//! `Envelope::parse`: the v4 envelope parses to the fields sent (missing
//! ones default), list results to the keys sent, and any body is answered.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use tasks_cf_kv::{Envelope, KeyEntry, Message, ResultInfo};

use tasks_proptest_kit::{check, edits, fed, mutate};

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<Envelope<T>> {
    fed();
    Envelope::parse(body)
}

/// Any JSON value, up to a few levels deep, with the envelope's key names.
fn any_json() -> impl Strategy<Value = Value> {
    json_with(any::<f64>().prop_map(Value::from).boxed())
}

/// JSON that reads back exactly: serde_json (without `float_roundtrip`) may
/// read a float back one ulp off, which is not the envelope's doing.
fn exact_json() -> impl Strategy<Value = Value> {
    json_with(
        any::<i32>()
            .prop_map(|n| Value::from(f64::from(n) / 4.0))
            .boxed(),
    )
}

fn json_with(number: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        number,
        any::<String>().prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(
            &[
                "success",
                "errors",
                "messages",
                "result",
                "result_info",
                "code",
                "message",
                "cursor",
                "name"
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z_]{0,8}",
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A JSON field that may be absent, `null`, or hold a value.
#[derive(Clone, Debug)]
enum Slot<T> {
    Absent,
    Null,
    Set(T),
}

fn slot<T: Clone + std::fmt::Debug>(
    value: impl Strategy<Value = T>,
) -> impl Strategy<Value = Slot<T>> {
    prop_oneof![
        Just(Slot::Absent),
        Just(Slot::Null),
        value.prop_map(Slot::Set)
    ]
}

fn put<T: Into<Value> + Clone>(obj: &mut Map<String, Value>, name: &str, slot: &Slot<T>) {
    match slot {
        Slot::Absent => {}
        Slot::Null => {
            obj.insert(name.into(), Value::Null);
        }
        Slot::Set(v) => {
            obj.insert(name.into(), v.clone().into());
        }
    }
}

fn set<T: Clone>(slot: &Slot<T>) -> Option<T> {
    match slot {
        Slot::Set(v) => Some(v.clone()),
        _ => None,
    }
}

/// An `errors`/`messages` entry as sent, and as it must parse.
fn message() -> impl Strategy<Value = (Value, Message)> {
    let text = prop_oneof![Just(None), any::<String>().prop_map(Some)];
    (slot(any::<u32>()), text, any::<bool>()).prop_map(|(code, text, extra)| {
        let mut obj = Map::new();
        put(&mut obj, "code", &code);
        if let Some(t) = &text {
            obj.insert("message".into(), json!(t));
        }
        if extra {
            obj.insert(
                "documentation_url".into(),
                json!("https://developers.cloudflare.com"),
            );
        }
        let want = Message {
            code: set(&code),
            message: text.unwrap_or_default(),
        };
        (Value::Object(obj), want)
    })
}

/// An envelope as sent, and the fields it must parse to.
#[derive(Clone, Debug)]
pub struct Sent {
    body: Value,
    success: bool,
    errors: Vec<Message>,
    messages: Vec<Message>,
    result: Option<Value>,
    result_info: Option<ResultInfo>,
}

pub fn envelope() -> impl Strategy<Value = Sent> {
    let list = || prop::option::of(prop::collection::vec(message(), 0..4));
    let info = (slot(any::<u64>()), slot(any::<String>()));
    (
        prop::option::of(any::<bool>()),
        list(),
        list(),
        slot(exact_json()),
        slot(info),
        any::<bool>(),
    )
        .prop_map(|(success, errors, messages, result, info, extra)| {
            let mut obj = Map::new();
            if let Some(s) = success {
                obj.insert("success".into(), json!(s));
            }
            for (name, list) in [("errors", &errors), ("messages", &messages)] {
                if let Some(l) = list {
                    obj.insert(
                        name.into(),
                        Value::Array(l.iter().map(|m| m.0.clone()).collect()),
                    );
                }
            }
            put(&mut obj, "result", &result);
            let result_info = match &info {
                Slot::Set((count, cursor)) => {
                    let mut i = Map::new();
                    put(&mut i, "count", count);
                    put(&mut i, "cursor", cursor);
                    obj.insert("result_info".into(), Value::Object(i));
                    Some(ResultInfo {
                        count: set(count),
                        cursor: set(cursor),
                    })
                }
                Slot::Null => {
                    obj.insert("result_info".into(), Value::Null);
                    None
                }
                Slot::Absent => None,
            };
            if extra {
                obj.insert("request_id".into(), json!("r-1"));
            }
            let wants = |l: Option<Vec<(Value, Message)>>| {
                l.unwrap_or_default().into_iter().map(|m| m.1).collect()
            };
            Sent {
                body: Value::Object(obj),
                success: success.unwrap_or(false),
                errors: wants(errors),
                messages: wants(messages),
                // `null` and absent both mean no result.
                result: set(&result).filter(|r| !r.is_null()),
                result_info,
            }
        })
}

/// `error_text` as documented: each error with its code, joined by `; `.
pub fn error_text(errors: &[Message], fallback: &str) -> String {
    if errors.is_empty() {
        return fallback.to_owned();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|m| match m.code {
            Some(c) => format!("{} (code {c})", m.message),
            None => m.message.clone(),
        })
        .collect();
    parts.join("; ")
}

#[test]
fn envelopes_parse_to_the_fields_sent() {
    check("envelope parses", envelope(), |sent| {
        let body = sent.body.to_string().into_bytes();
        let Some(env) = parse::<Value>(&body) else {
            return Err(TestCaseError::fail("not parsed"));
        };
        prop_assert_eq!(env.success, sent.success);
        prop_assert_eq!(&env.errors, &sent.errors);
        prop_assert_eq!(&env.messages, &sent.messages);
        prop_assert_eq!(&env.result, &sent.result);
        prop_assert_eq!(&env.result_info, &sent.result_info);
        prop_assert_eq!(env.code(), sent.errors.first().and_then(|m| m.code));
        prop_assert_eq!(
            env.error_text("fallback"),
            error_text(&sent.errors, "fallback")
        );
        Ok(())
    });
}

fn key_entry() -> impl Strategy<Value = (Value, KeyEntry)> {
    (any::<String>(), slot(any::<u64>()), slot(exact_json())).prop_map(
        |(name, expiration, metadata)| {
            let mut obj = Map::new();
            obj.insert("name".into(), json!(name));
            put(&mut obj, "expiration", &expiration);
            put(&mut obj, "metadata", &metadata);
            let want = KeyEntry {
                name,
                expiration: set(&expiration),
                metadata: set(&metadata).filter(|m| !m.is_null()),
            };
            (Value::Object(obj), want)
        },
    )
}

#[test]
fn list_results_parse_to_the_keys_sent() {
    check(
        "key list parses",
        (envelope(), prop::collection::vec(key_entry(), 0..6)),
        |(sent, keys)| {
            let mut body = sent.body;
            body["result"] = Value::Array(keys.iter().map(|k| k.0.clone()).collect());
            let env = parse::<Vec<KeyEntry>>(body.to_string().as_bytes());
            let want: Vec<KeyEntry> = keys.into_iter().map(|k| k.1).collect();
            prop_assert_eq!(env.and_then(|e| e.result), Some(want));
            Ok(())
        },
    );
}

/// A body Cloudflare, a proxy or a router might send: an envelope, text, HTML, bytes.
pub fn any_body() -> impl Strategy<Value = Vec<u8>> {
    let json_bytes: &'static [u8] = b"{}[]\":,\\-0123456789eEtfnu \x00\x80\xc3\xff";
    let tokens: &'static [&'static str] = &[
        "\"",
        "\\u",
        "\\ud800",
        "null",
        "1e999",
        "-1",
        "{}",
        "\u{e9}",
        "\u{1f600}",
    ];
    prop_oneof![
        envelope().prop_map(|s| s.body.to_string().into_bytes()),
        (envelope(), edits(json_bytes, tokens))
            .prop_map(|(s, e)| mutate(s.body.to_string().into_bytes(), &e)),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        any::<String>().prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..400),
        "\\PC{190,210}".prop_map(String::into_bytes),
    ]
}

#[test]
fn any_body_is_answered() {
    check("arbitrary body", any_body(), |body| {
        let generic = parse::<Value>(&body);
        let typed = parse::<Vec<KeyEntry>>(&body);
        // A list envelope is an envelope: the generic parse never refuses
        // what the typed one reads.
        prop_assert!(typed.is_none() || generic.is_some());
        if let Some(env) = generic {
            prop_assert_eq!(env.code(), env.errors.first().and_then(|m| m.code));
            prop_assert_eq!(
                env.error_text("fallback"),
                error_text(&env.errors, "fallback")
            );
        }
        Ok(())
    });
}
