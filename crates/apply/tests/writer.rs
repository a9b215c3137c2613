//! The writer over in-memory stores: apply, dead letters, outbox, CAS.

use tasks_apply::testing::Harness;
use tasks_apply::{CAS_ATTEMPTS, Handled, Incoming};
use tasks_domain::{Status, keys};
use tasks_kv::testing::{HookAt, Hooked};
use tasks_kv::{AtomicKv, StoreError};
use tasks_outbox::OutboxEntry;

/// The harness at one second per message, so each write has its own time.
fn harness() -> Harness {
    let h = Harness::new();
    h.step.set(1_000);
    h
}

/// Delivers `payload` on `subject` over `tasks` with an optional correlation header.
fn send_on<T: AtomicKv>(
    h: &Harness,
    tasks: &T,
    subject: &str,
    payload: &[u8],
    header: Option<&str>,
) -> Result<Handled, StoreError> {
    h.deliver_on(
        tasks,
        &Incoming {
            subject,
            payload,
            header_correlation_id: header,
            handler_timed_out_ms: None,
            stream_sequence: None,
            stream_epoch: None,
        },
    )
}

#[test]
fn create_update_delete_in_both_shapes() {
    let h = harness();
    assert!(
        matches!(h.send("tasks.created", r#"{"id":"t-1","title":"Buy milk","correlationId":"c-1"}"#), Handled::Applied { correlation_id, .. } if correlation_id == "c-1")
    );
    let created = h.task("t-1").expect("created");
    assert_eq!(
        (created.version, created.status, created.created_at),
        (1, Status::Pending, created.updated_at)
    );
    assert!(h.logged("[c-1] CREATE task=t-1"));
    assert!(
        h.lines
            .borrow()
            .iter()
            .any(|l| l.starts_with("[c-1] KV PUT task:t-1 — OK (") && l.ends_with(" ms)"))
    );
    let stamp_after_create = h.stamp().expect("stamp written");

    h.send(
        "tasks.updated",
        r#"{"correlationId":"c-2","data":{"id":"t-1","status":"completed","description":"2 l"}}"#,
    );
    let updated = h.task("t-1").expect("still there");
    assert_eq!(
        (updated.version, updated.status, updated.title.as_str()),
        (2, Status::Completed, "Buy milk")
    );
    assert_eq!(updated.description.as_deref(), Some("2 l"));
    assert!(updated.updated_at > created.updated_at);
    assert_eq!(
        h.stamp(),
        Some(stamp_after_create.clone()),
        "updates keep the id set"
    );

    h.send("tasks.deleted", r#"{"data":{"id":"t-1"}}"#);
    assert_eq!(h.task("t-1"), None);
    assert_ne!(h.stamp(), Some(stamp_after_create));
    assert!(
        matches!(
            h.send("tasks.deleted", r#"{"id":"t-1"}"#),
            Handled::Applied { .. }
        ),
        "deletes are idempotent"
    );
}

#[test]
fn create_of_an_existing_id_overwrites_and_says_so() {
    let h = harness();
    h.send(
        "tasks.created",
        r#"{"id":"t-1","title":"One","status":"in_progress"}"#,
    );
    let first = h.task("t-1").expect("created");
    h.send("tasks.created", r#"{"id":"t-1","title":"Two"}"#);
    let second = h.task("t-1").expect("still there");
    assert_eq!(
        (second.title.as_str(), second.status, second.version),
        ("Two", Status::InProgress, 2)
    );
    assert_eq!(second.created_at, first.created_at);
    assert!(h.logged("existed: overwrote the given fields, kept createdAt (version 2)"));
}

#[test]
fn malformed_events_are_dead_lettered_with_reason_and_payload() {
    let h = harness();
    let garbage = b"\x00\xffbinary";
    let cases: [(&str, &[u8]); 4] = [
        ("tasks.created", br#"{"id":"t-1","title":""}"#),
        ("tasks.created", garbage),
        ("tasks.updated", br#"{"id":"ghost","title":"x"}"#),
        ("tasks.renamed", br#"{"id":"t-1"}"#),
    ];
    for (subject, payload) in cases {
        let handled = send_on(&h, &h.tasks, subject, payload, Some("hdr-cid")).expect("recorded");
        assert!(matches!(handled, Handled::Rejected { .. }), "{handled:?}");
    }
    let dlq = h.dead_letters();
    assert_eq!(dlq.len(), 4);
    let reasons: Vec<&str> = dlq.iter().map(|d| d.reason.as_str()).collect();
    assert!(
        reasons[0].contains("title must not be empty"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("not valid JSON"), "{reasons:?}");
    assert!(
        reasons[2].contains("update of unknown task \"ghost\""),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("unknown subject"), "{reasons:?}");
    assert_eq!(
        dlq[1].raw.bytes(),
        garbage,
        "binary payloads are kept exactly"
    );
    assert!(dlq.iter().all(|d| d.correlation_id == "hdr-cid"));
    assert_eq!(dlq[2].task_id.as_deref(), Some("ghost"));
    assert!(h.logged("[hdr-cid] REJECT tasks.created: title must not be empty"));
    assert_eq!(h.tasks.keys_with_prefix(keys::TASK_PREFIX).len(), 0);
}

#[test]
fn correlation_id_precedence_payload_then_header_then_generated() {
    let h = harness();
    let got = |payload: &str, header: Option<&str>| match send_on(
        &h,
        &h.tasks,
        "tasks.deleted",
        payload.as_bytes(),
        header,
    ) {
        Ok(Handled::Applied { correlation_id, .. }) => correlation_id,
        other => unreachable!("{other:?}"),
    };
    assert_eq!(
        got(
            r#"{"id":"a","correlationId":"from-payload"}"#,
            Some("from-header")
        ),
        "from-payload"
    );
    assert_eq!(got(r#"{"id":"a"}"#, Some("from-header")), "from-header");
    let generated = got(r#"{"id":"a"}"#, Some("bad header!"));
    assert!(
        generated.starts_with('u') && generated != "bad header!",
        "{generated}"
    );
}

#[test]
fn cas_conflicts_are_retried_then_deferred() {
    let h = harness();
    h.send("tasks.created", r#"{"id":"t-1","title":"x"}"#);
    h.tasks.inject_conflicts(2);
    assert!(matches!(
        h.send("tasks.updated", r#"{"id":"t-1","status":"completed"}"#),
        Handled::Applied { .. }
    ));
    assert_eq!(
        h.task("t-1").map(|t| (t.version, t.status)),
        Some((2, Status::Completed))
    );
    assert!(h.logged("KV CAS task:t-1 — conflict, attempt 2/8; re-reading"));

    h.tasks.inject_conflicts(CAS_ATTEMPTS);
    assert!(matches!(
        h.send("tasks.updated", r#"{"id":"t-1","title":"y"}"#),
        Handled::Deferred { .. }
    ));
    let outbox = h.local.keys_with_prefix(keys::OUTBOX_PREFIX);
    assert_eq!(outbox.len(), 1);
}

#[test]
fn two_concurrent_updates_never_lose_one() {
    let h = harness();
    h.send("tasks.created", r#"{"id":"t-1","title":"Start"}"#);
    // A competing update lands between this writer's read and its swap.
    let racing = Hooked::new(&h.tasks, HookAt::Write, || {
        h.send("tasks.updated", r#"{"id":"t-1","status":"completed"}"#);
    });
    let handled = send_on(
        &h,
        &racing,
        "tasks.updated",
        br#"{"id":"t-1","title":"Renamed"}"#,
        None,
    );
    assert!(
        matches!(handled, Ok(Handled::Applied { .. })),
        "{handled:?}"
    );
    let t = h.task("t-1").expect("exists");
    assert_eq!(
        (t.title.as_str(), t.status, t.version),
        ("Renamed", Status::Completed, 3)
    );
    assert!(h.logged("conflict, attempt 1/8"));
}

#[test]
fn store_outage_defers_to_the_outbox_with_the_error() -> Result<(), serde_json::Error> {
    let h = harness();
    h.tasks.set_down(true);
    let handled = send_on(
        &h,
        &h.tasks,
        "tasks.created",
        br#"{"id":"t-7","title":"Later","correlationId":"c-7"}"#,
        None,
    );
    let Ok(Handled::Deferred { key, .. }) = handled else {
        unreachable!("{handled:?}")
    };
    let entry: OutboxEntry = serde_json::from_slice(&h.local.peek(&key).unwrap_or_default())?;
    assert_eq!(
        (
            entry.task_id.as_str(),
            entry.backoff.retries,
            entry.correlation_id.as_str()
        ),
        ("t-7", 0, "c-7")
    );
    assert_eq!(
        entry.backoff.next_attempt_at.millis() - entry.received_at.millis(),
        1_000
    );
    assert!(
        entry.backoff.errors[0].contains("KV GET task:t-7 failed: store unavailable"),
        "{:?}",
        entry.backoff.errors
    );
    assert_eq!(
        entry.raw.bytes(),
        br#"{"id":"t-7","title":"Later","correlationId":"c-7"}"#
    );
    assert!(h.logged("[c-7] DEFER tasks.created task=t-7 — KV GET task:t-7 failed"));
    assert!(h.logged("[c-7] KV GET task:t-7 — FAILED ("));

    h.local.set_down(true);
    let lost = send_on(
        &h,
        &h.tasks,
        "tasks.created",
        br#"{"id":"t-8","title":"x"}"#,
        None,
    );
    assert!(
        lost.is_err(),
        "nothing could record it, so the caller must hear: {lost:?}"
    );
    assert!(h.logged("the event is NOT recorded"));
    Ok(())
}

#[test]
fn a_new_task_is_one_write_with_its_stamp_and_updates_use_cas() {
    let h = harness();
    h.send("tasks.created", r#"{"id":"t-1","title":"x"}"#);
    let c = h.tasks.calls();
    assert_eq!(
        (c.set_many, c.cas_write),
        (1, 0),
        "document and stamp in one set-many"
    );
    assert!(h.stamp().is_some());
    h.tasks.reset_calls();
    h.send("tasks.updated", r#"{"id":"t-1","title":"y"}"#);
    let c = h.tasks.calls();
    assert_eq!(
        (c.set_many, c.cas_write),
        (0, 1),
        "updates: compare-and-swap, no stamp"
    );
}

#[test]
fn verify_writes_reads_each_write_back() {
    let h = harness();
    h.verify.set(true);
    h.send(
        "tasks.created",
        r#"{"id":"t-1","title":"A","correlationId":"c-1"}"#,
    );
    h.send(
        "tasks.updated",
        r#"{"id":"t-1","title":"B","correlationId":"c-2"}"#,
    );
    h.send("tasks.deleted", r#"{"id":"t-1","correlationId":"c-3"}"#);
    assert!(h.logged("[c-1] KV verify task:t-1 → ok"));
    assert!(h.logged("[c-2] KV verify task:t-1 → ok"));
    assert!(h.logged("[c-3] KV verify task:t-1 → ok"));

    // A store that loses the write is caught.
    h.send("tasks.created", r#"{"id":"t-2","title":"A"}"#);
    let lossy = Hooked::over(&h.tasks).lossy();
    let handled = send_on(
        &h,
        &lossy,
        "tasks.updated",
        br#"{"id":"t-2","title":"Lost","correlationId":"c-4"}"#,
        None,
    );
    assert!(
        matches!(handled, Ok(Handled::Applied { .. })),
        "{handled:?}"
    );
    assert!(h.logged("[c-4] KV verify task:t-2 → mismatch (holds version 1)"));

    h.verify.set(false);
    h.send(
        "tasks.updated",
        r#"{"id":"t-2","title":"C","correlationId":"c-5"}"#,
    );
    assert!(!h.logged("[c-5] KV verify"));
}

/// Delivers `payload` on `subject` as stream message `seq`.
fn deliver_seq(h: &Harness, subject: &str, payload: &str, seq: u64) -> Handled {
    h.deliver_on(
        &h.tasks,
        &Incoming {
            subject,
            payload: payload.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: None,
            stream_sequence: Some(seq),
            stream_epoch: None,
        },
    )
    .expect("recorded")
}

/// A stream event at `seq` of stream epoch 4 that can never apply.
fn poison(seq: u64) -> Incoming<'static> {
    Incoming {
        subject: "tasks.created",
        payload: b"{oops",
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: Some(seq),
        stream_epoch: Some(4),
    }
}

#[test]
fn a_stream_event_two_holders_dead_letter_at_the_same_time_is_one_dead_letter() {
    // One instance paused between reading the event's marker and writing
    // its dead letter, past ack_wait; the redelivery, at another instance,
    // files the event in that pause.
    let h = harness();
    let msg = poison(9);
    let other = std::cell::RefCell::new(None);
    let local = Hooked::new(&h.local, HookAt::Write, || {
        *other.borrow_mut() = Some(h.deliver_on(&h.tasks, &msg));
    });
    let first = h.with_stores(&h.tasks, &local, |w| w.handle(&msg));
    let second = other.take().expect("the other holder ran");
    let key = |r: Result<Handled, StoreError>| match r {
        Ok(Handled::Rejected { key, .. }) => key,
        other => unreachable!("{other:?}"),
    };
    let (first, second) = (key(first), key(second));
    let letters = h.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(first, second, "both name the one dead letter");
    assert!(h.logged(&format!(
        "(delivered again: dead-lettered already as {first}) (stream sequence 9)"
    )));
}

#[test]
fn a_dead_letter_whose_writer_stopped_after_marking_it_is_written_by_the_redelivery() {
    // The first holder marked the event as filed under its key and died
    // before writing the record: the redelivery writes it under that key.
    let h = harness();
    let marked = keys::dead_letter(1, "died");
    h.local
        .put(&keys::dead_letter_seen(Some(4), 9), marked.clone());
    let handled = h.deliver_on(&h.tasks, &poison(9)).expect("recorded");
    assert!(
        matches!(&handled, Handled::Rejected { key, .. } if *key == marked),
        "{handled:?}"
    );
    let letters = h.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].raw.bytes(), letters[0].stream_seq),
        (b"{oops".to_vec(), Some(9))
    );
    assert!(h.local.peek(&marked).is_some());
    // Another event, and the same one once more: one record each.
    h.deliver_on(&h.tasks, &poison(10)).expect("recorded");
    h.deliver_on(&h.tasks, &poison(9)).expect("recorded");
    assert_eq!(h.dead_letters().len(), 2);
    // One replayed from the dead letters since: a delivery of it again is
    // not filed again (the replay, in the outbox, has it).
    h.local.put(
        &keys::dead_letter_seen(Some(4), 11),
        keys::dead_letter_replayed(&marked),
    );
    h.deliver_on(&h.tasks, &poison(11)).expect("recorded");
    assert_eq!(h.dead_letters().len(), 2);
    assert!(h.logged(&format!(
        "(delivered again: dead-lettered as {marked} and replayed since) (stream sequence 11)"
    )));
}

#[test]
fn a_redelivered_stream_message_applies_once() {
    let h = harness();
    deliver_seq(&h, "tasks.created", r#"{"id":"t-1","title":"A"}"#, 5);
    // The crash came after the commit, before the acknowledgement: delivered again.
    deliver_seq(&h, "tasks.created", r#"{"id":"t-1","title":"A"}"#, 5);
    let t = h.task("t-1").expect("stored");
    assert_eq!((t.version, t.stream_seq), (1, Some(5)));
    assert!(h.logged("SKIP CREATE task=t-1 — stream sequence 5 is applied already (last 5)"));
    deliver_seq(&h, "tasks.updated", r#"{"id":"t-1","title":"B"}"#, 7);
    // Older than the last applied: also a redelivery.
    deliver_seq(&h, "tasks.updated", r#"{"id":"t-1","title":"stale"}"#, 6);
    deliver_seq(&h, "tasks.updated", r#"{"id":"t-1","title":"B"}"#, 7);
    let t = h.task("t-1").expect("stored");
    assert_eq!(
        (t.title.as_str(), t.version, t.stream_seq),
        ("B", 2, Some(7))
    );
    // Core NATS events (no sequence) apply as before and keep the last sequence.
    h.send("tasks.updated", r#"{"id":"t-1","status":"completed"}"#);
    let t = h.task("t-1").expect("stored");
    assert_eq!((t.version, t.stream_seq), (3, Some(7)));
    // The sequence stays out of what the API shows: only the stored document has it.
    let doc: serde_json::Value =
        serde_json::from_slice(&h.tasks.peek("task:t-1").expect("doc")).expect("json");
    assert_eq!(doc["streamSeq"], 7);
}

#[test]
fn each_line_about_a_stream_event_names_its_stream_sequence_and_a_core_message_s_names_none() {
    let h = harness();
    deliver_seq(&h, "tasks.created", r#"{"id":"t-1","title":"A"}"#, 5);
    assert!(h.logged("CREATE task=t-1 (stream sequence 5)"));
    deliver_seq(&h, "tasks.updated", r#"{"id":"nobody","title":"B"}"#, 6);
    assert!(
        h.logged(r#"REJECT tasks.updated: update of unknown task "nobody" (stream sequence 6)"#)
    );
    deliver_seq(&h, "tasks.updated", r#"{"id":"nobody","title":"B"}"#, 6);
    assert!(h.logged("(delivered again: dead-lettered already as "));
    assert!(h.logged(") (stream sequence 6)"));
    // A batch: one line per event, each with its own sequence.
    let payloads = [r#"{"id":"t-2","title":"C"}"#, r#"{"id":"t-2","title":"D"}"#];
    let incoming: Vec<Incoming> = payloads
        .iter()
        .zip([7, 8])
        .map(|(p, seq)| Incoming {
            subject: if seq == 7 {
                "tasks.created"
            } else {
                "tasks.updated"
            },
            payload: p.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: None,
            stream_sequence: Some(seq),
            stream_epoch: None,
        })
        .collect();
    let outcomes = h.with_writer(&h.tasks, |w| w.handle_batch(&incoming));
    assert!(outcomes.iter().all(Result::is_ok));
    assert!(h.logged("CREATE task=t-2 (stream sequence 7)"));
    assert!(h.logged("UPDATE task=t-2 (stream sequence 8)"));
    // Core NATS: no sequence, nothing appended.
    h.send("tasks.created", r#"{"id":"t-3","title":"E"}"#);
    assert!(h.logged("CREATE task=t-3"));
    assert!(!h.logged("task=t-3 (stream"));
}
