//! The outbox replay over in-memory stores: schedule, order, claims, dead
//! letters and their replay, counter reconciliation.

use std::cell::RefCell;

use tasks_apply::testing::{Harness, feed_changes};
use tasks_apply::{Handled, Incoming};
use tasks_domain::{Status, Timestamp, keys};
use tasks_kv::AtomicKv;
use tasks_kv::backoff::{MAX_ATTEMPTS, SCHEDULE_MILLIS, delay_after};
use tasks_kv::lease::Claim;
use tasks_kv::testing::{HookAt, Hooked};
use tasks_outbox::dead_letters::{self, DeadLetter};
use tasks_outbox::health::WRITER_CIRCUIT_MILLIS;
use tasks_outbox::{OutboxEntry, ReplayError, replay_dead_letter};
use tasks_retry::TickReport;
use tasks_retry::due_queues;
use tasks_retry::testing::Tick;

const START: i64 = Harness::START;

#[test]
fn the_schedule_is_1_3_10_20_30_seconds_then_dead() {
    assert_eq!(SCHEDULE_MILLIS, [1_000, 3_000, 10_000, 20_000, 30_000]);
    let waits: Vec<Option<i64>> = (0..=MAX_ATTEMPTS).map(delay_after).collect();
    assert_eq!(
        waits,
        [
            Some(1_000),
            Some(3_000),
            Some(10_000),
            Some(20_000),
            Some(30_000),
            None
        ]
    );
}

fn entry(task: &str, next: i64, claim_until: Option<i64>) -> OutboxEntry {
    let mut e = OutboxEntry::new("tasks.updated", b"{}", "c", task, Timestamp(0));
    e.backoff.next_attempt_at = Timestamp(next);
    e.claim = claim_until.map(|u| Claim {
        token: "x".into(),
        until: Timestamp(u),
    });
    e
}

