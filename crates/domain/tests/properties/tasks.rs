//! Stored task documents: a serialized task parses back to itself, and any
//! document the store hands back is parsed or refused without a panic.

use proptest::prelude::*;
use tasks_domain::{Status, Task, Timestamp};

use crate::json::{JSON_BYTES, JSON_TOKENS, any_json, id};
use tasks_proptest_kit::{check, edits, fed, mutate};

fn from_json(doc: &[u8]) -> Result<Task, serde_json::Error> {
    fed();
    Task::from_json(doc)
}

/// Milliseconds from year 0 to year 9999, the range the canonical form
/// covers; the edges and today's times come up more often than chance.
fn millis() -> impl Strategy<Value = i64> {
    prop_oneof![
        -62_167_219_200_000..=253_402_300_799_999i64,
        1_700_000_000_000..=1_900_000_000_000i64,
        prop::sample::select(&[-62_167_219_200_000, 0, -1, 253_402_300_799_999][..]),
    ]
}

fn valid_task() -> impl Strategy<Value = Task> {
    (
        id(),
        "[^\\s\\pC](\\PC{0,40}[^\\s\\pC])?",
        // Control characters other than tab and line breaks are refused.
        prop::option::of(any::<String>().prop_map(|d| {
            d.replace(
                |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r'),
                "c",
            )
        })),
        prop::sample::select(&Status::ALL[..]),
        millis(),
        millis(),
        any::<u64>(),
    )
        .prop_map(
            |(id, title, description, status, created, updated, version)| Task {
                id,
                title,
                description,
                status,
                created_at: Timestamp(created),
                updated_at: Timestamp(updated),
                version,
                stream_seq: None,
                stream_epoch: None,
            },
        )
}

#[test]
fn serialized_tasks_parse_back() {
    check("task round trip", valid_task(), |task| {
        prop_assert_eq!(task.validate(), Ok(()));
        prop_assert_eq!(from_json(&task.to_json()).ok(), Some(task));
        Ok(())
    });
}

#[test]
fn any_task_document_is_answered() {
    let docs = prop_oneof![
        (valid_task(), edits(JSON_BYTES, JSON_TOKENS))
            .prop_map(|(task, e)| mutate(task.to_json(), &e)),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..256),
    ];
    check("arbitrary task document", docs, |doc| {
        // Whatever parses must serialize to a document that parses to the
        // same task, or a read-modify-write would corrupt it.
        if let Ok(task) = from_json(&doc) {
            prop_assert_eq!(from_json(&task.to_json()).ok(), Some(task));
        }
        Ok(())
    });
}
