//! Strategies shared by the domain's properties: ids, arbitrary JSON, and
//! what a fuzzer pokes into JSON.

use proptest::prelude::*;
use serde_json::Value;

/// Bytes JSON parsers branch on.
pub const JSON_BYTES: &[u8] = b"{}[]\":,\\-+.0123456789eEtfnu \t\n\x00\x7f\x80\xc3\xff";

/// Fragments that turn valid JSON into near-valid JSON.
pub const JSON_TOKENS: &[&str] = &[
    "\"",
    "\\",
    "\\u",
    "\\ud800",
    "\\u0000",
    "null",
    "true",
    "1e999",
    "-0",
    "{}",
    "[]",
    "{\"data\":",
    ",\"id\":\"x\"",
    ",\"titel\":1",
    "\u{feff}",
    "é",
    "\u{10ffff}",
];

/// A valid task id: 1-128 characters of `A-Z a-z 0-9 . _ : -`.
pub fn id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,128}"
}

/// The README's id rule, written out independently of the crate's.
pub fn is_valid_id(s: &str) -> bool {
    (1..=128).contains(&s.chars().count())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
}

/// Object keys: mostly the names the parser looks for.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&[
            "id", "title", "description", "status", "correlationId", "createdAt",
            "updatedAt", "version", "data", "titel",
        ][..])
        .prop_map(str::to_owned),
        1 => "[a-zA-Z_]{0,8}",
    ]
}

/// Strings: mostly ones that mean something to the parser.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "",
                " ",
                "pending",
                "in_progress",
                "in-progress",
                "completed",
                "cancelled",
                "done",
                "2026-11-22T06:01:54.123Z",
            ][..]
        )
        .prop_map(str::to_owned),
        id(),
        any::<String>(),
    ]
}

/// Any JSON value, up to a few levels deep.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Non-finite floats become null, as serde_json writes them.
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}
