//! Event parsing (both payload shapes, every rejection) and merge rules.

use tasks_domain::event::{Event, EventKind, Fields, parse};
use tasks_domain::{Status, Task, Timestamp, merge};

fn ok(subject: &str, payload: &str) -> Event {
    match parse(subject, payload.as_bytes()) {
        Ok(e) => e,
        Err(r) => unreachable!("{payload}: rejected: {}", r.reason),
    }
}

fn reason(subject: &str, payload: &[u8]) -> String {
    match parse(subject, payload) {
        Ok(e) => unreachable!("{}: accepted as {e:?}", String::from_utf8_lossy(payload)),
        Err(r) => r.reason,
    }
}

#[test]
fn flat_and_envelope_shapes_mean_the_same() {
    let flat = ok(
        "tasks.created",
        r#"{"id":"t-1","title":" Buy milk ","description":"2 l","status":"in_progress","correlationId":"c-1"}"#,
    );
    let env = ok(
        "tasks.created",
        r#"{"correlationId":"c-1","data":{"id":"t-1","title":"Buy milk","description":"2 l","status":"in-progress"}}"#,
    );
    assert_eq!(flat, env);
    assert_eq!(flat.kind, EventKind::Created);
    assert_eq!(flat.fields.title.as_deref(), Some("Buy milk"));
    assert_eq!(flat.fields.status, Some(Status::InProgress));
    assert_eq!(flat.correlation_id.as_deref(), Some("c-1"));
}

#[test]
fn correlation_ids_come_from_either_level_and_must_be_sane() {
    let inner = ok(
        "tasks.deleted",
        r#"{"data":{"id":"t-1","correlationId":"inner"}}"#,
    );
    assert_eq!(inner.correlation_id.as_deref(), Some("inner"));
    let insane = ok(
        "tasks.deleted",
        r#"{"id":"t-1","correlationId":"has space"}"#,
    );
    assert_eq!(insane.correlation_id, None);
    let metadata = ok(
        "tasks.deleted",
        r#"{"type":"x","source":"y","data":{"id":"t-1"}}"#,
    );
    assert_eq!(metadata.id, "t-1");
}