#[test]
fn due_queues_group_by_task_in_outbox_order_and_skip_held_tasks() {
    let now = Timestamp(100);
    let records = vec![
        (keys::outbox(5, "b"), entry("b", 0, None)),
        (keys::outbox(2, "a"), entry("a", 200, None)), // not due: holds a
        (keys::outbox(3, "b"), entry("b", 0, None)),
        (keys::outbox(4, "a"), entry("a", 0, None)),
        (keys::outbox(1, "c"), entry("c", 0, Some(150))), // live claim
        (keys::outbox(6, "d"), entry("d", 0, Some(50))),  // lapsed claim
    ];
    let queues = due_queues(records, now);
    let got: Vec<(&str, Vec<&str>)> = queues
        .iter()
        .map(|q| {
            (
                q.task_id.as_str(),
                q.records.iter().map(|(k, _)| k.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("b", vec!["outbox:000000000003:b", "outbox:000000000005:b"]),
            ("d", vec!["outbox:000000000006:d"]),
        ]
    );
}

#[test]
fn an_outage_defers_queues_and_then_replays_in_publish_order() {
    let h = Harness::new();
    h.tasks.set_down(true);
    assert!(matches!(
        h.send(
            "tasks.created",
            r#"{"id":"t-1","title":"Buy milk","correlationId":"c-1"}"#
        ),
        Handled::Deferred { .. }
    ));
    h.tasks.set_down(false);
    // The store is back, but t-1 has a deferred create: the update must not
    // overtake it (it would fail as an update of an unknown task).
    let queued = h.send(
        "tasks.updated",
        r#"{"id":"t-1","status":"in-progress","correlationId":"c-2"}"#,
    );
    assert!(
        matches!(queued, Handled::Queued { behind: 1, .. }),
        "{queued:?}"
    );
    assert!(matches!(
        h.send(
            "tasks.updated",
            r#"{"id":"t-1","title":"Buy oat milk","correlationId":"c-3"}"#
        ),
        Handled::Queued { behind: 2, .. }
    ));
    assert!(h.logged("[c-2] QUEUE tasks.updated task=t-1 behind 1 deferred event(s)"));
    assert_eq!(h.task("t-1"), None);
    assert_eq!(h.pending("t-1"), Some(3));

    // The store is back: the next run's probe (every run probes while the
    // store counts as down) finds it and replays all three, in order.
    let report = h.tick();
    assert_eq!((report.applied, report.dead), (3, 0));
    let t = h.task("t-1").expect("applied");
    assert_eq!(
        (t.title.as_str(), t.status, t.version),
        ("Buy oat milk", Status::InProgress, 3)
    );
    assert_eq!(t.created_at, Timestamp(START + 1), "the event's own time");
    assert!(h.outbox().is_empty());
    assert_eq!(
        h.pending("t-1"),
        None,
        "the counter is gone with the records"
    );
    assert!(h.logged("[c-1] RETRY attempt=1/5 task=t-1 — OK"));
    assert!(h.logged("[c-3] RETRY attempt=1/5 task=t-1 — OK"));

    // With nothing pending, events apply directly again.
    assert!(matches!(
        h.send("tasks.updated", r#"{"id":"t-1","status":"completed"}"#),
        Handled::Applied { .. }
    ));
}

#[test]
fn five_failed_retries_dead_letter_the_event_and_what_waits_behind_it() {
    let h = Harness::new();
    h.step.set(0);
    h.tasks.set_down(true);
    h.send(
        "tasks.created",
        r#"{"id":"t-1","title":"A","correlationId":"c-1"}"#,
    );
    h.send(
        "tasks.updated",
        r#"{"id":"t-1","status":"completed","correlationId":"c-2"}"#,
    );
    h.send(
        "tasks.created",
        r#"{"id":"t-2","title":"B","correlationId":"c-9"}"#,
    );
    for (n, wait) in SCHEDULE_MILLIS.iter().enumerate() {
        // One millisecond early: nothing is due yet.
        h.advance(wait - 1);
        assert_eq!(h.tick().rescheduled, 0, "retry {} too early", n + 1);
        h.advance(1);
        let r = h.tick();
        if n + 1 < MAX_ATTEMPTS as usize {
            assert_eq!((r.rescheduled, r.dead), (2, 0), "retry {}", n + 1);
        } else {
            assert_eq!((r.rescheduled, r.dead), (0, 3));
        }
    }
    assert!(
        h.logged("[c-1] RETRY attempt=2/5 task=t-1 — KV GET task:t-1 failed: store unavailable")
    );
    assert!(h.logged("[c-1] DEAD task=t-1 after 5 attempts: KV GET task:t-1 failed"));
    assert!(h.logged("[c-2] DEAD task=t-1 — held behind dlq:"));
    assert!(h.outbox().is_empty());

    let dead = h.dead_letters();
    let create = dead
        .iter()
        .find(|d| d.correlation_id == "c-1")
        .expect("create dead-lettered");
    assert_eq!(
        (create.attempts, create.errors.len()),
        (5, 6),
        "writer's error + 5"
    );
    assert!(create.reason.starts_with("gave up after 5 attempts"));
    let held = dead
        .iter()
        .find(|d| d.correlation_id == "c-2")
        .expect("update held");
    assert!(
        held.reason
            .starts_with("held back: an earlier event for task t-1")
    );
    assert_eq!(held.attempts, 0, "never tried on its own");

    // The store is back: replay the dead letters, oldest first, and they
    // apply in their original order.
    h.tasks.set_down(false);
    let page = dead_letters::list(&h.local, None, 2).expect("listing");
    assert_eq!(page.items.len(), 2);
    let order: Vec<&str> = page
        .items
        .iter()
        .map(|(_, d)| d.correlation_id.as_str())
        .collect();
    assert_eq!(
        order,
        ["c-1", "c-2"],
        "buried in one run, listed in outbox order"
    );
    let rest = dead_letters::list(&h.local, page.next_cursor.as_deref(), 2).expect("page 2");
    assert_eq!((rest.items.len(), rest.next_cursor), (1, None));
    for (id, _) in page.items.iter().chain(&rest.items) {
        replay_dead_letter(&h.local, id, Timestamp(h.now.get())).expect("replayed");
    }
    assert!(h.dead_letters().is_empty());
    let r = h.tick();
    assert_eq!((r.applied, r.dead), (3, 0));
    let t1 = h.task("t-1").expect("t-1");
    assert_eq!((t1.status, t1.version), (Status::Completed, 2));
    assert!(h.task("t-2").is_some());
}

#[test]
fn a_permanent_failure_dead_letters_at_once_and_the_queue_moves_on() {
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send(
        "tasks.updated",
        r#"{"id":"ghost","title":"x","correlationId":"c-1"}"#,
    );
    h.send(
        "tasks.created",
        r#"{"id":"ghost","title":"Real","correlationId":"c-2"}"#,
    );
    h.tasks.set_down(false);
    h.advance(1_000);
    let r = h.tick();
    assert_eq!((r.applied, r.dead), (1, 1));
    assert!(h.logged("[c-1] DEAD task=ghost — cannot apply: update of unknown task"));
    assert_eq!(h.task("ghost").map(|t| t.title), Some("Real".into()));
}

#[test]
fn a_stream_event_parked_twice_is_one_dead_letter() {
    // A call cancelled after it parked the event, made again: the same
    // stream event is in the outbox twice, and can never apply.
    let h = Harness::new();
    h.tasks.set_down(true);
    let msg = Incoming {
        subject: "tasks.updated",
        payload: br#"{"id":"ghost","title":"x"}"#,
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: Some(12),
        stream_epoch: Some(3),
    };
    for _ in 0..2 {
        let parked = h.deliver_on(&h.tasks, &msg);
        assert!(
            matches!(
                parked,
                Ok(Handled::Deferred { .. } | Handled::Queued { .. })
            ),
            "{parked:?}"
        );
    }
    assert_eq!(h.outbox().len(), 2);
    h.tasks.set_down(false);
    h.advance(1_000);
    h.tick();
    h.advance(5_000);
    h.tick();
    assert!(h.outbox().is_empty());
    let letters = h.dead_letters();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        (letters[0].stream_seq, letters[0].stream_epoch),
        (Some(12), Some(3))
    );
}

#[test]
fn a_claimed_task_is_left_to_the_tick_that_holds_it() {
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send("tasks.created", r#"{"id":"t-1","title":"A"}"#);
    h.tasks.set_down(false);
    h.advance(1_000);
    // A second tick fires while the first one is applying the record.
    let nested: RefCell<Option<TickReport>> = RefCell::new(None);
    let hook = Hooked::new(&h.tasks, HookAt::Write, || {
        *nested.borrow_mut() = Some(h.tick());
    });
    let first = h.tick_on(&hook);
    let second = nested.borrow().expect("the nested tick ran");
    assert_eq!((first.applied, second.applied, second.skipped), (1, 0, 0));
    assert_eq!(h.task("t-1").map(|t| t.version), Some(1), "applied once");

    // A claim whose tick died lapses after its hold.
    h.tasks.set_down(true);
    h.send("tasks.updated", r#"{"id":"t-1","title":"B"}"#);
    h.tasks.set_down(false);
    let key = h.local.keys_with_prefix(keys::OUTBOX_PREFIX)[0].clone();
    let mut e: OutboxEntry =
        serde_json::from_slice(&h.local.peek(&key).unwrap_or_default()).expect("entry");
    e.claim = Some(Claim {
        token: "dead-tick".into(),
        until: Timestamp(h.now.get() + 30_000),
    });
    h.local.put(&key, serde_json::to_vec(&e).expect("json"));
    h.advance(1_000);
    assert_eq!(h.tick().applied, 0, "held by a live claim");
    h.advance(30_000);
    assert_eq!(h.tick().applied, 1, "the claim lapsed");
    assert_eq!(h.task("t-1").map(|t| t.title), Some("B".into()));
}

#[test]
fn counters_are_reconciled_with_the_records() {
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send("tasks.created", r#"{"id":"t-1","title":"A"}"#);
    // A lost counter (say the writer's increment failed) is restored...
    h.local.remove(&keys::pending("t-1"));
    h.local
        .put(&keys::pending("t-9"), 4i64.to_le_bytes().to_vec());
    let r = h.tick();
    assert_eq!(r.applied, 0);
    assert_eq!(h.pending("t-1"), Some(1));
    assert!(h.logged("OUTBOX task=t-1 counter 0 ≠ 1 record(s); corrected"));
    // ...and a stale one with no records is brought to zero, then removed.
    assert_eq!(h.pending("t-9"), Some(0));
    h.tick();
    assert_eq!(h.pending("t-9"), None);
}

#[test]
fn replay_refuses_what_cannot_apply_and_double_replays() {
    let h = Harness::new();
    h.send("tasks.created", r#"{"title":"no id"}"#);
    let id = dead_letters::list(&h.local, None, 10).expect("list").items[0]
        .0
        .clone();
    let now = Timestamp(h.now.get());
    assert!(matches!(
        replay_dead_letter(&h.local, &id, now),
        Err(ReplayError::Conflict(m)) if m.contains("the event itself is invalid")
    ));
    assert!(matches!(
        replay_dead_letter(&h.local, "nope", now),
        Err(ReplayError::NotFound(_))
    ));

    h.tasks.set_down(true);
    h.send("tasks.created", r#"{"id":"t-1","title":"A"}"#);
    h.tasks.set_down(false);
    let key = keys::dead_letter(now.millis(), "manual");
    let entry = h.outbox().remove(0);
    h.local.put(
        &key,
        serde_json::to_vec(&DeadLetter {
            subject: entry.subject.clone(),
            raw: entry.raw.clone(),
            correlation_id: "c-r".into(),
            task_id: Some("t-1".into()),
            reason: "r".into(),
            errors: vec![],
            attempts: 5,
            stream_seq: None,
            stream_epoch: None,
            received_at: None,
            at: now,
            replaying: Some(now),
        })
        .expect("json"),
    );
    let id = keys::dead_letter_id(&key).expect("id").to_owned();
    assert!(matches!(
        replay_dead_letter(&h.local, &id, now),
        Err(ReplayError::Conflict(m)) if m.contains("already being replayed")
    ));
    // A replay that died half-way frees the record after a minute.
    let later = Timestamp(now.millis() + 61_000);
    let outbox_key = replay_dead_letter(&h.local, &id, later).expect("replayed");
    assert!(outbox_key.ends_with(":t-1"));
    assert_eq!(h.pending("t-1"), Some(2));
}

#[test]
fn a_store_that_is_down_gets_one_call_per_tick_not_one_per_event() {
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send(
        "tasks.created",
        r#"{"id":"a","title":"A","correlationId":"c-a"}"#,
    );
    assert!(h.logged("[c-a] STORE tasks is DOWN: KV GET task:a failed"));
    h.tasks.reset_calls();
    for id in ["b", "c", "d"] {
        let payload = format!(r#"{{"id":"{id}","title":"x"}}"#);
        assert!(matches!(
            h.send("tasks.created", &payload),
            Handled::Deferred { .. }
        ));
    }
    assert_eq!(
        h.tasks.calls().get,
        0,
        "deferred without waiting on the store"
    );
    assert!(
        h.outbox()
            .iter()
            .filter(|e| e.task_id == "b")
            .all(|e| e.backoff.errors[0].starts_with("not tried: the tasks store is down")),
    );

    h.advance(1_000);
    let r = h.tick();
    let calls = h.tasks.calls();
    assert_eq!(
        (r.rescheduled, calls.get + calls.get_many),
        (4, 1),
        "one probe, four attempts counted"
    );
    assert!(
        h.logged("task=b — not tried: the tasks store failed moments ago (KV GET task:a failed")
    );

    // Back up: the next probe succeeds, the circuit closes, all apply.
    h.tasks.set_down(false);
    h.advance(3_000);
    let r = h.tick();
    assert_eq!(r.applied, 4);
    assert!(h.logged("[-] STORE tasks is UP again"));
    assert!(h.local.peek(keys::TASKS_HEALTH).is_none());
    assert!(matches!(
        h.send("tasks.updated", r#"{"id":"a","status":"completed"}"#),
        Handled::Applied { .. }
    ));
}

/// The retrier may be stuck on a slower client than the writer's (Spin's
/// Redis store reconnects after about a minute, trigger-nats's within a
/// second): once the store is back the writer must not go on deferring, or
/// every task it touches queues behind the retrier.
#[test]
fn the_writer_calls_the_store_again_a_second_after_its_last_failure_without_a_retrier_run() {
    let h = Harness::new();
    h.tasks.set_down(true);
    assert!(matches!(
        h.send("tasks.created", r#"{"id":"a","title":"A"}"#),
        Handled::Deferred { .. }
    ));
    h.tasks.set_down(false);
    h.tasks.reset_calls();
    // Right after a failure: deferred without a call (one failing call a second at most).
    assert!(matches!(
        h.send("tasks.created", r#"{"id":"b","title":"B"}"#),
        Handled::Deferred { .. }
    ));
    assert_eq!(h.tasks.calls().get, 0);
    // A second later, with no retrier run in between: tried, and applied.
    h.advance(WRITER_CIRCUIT_MILLIS);
    assert!(matches!(
        h.send("tasks.created", r#"{"id":"c","title":"C"}"#),
        Handled::Applied { .. }
    ));
    let batch: Vec<Incoming> = [r#"{"id":"d","title":"D"}"#, r#"{"id":"e","title":"E"}"#]
        .iter()
        .map(|p| Incoming {
            subject: "tasks.created",
            payload: p.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: None,
            stream_sequence: None,
            stream_epoch: None,
        })
        .collect();
    let outcomes = h.with_writer(&h.tasks, |w| w.handle_batch(&batch));
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Handled::Applied { .. }))),
        "{outcomes:?}"
    );
    // What was deferred still waits for the retrier, which replays it in order.
    assert_eq!(h.task("a"), None);
    h.advance(1_000);
    assert_eq!(h.tick().applied, 2);
    assert!(h.task("a").is_some() && h.task("b").is_some());
}

#[test]
fn while_down_every_run_probes_and_recovery_replays_at_once() {
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send(
        "tasks.created",
        r#"{"id":"a","title":"A","correlationId":"c-a"}"#,
    );
    h.send(
        "tasks.created",
        r#"{"id":"b","title":"B","correlationId":"c-b"}"#,
    );
    h.advance(1_000);
    assert_eq!(h.tick().rescheduled, 2, "attempt 1: next in 3 s");

    // A second later nothing is due, but the run still probes the store
    // (one call), and the probe is not counted as an attempt.
    h.tasks.reset_calls();
    h.advance(1_000);
    let r = h.tick();
    let calls = h.tasks.calls();
    assert_eq!(
        (r.rescheduled, r.dead, calls.get + calls.get_many),
        (0, 0, 1)
    );
    assert!(h.logged("[c-a] PROBE task=a — still failing: KV GET task:a failed"));
    assert!(
        h.outbox()
            .iter()
            .all(|e| e.backoff.retries == 1 && e.claim.is_none())
    );

    // The store is back: the next run replays everything, although the
    // schedule said wait two more seconds.
    h.tasks.set_down(false);
    h.advance(1_000);
    let r = h.tick();
    assert_eq!(r.applied, 2);
    assert!(h.outbox().is_empty());
    assert!(h.logged("[c-b] RETRY attempt=2/5 task=b — OK"));
}

#[test]
fn a_message_whose_first_call_hung_is_parked_without_calling_the_store() {
    let h = Harness::new();
    let handled = h.with_writer(&h.tasks, |w| {
        w.handle(&Incoming {
            subject: "tasks.created",
            payload: br#"{"id":"t-1","title":"A","correlationId":"c-1"}"#,
            header_correlation_id: None,
            handler_timed_out_ms: Some(5_000),
            stream_sequence: None,
            stream_epoch: None,
        })
    });
    assert!(
        matches!(handled, Ok(Handled::Deferred { .. })),
        "{handled:?}"
    );
    assert_eq!(
        h.tasks.calls().get,
        0,
        "the store that hung is not called again"
    );
    assert!(h.logged("[c-1] STORE tasks is DOWN: the tasks store did not answer within 5000 ms"));
    assert!(h.local.peek(keys::TASKS_HEALTH).is_some());
    h.advance(1_000);
    assert_eq!(
        h.tick().applied,
        1,
        "the retrier applies it once the store answers"
    );
}

#[test]
fn a_deferred_stream_message_keeps_its_sequence_through_the_outbox() {
    let h = Harness::new();
    h.tasks.set_down(true);
    let msg = |payload: &'static str| Incoming {
        subject: "tasks.created",
        payload: payload.as_bytes(),
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: Some(9),
        stream_epoch: None,
    };
    let deferred = h.deliver_on(&h.tasks, &msg(r#"{"id":"t-1","title":"A"}"#));
    assert!(
        matches!(deferred, Ok(Handled::Deferred { .. })),
        "{deferred:?}"
    );
    assert_eq!(h.outbox()[0].stream_seq, Some(9));
    h.tasks.set_down(false);
    h.advance(2_000);
    assert_eq!(h.tick().applied, 1);
    assert_eq!(
        h.task("t-1").map(|t| (t.version, t.stream_seq)),
        Some((1, Some(9)))
    );
    // Delivered again after the retrier applied it: skipped.
    let again = h.deliver_on(&h.tasks, &msg(r#"{"id":"t-1","title":"A"}"#));
    assert!(matches!(again, Ok(Handled::Applied { .. })), "{again:?}");
    assert_eq!(h.task("t-1").map(|t| t.version), Some(1));
}

#[test]
fn a_replayed_dead_letter_the_task_has_moved_past_is_skipped_and_counted_so() {
    let h = Harness::new();
    let msg = |subject: &'static str, payload: &'static str, seq: u64| Incoming {
        subject,
        payload: payload.as_bytes(),
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: Some(seq),
        stream_epoch: None,
    };
    // An update that came before its task: a dead letter that keeps its sequence.
    let early = h.deliver_on(
        &h.tasks,
        &msg("tasks.updated", r#"{"id":"t-1","title":"stale"}"#, 2),
    );
    assert!(matches!(early, Ok(Handled::Rejected { .. })), "{early:?}");
    let (id, record) = dead_letters::list(&h.local, None, 10)
        .expect("list")
        .items
        .remove(0);
    assert_eq!(record.stream_seq, Some(2));
    // The task is created later in the stream.
    h.deliver_on(
        &h.tasks,
        &msg("tasks.created", r#"{"id":"t-1","title":"new"}"#, 3),
    )
    .expect("applied");
    // An operator replays the dead letter: the task has moved past it.
    replay_dead_letter(&h.local, &id, Timestamp(h.now.get())).expect("replayed");
    assert_eq!(h.outbox()[0].stream_seq, Some(2));
    h.advance(1_000);
    let report = h.tick();
    assert_eq!(
        (report.applied, report.already_applied),
        (0, 1),
        "{report:?}"
    );
    assert_eq!(h.task("t-1").map(|t| t.title), Some("new".to_owned()));
    assert!(h.logged("SKIPPED, applied already (tasks.updated"));
    assert!(h.outbox().is_empty());
}

#[test]
fn a_replayed_stream_event_that_fails_again_is_a_dead_letter_again_and_its_redelivery_is_not() {
    let h = Harness::new();
    let msg = Incoming {
        subject: "tasks.updated",
        payload: br#"{"id":"ghost","title":"x"}"#,
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: Some(5),
        stream_epoch: Some(2),
    };
    let first = h.deliver_on(&h.tasks, &msg);
    assert!(matches!(first, Ok(Handled::Rejected { .. })), "{first:?}");
    let (id, _) = dead_letters::list(&h.local, None, 10)
        .expect("list")
        .items
        .remove(0);
    // Replayed too early: the task still does not exist, so it fails again.
    replay_dead_letter(&h.local, &id, Timestamp(h.now.get())).expect("replayed");
    assert!(h.dead_letters().is_empty());
    h.advance(1_000);
    let report = h.tick();
    assert_eq!((report.applied, report.dead), (0, 1), "{report:?}");
    let letters = h.dead_letters();
    assert_eq!(letters.len(), 1, "the event is kept, not lost: {letters:?}");
    assert_eq!(
        (letters[0].stream_seq, letters[0].stream_epoch),
        (Some(5), Some(2))
    );
    // The first delivery's acknowledgement was lost: it comes again, and
    // is filed already.
    let again = h.deliver_on(&h.tasks, &msg);
    assert!(matches!(again, Ok(Handled::Rejected { .. })), "{again:?}");
    assert_eq!(h.dead_letters().len(), 1);

    // Replayed once more, and delivered again before the replay ran: the
    // delivery waits behind the replay, and the two are one dead letter.
    let (id, _) = dead_letters::list(&h.local, None, 10)
        .expect("list")
        .items
        .remove(0);
    replay_dead_letter(&h.local, &id, Timestamp(h.now.get())).expect("replayed");
    let again = h.deliver_on(&h.tasks, &msg);
    assert!(matches!(again, Ok(Handled::Queued { .. })), "{again:?}");
    h.advance(1_000);
    let report = h.tick();
    assert_eq!(report.dead, 1, "one dead letter, counted once: {report:?}");
    assert_eq!(h.dead_letters().len(), 1);
    assert!(h.outbox().is_empty());
}

#[test]
fn a_probe_that_waited_out_the_outage_still_replays_everything_at_once() {
    let h = Harness::new();
    h.tasks.set_down(true);
    for id in ["a", "b", "c"] {
        h.send("tasks.created", &format!(r#"{{"id":"{id}","title":"T"}}"#));
    }
    h.advance(1_000);
    h.tick();
    // The store comes back while a probe is in flight: the probe's call
    // returns only after a minute (a stopped Redis makes calls wait).
    h.tasks.set_down(false);
    h.advance(1_000);
    let waited = Hooked::new(&h.tasks, HookAt::Write, || h.advance(60_000));
    let r = h.tick_on(&waited);
    assert_eq!(r.applied, 3, "{r:?}");
    assert!(h.outbox().is_empty());
}

#[test]
fn a_replay_whose_change_misses_the_feed_stays_queued_and_its_change_is_recorded_once() {
    use tasks_feed as feed;
    use tasks_feed::Read;
    use tasks_outbox::CLAIM_MILLIS;
    let h = Harness::new();
    h.tasks.set_down(true);
    let msg = Incoming {
        subject: "tasks.created",
        payload: br#"{"id":"t-1","title":"A"}"#,
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: Some(9),
        stream_epoch: None,
    };
    let deferred = h.deliver_on(&h.tasks, &msg);
    assert!(
        matches!(deferred, Ok(Handled::Deferred { .. })),
        "{deferred:?}"
    );
    h.journal.commit(&h.feed).expect("in memory");
    h.tasks.set_down(false);
    h.advance(2_000);
    // The replay writes the task; then the feed store fails.
    let tasks = Hooked::new(&h.tasks, HookAt::Write, || h.feed.set_down(true));
    assert_eq!(h.tick_on(&tasks).applied, 1);
    assert_eq!(h.task("t-1").map(|t| t.version), Some(1));
    assert_eq!(h.outbox().len(), 1, "kept until its change is recorded");
    h.feed.set_down(false);
    h.advance(CLAIM_MILLIS + 1_000);
    let report = h.tick();
    assert_eq!(
        (report.applied, report.already_applied),
        (1, 0),
        "{report:?}"
    );
    assert!(h.outbox().is_empty());
    h.journal.commit(&h.feed).expect("in memory");
    let changes: Vec<(String, Option<u64>)> = match feed::read_after(&h.feed, 0, 100) {
        Ok(Read::Entries { entries, .. }) => entries
            .into_iter()
            .map(|e| (e.change.id, e.change.version))
            .collect(),
        other => unreachable!("{other:?}"),
    };
    assert_eq!(changes, [("t-1".to_owned(), Some(1))]);
    // Delivered once more: skipped, nothing recorded.
    assert_eq!(h.tick().applied, 0);
}

#[test]
fn a_stream_event_parked_twice_whose_change_missed_the_feed_is_recorded_and_counted_once() {
    // Chaos seed 5: a call wrote update @2 (its document keeps the change's
    // feed number) and ended before its feed write; the call made again
    // after the trigger's handler timeout parked the event without reading
    // the store, and its redelivery queued behind that record. One tick
    // replays both records together: both find the event applied and its
    // change missing from the feed. The change is recorded once, so the
    // event must be counted applied once, not once per record.
    use tasks_feed::metrics;
    use tasks_kv::testing::MemoryKv;
    let h = Harness::new();
    let msg =
        |subject: &'static str, payload: &'static str, seq: u64, timed_out: Option<u64>| Incoming {
            subject,
            payload: payload.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: timed_out,
            stream_sequence: Some(seq),
            stream_epoch: None,
        };
    let create = msg("tasks.created", r#"{"id":"t-1","title":"A"}"#, 1, None);
    h.deliver_on(&h.tasks, &create).expect("applied");
    h.journal.commit(&h.feed).expect("in memory");
    // Applied; the call ends before its feed write.
    let update = msg("tasks.updated", r#"{"id":"t-1","title":"B"}"#, 2, None);
    let applied = h.deliver_on(&h.tasks, &update);
    assert!(
        matches!(applied, Ok(Handled::Applied { .. })),
        "{applied:?}"
    );
    h.journal.commit(&MemoryKv::new()).expect("in memory");
    // Called again after the handler timeout: parked; not acknowledged.
    let again = msg(
        "tasks.updated",
        r#"{"id":"t-1","title":"B"}"#,
        2,
        Some(2_000),
    );
    let parked = h.deliver_on(&h.tasks, &again);
    assert!(matches!(parked, Ok(Handled::Deferred { .. })), "{parked:?}");
    h.journal.commit(&MemoryKv::new()).expect("in memory");
    // Delivered again: queued behind its own record.
    let queued = h.deliver_on(&h.tasks, &update);
    assert!(matches!(queued, Ok(Handled::Queued { .. })), "{queued:?}");
    h.journal.commit(&h.feed).expect("in memory");
    assert_eq!(h.outbox().len(), 2);

    h.advance(2_000);
    let report = h.tick();
    assert_eq!(
        (report.applied, report.already_applied),
        (1, 1),
        "{report:?}"
    );
    assert!(h.outbox().is_empty());
    assert_eq!(
        h.task("t-1").map(|t| (t.version, t.title)),
        Some((2, "B".to_owned()))
    );
    let changes: Vec<(String, Option<u64>)> = feed_changes(&h.feed)
        .expect("a short feed")
        .into_iter()
        .map(|c| (c.id, c.version))
        .collect();
    assert_eq!(
        changes,
        [("t-1".to_owned(), Some(1)), ("t-1".to_owned(), Some(2))]
    );
    let text = metrics::render(&metrics::snapshot(&h.feed).expect("in memory"));
    let applied: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("outcome=\"applied\""))
        .collect();
    assert_eq!(
        applied,
        [
            "tasks_events_total{outcome=\"applied\",subject=\"tasks.created\"} 1",
            "tasks_retries_total{outcome=\"applied\",subject=\"tasks.updated\"} 1",
        ],
        "{text}"
    );
}

#[test]
fn a_backlog_after_an_outage_replays_in_a_few_store_calls_not_several_per_event() {
    // 40 tasks, each with a deferred update and 8 more queued behind it
    // (events published while the store was down): the run after the store
    // comes back reads their documents together and writes each task once,
    // instead of reading and writing each task once per event.
    const TASKS: usize = 40;
    const BEHIND: usize = 8;
    let h = Harness::new();
    let seq = std::cell::Cell::new(0u64);
    let deliver = |subject: &str, payload: String| {
        seq.set(seq.get() + 1);
        let msg = Incoming {
            subject,
            payload: payload.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: None,
            stream_sequence: Some(seq.get()),
            stream_epoch: Some(7),
        };
        h.deliver_on(&h.tasks, &msg).expect("recorded")
    };
    for t in 0..TASKS {
        let created = deliver("tasks.created", format!(r#"{{"id":"t-{t}","title":"v1"}}"#));
        assert!(matches!(created, Handled::Applied { .. }), "{created:?}");
    }
    h.tasks.set_down(true);
    for t in 0..TASKS {
        let deferred = deliver("tasks.updated", format!(r#"{{"id":"t-{t}","title":"v2"}}"#));
        assert!(matches!(deferred, Handled::Deferred { .. }), "{deferred:?}");
    }
    h.tasks.set_down(false);
    for v in 3..3 + BEHIND {
        for t in 0..TASKS {
            let queued = deliver(
                "tasks.updated",
                format!(r#"{{"id":"t-{t}","title":"v{v}"}}"#),
            );
            assert!(matches!(queued, Handled::Queued { .. }), "{queued:?}");
        }
    }

    h.tasks.reset_calls();
    let report = h.tick();
    let events = TASKS * (1 + BEHIND);
    assert_eq!((report.applied, report.dead), (events, 0), "{report:?}");
    let calls = h.tasks.calls();
    let total = calls.get + calls.get_many + calls.set_many + calls.delete_many + calls.cas_write;
    // One probe of the oldest task's records, then one read of the others'
    // documents and a compare-and-swap (read and write) per task.
    assert!(
        total <= 2 * TASKS + 8,
        "{total} tasks-store calls for {events} events over {TASKS} tasks: {calls:?}"
    );
    for t in 0..TASKS {
        let task = h.task(&format!("t-{t}")).expect("stored");
        assert_eq!(
            (task.title.as_str(), task.version),
            (format!("v{}", 2 + BEHIND).as_str(), 2 + BEHIND as u64),
            "t-{t}: every update applied once, in order"
        );
    }
    assert!(h.outbox().is_empty());
    assert_eq!(h.pending("t-0"), None);
    // The feed holds each change once, in order per task: versions 1..=10.
    let mut versions: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for change in feed_changes(&h.feed).expect("fewer changes than the ring holds") {
        versions
            .entry(change.id)
            .or_default()
            .extend(change.version);
    }
    let expected: Vec<u64> = (1..=2 + BEHIND as u64).collect();
    assert_eq!(versions.len(), TASKS);
    for (id, got) in versions {
        assert_eq!(got, expected, "{id}'s changes in the feed");
    }
}

#[test]
fn a_writer_call_that_queues_while_the_store_answers_replays_the_outbox_itself() {
    use tasks_retry::replay_after;
    let h = Harness::new();
    let msg = |payload: &'static str| Incoming {
        subject: if payload.contains("title") {
            "tasks.created"
        } else {
            "tasks.updated"
        },
        payload: payload.as_bytes(),
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: None,
        stream_epoch: None,
    };
    let call = |payloads: &[&'static str]| {
        let msgs: Vec<Incoming> = payloads.iter().map(|p| msg(p)).collect();
        h.advance(1);
        h.with_writer(&h.tasks, |w| w.handle_batch(&msgs))
    };

    // The store fails: t-1's create is deferred, and so is the rest of the call.
    h.tasks.set_down(true);
    let during = call(&[
        r#"{"id":"t-1","title":"A"}"#,
        r#"{"id":"t-1","status":"in-progress"}"#,
    ]);
    assert!(
        !replay_after(&during),
        "the store failed in this call: {during:?}"
    );

    // Back. The writer's circuit lets it call the store a second after the
    // failure; the retrier's record still says down (its client may be
    // waiting to reconnect). A new task applies; t-1's update queues.
    h.tasks.set_down(false);
    h.advance(WRITER_CIRCUIT_MILLIS);
    let after = call(&[
        r#"{"id":"t-2","title":"B"}"#,
        r#"{"id":"t-1","status":"completed"}"#,
    ]);
    assert!(matches!(after[0], Ok(Handled::Applied { .. })), "{after:?}");
    assert!(matches!(after[1], Ok(Handled::Queued { .. })), "{after:?}");
    assert!(replay_after(&after), "queued while the store answered");

    // The tick the writer runs then: the probe finds the store up and the
    // backlog goes, in order, at once.
    let r = h.tick();
    assert_eq!((r.applied, r.dead), (3, 0), "{r:?}");
    let t = h.task("t-1").expect("applied");
    assert_eq!((t.status, t.version), (Status::Completed, 3));
    assert!(h.outbox().is_empty());

    // Nothing queued: nothing to replay.
    let quiet = call(&[
        r#"{"id":"t-2","status":"completed"}"#,
        r#"{"id":"t-3","title":"C"}"#,
    ]);
    assert!(!replay_after(&quiet), "{quiet:?}");
}

#[test]
fn a_run_whose_store_call_outlasts_its_claims_writes_nothing_and_leaves_the_records() {
    use tasks_outbox::CLAIM_MILLIS;
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send("tasks.created", r#"{"id":"t-1","title":"A"}"#);
    h.tasks.set_down(false);
    h.advance(WRITER_CIRCUIT_MILLIS);
    let queued = h.send("tasks.updated", r#"{"id":"t-1","status":"completed"}"#);
    assert!(matches!(queued, Handled::Queued { .. }), "{queued:?}");

    // The run's read of the documents waits past its claims (a client
    // reconnecting): by then another run may hold t-1, so this one writes
    // nothing and leaves the records as they are.
    let slow = Hooked::new(&h.tasks, HookAt::TaskRead, || h.advance(CLAIM_MILLIS));
    let r = h.tick_on(&slow);
    assert_eq!((r.applied, r.rescheduled, r.dead), (0, 0, 0), "{r:?}");
    assert_eq!(
        h.task("t-1"),
        None,
        "nothing written after the claim lapsed"
    );
    assert!(h.logged("LAPSED task=t-1"));
    let outbox = h.outbox();
    assert_eq!(outbox.len(), 2);
    assert!(
        outbox.iter().all(|e| e.backoff.retries == 0),
        "not counted as attempts: {outbox:?}"
    );

    // The next run applies both, once, in order.
    let r = h.tick();
    assert_eq!(r.applied, 2, "{r:?}");
    let t = h.task("t-1").expect("applied");
    assert_eq!((t.status, t.version), (Status::Completed, 2));
    assert!(h.outbox().is_empty());
}

#[test]
fn the_cron_retrier_leaves_the_outbox_to_the_writers_ticks_while_they_come() {
    use tasks_retry::{Retrier, WRITER_TICK_FRESH_MILLIS, record_writer_tick, writer_ticks};
    let h = Harness::new();
    let now = || Timestamp(h.now.get());
    h.tasks.set_down(true);
    h.send("tasks.created", r#"{"id":"t-1","title":"A"}"#);
    h.tasks.set_down(false);
    h.advance(2_000);
    // What the cron component runs: a replay only while no writer tick came lately.
    let cron = || {
        let replay = !writer_ticks(&h.local, now()).expect("the local store works");
        h.with_writer(&h.tasks, |w| {
            Retrier {
                writer: w,
                budget_millis: 10_000,
                reconcile: true,
                replay,
                claim_millis: tasks_retry::CLAIM_MILLIS,
            }
            .tick()
        })
        .expect("the local store works")
    };
    assert!(
        !writer_ticks(&h.local, now()).expect("read"),
        "no writer tick yet"
    );

    record_writer_tick(&h.local, now()).expect("recorded");
    h.advance(WRITER_TICK_FRESH_MILLIS - 1);
    let r = cron();
    assert_eq!((r.found, r.applied, r.rescheduled), (1, 0, 0), "{r:?}");
    assert_eq!(h.outbox().len(), 1, "left to the writer's ticks");
    assert!(h.task("t-1").is_none());

    // The writer's ticks stopped: the cron retrier replays again.
    h.advance(1);
    let r = cron();
    assert_eq!((r.found, r.applied), (1, 1), "{r:?}");
    assert!(h.outbox().is_empty());
    assert_eq!(h.task("t-1").map(|t| t.version), Some(1));
}

/// One writer tick (`tasks-spin-kv`'s `handle_tick`): its budget, no
/// reconcile, its shorter claims.
fn writer_tick<T: AtomicKv>(h: &Harness, tasks: &T) -> Result<TickReport, tasks_kv::StoreError> {
    h.with_writer(tasks, |w| {
        tasks_retry::Retrier {
            writer: w,
            budget_millis: tasks_retry::WRITER_REPLAY_MILLIS,
            reconcile: false,
            replay: true,
            claim_millis: tasks_retry::WRITER_CLAIM_MILLIS,
        }
        .tick()
    })
}

#[test]
fn a_writer_tick_cut_off_after_claiming_holds_the_probe_and_the_task_for_its_short_claim_only() {
    use tasks_retry::WRITER_CLAIM_MILLIS;
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send("tasks.created", r#"{"id":"t-1","title":"A"}"#);
    h.tasks.set_down(false);
    h.advance(2_000);
    // The trigger cancels the tick once it has claimed the probe and the
    // task (here: the local store fails right after the documents' read).
    let cut = Hooked::new(&h.tasks, HookAt::TaskRead, || h.local.set_down(true));
    let _ = writer_tick(&h, &cut);
    h.local.set_down(false);
    assert_eq!(h.outbox().len(), 1, "the record stays (written or not)");

    h.advance(WRITER_CLAIM_MILLIS - 1);
    let held = writer_tick(&h, &h.tasks).expect("the local store works");
    assert_eq!(
        (held.applied, held.already_applied),
        (0, 0),
        "still held by the cut-off tick: {held:?}"
    );
    assert_eq!(h.outbox().len(), 1);

    // Not the cron retrier's 30 s: the next tick after 10 s settles it.
    h.advance(1);
    let r = writer_tick(&h, &h.tasks).expect("the local store works");
    assert_eq!(r.applied + r.already_applied, 1, "{r:?}");
    assert!(h.outbox().is_empty());
    // (A core NATS event carries no stream sequence: the cut-off tick's
    // write, if it landed, is applied once more: at least once.)
    assert!(h.task("t-1").is_some());
}