#[test]
fn descriptions_can_be_cleared_and_read_only_fields_are_ignored() {
    let e = ok(
        "tasks.updated",
        r#"{"id":"t-1","description":null,"version":9,"createdAt":"x"}"#,
    );
    assert_eq!(e.fields.description, Some(None));
    let blank = ok("tasks.updated", r#"{"id":"t-1","description":"  "}"#);
    assert_eq!(blank.fields.description, Some(None));
    let lines = ok("tasks.updated", r#"{"id":"t-1","description":"a\tb\r\nc"}"#);
    assert_eq!(lines.fields.description, Some(Some("a\tb\r\nc".into())));
}

#[test]
fn deletes_need_only_an_id() {
    let e = ok("tasks.deleted", r#"{"id":"t-9","title":""}"#);
    assert_eq!(e.kind, EventKind::Deleted);
    assert!(e.fields.is_empty());
}

#[test]
fn every_rejection_has_a_readable_reason() {
    let long_title = format!(r#"{{"id":"t-1","title":"{}"}}"#, "x".repeat(10_000));
    let long_desc = format!(
        r#"{{"id":"t-1","title":"a","description":"{}"}}"#,
        "d".repeat(4_001)
    );
    let long_id = format!(r#"{{"id":"{}","title":"a"}}"#, "i".repeat(129));
    let huge = vec![b' '; 1024 * 1024 + 1];
    let table: Vec<(&str, &[u8], &str)> = vec![
        // Control characters (JSON escapes them, the parsed text holds them).
        (
            "tasks.created",
            br#"{"id":"t-1","title":"a\u0000b"}"#,
            "title must not contain control characters (found U+0000 at position 2)",
        ),
        (
            "tasks.created",
            br#"{"id":"t-1","title":"tab\tin title"}"#,
            "title must not contain control characters (found U+0009 at position 4)",
        ),
        (
            "tasks.updated",
            br#"{"id":"t-1","description":"bell \u0007"}"#,
            "description must not contain control characters other than tab and line breaks (found U+0007 at position 6)",
        ),
        // Known fields of the wrong JSON type.
        (
            "tasks.created",
            br#"{"correlationId":{"x":1},"data":{"id":"t-1","title":"a"}}"#,
            "correlationId must be a string, not an object",
        ),
        (
            "tasks.created",
            br#"{"id":"t-1","title":"a","correlationId":7}"#,
            "correlationId must be a string, not a number",
        ),
        (
            "tasks.deleted",
            br#"{"id":"t-1","createdAt":[]}"#,
            "createdAt must be a string, not an array",
        ),
        (
            "tasks.updated",
            br#"{"id":"t-1","title":"a","version":"3"}"#,
            "version must be a number, not a string",
        ),
        ("tasks.created", b"{not json", "payload is not valid JSON"),
        (
            "tasks.created",
            b"\x00\xff\xfe garbage",
            "payload is not valid JSON",
        ),
        ("tasks.created", b"", "payload is not valid JSON"),
        (
            "tasks.created",
            b"[1,2]",
            "payload must be a JSON object, not an array",
        ),
        (
            "tasks.created",
            b"\"t-1\"",
            "payload must be a JSON object, not a string",
        ),
        ("tasks.created", b"{}", "id is required"),
        ("tasks.created", br#"{"title":"no id"}"#, "id is required"),
        (
            "tasks.created",
            br#"{"id":42,"title":"a"}"#,
            "id must be a string, not a number",
        ),
        (
            "tasks.created",
            br#"{"id":"a b","title":"a"}"#,
            "id may only contain",
        ),
        (
            "tasks.created",
            long_id.as_bytes(),
            "id must be at most 128 characters",
        ),
        ("tasks.created", br#"{"id":"t-1"}"#, "title is required"),
        (
            "tasks.created",
            br#"{"id":"t-1","title":"   "}"#,
            "title must not be empty",
        ),
        (
            "tasks.created",
            br#"{"id":"t-1","title":7}"#,
            "title must be a string, not a number",
        ),
        (
            "tasks.created",
            long_title.as_bytes(),
            "title must be at most 200 characters (got 10000)",
        ),
        (
            "tasks.created",
            long_desc.as_bytes(),
            "description must be at most 4000 characters",
        ),
        (
            "tasks.created",
            br#"{"id":"t-1","title":"a","description":["x"]}"#,
            "description must be a string or null, not an array",
        ),
        (
            "tasks.created",
            br#"{"id":"t-1","title":"a","status":"done"}"#,
            "unknown status \"done\"",
        ),
        (
            "tasks.created",
            br#"{"id":"t-1","title":"a","status":true}"#,
            "status must be a string, not a boolean",
        ),
        (
            "tasks.created",
            br#"{"id":"t-1","titel":"typo"}"#,
            "unknown field \"titel\"",
        ),
        (
            "tasks.created",
            br#"{"data":"t-1"}"#,
            "data must be a JSON object, not a string",
        ),
        (
            "tasks.updated",
            br#"{"id":"t-1"}"#,
            "an update must set at least one of",
        ),
        (
            "tasks.archived",
            br#"{"id":"t-1"}"#,
            "unknown subject \"tasks.archived\"",
        ),
        ("tasks.created", &huge, "the limit is 1048576"),
    ];
    for (subject, payload, want) in table {
        let got = reason(subject, payload);
        assert!(
            got.contains(want),
            "{subject} {}: got {got:?}, want {want:?}",
            String::from_utf8_lossy(&payload[..payload.len().min(60)])
        );
    }
}

#[test]
fn rejections_keep_the_correlation_id_and_task_id_they_could_read() {
    let r = parse(
        "tasks.created",
        br#"{"correlationId":"c-9","data":{"id":"t-1","title":""}}"#,
    )
    .expect_err("empty title");
    assert_eq!(r.correlation_id.as_deref(), Some("c-9"));
    assert_eq!(r.task_id.as_deref(), Some("t-1"));
}

fn fields(
    title: Option<&str>,
    description: Option<Option<&str>>,
    status: Option<Status>,
) -> Fields {
    Fields {
        title: title.map(str::to_owned),
        description: description.map(|d| d.map(str::to_owned)),
        status,
    }
}

fn stored() -> Task {
    Task {
        id: "t-1".into(),
        title: "Old".into(),
        description: Some("keep me".into()),
        status: Status::InProgress,
        created_at: Timestamp(1_000),
        updated_at: Timestamp(2_000),
        version: 4,
        stream_seq: None,
        stream_epoch: None,
    }
}

#[test]
fn create_of_a_new_id_starts_at_version_one_and_pending() {
    let t = merge::created(
        None,
        "t-1",
        &fields(Some("New"), None, None),
        Timestamp(5_000),
    );
    assert_eq!(
        (t.version, t.status, t.created_at, t.updated_at),
        (1, Status::Pending, Timestamp(5_000), Timestamp(5_000))
    );
    assert_eq!(t.description, None);
}

#[test]
fn create_of_an_existing_id_overwrites_given_fields_and_keeps_created_at() {
    let t = merge::created(
        Some(&stored()),
        "t-1",
        &fields(Some("Again"), None, None),
        Timestamp(9_000),
    );
    assert_eq!(t.title, "Again");
    assert_eq!(t.description.as_deref(), Some("keep me"));
    assert_eq!(t.status, Status::InProgress);
    assert_eq!(
        (t.created_at, t.updated_at, t.version),
        (Timestamp(1_000), Timestamp(9_000), 5)
    );
}

#[test]
fn update_merges_bumps_version_and_never_moves_time_backwards() {
    let t = merge::updated(
        &stored(),
        &fields(None, Some(None), Some(Status::Completed)),
        Timestamp(3_000),
    );
    assert_eq!(t.title, "Old");
    assert_eq!(t.description, None);
    assert_eq!(t.status, Status::Completed);
    assert_eq!((t.version, t.updated_at), (5, Timestamp(3_000)));
    let skewed = merge::updated(&stored(), &fields(Some("x"), None, None), Timestamp(10));
    assert_eq!(skewed.updated_at, Timestamp(2_000));
}
