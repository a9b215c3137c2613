//! A batch of messages (one JetStream pull) in few store calls, with the
//! outcome of handling them one by one: store calls counted, the fallbacks
//! (outbox backlog, store down, lost compare-and-swap, local store failing),
//! and a property comparing both ways over random event sequences.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::collections::BTreeMap;

use serde_json::json;
use tasks_apply::testing::{Harness, feed_changes};
use tasks_apply::{Handled, Incoming};
use tasks_domain::{Task, keys};
use tasks_feed::ChangeKind;
use tasks_kv::testing::{Calls, HookAt, Hooked};
use tasks_kv::{AtomicKv, StoreError};
use tasks_proptest_kit::{check, fed};
use tasks_retry::testing::Tick;

/// One message: subject, payload, stream sequence.
type Msg = (&'static str, String, Option<u64>);

fn incoming(msgs: &[Msg]) -> Vec<Incoming<'_>> {
    msgs.iter()
        .map(|(subject, payload, seq)| Incoming {
            subject,
            payload: payload.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: None,
            stream_sequence: *seq,
            stream_epoch: None,
        })
        .collect()
}

fn batch_on<T: AtomicKv>(h: &Harness, tasks: &T, msgs: &[Msg]) -> Vec<Result<Handled, StoreError>> {
    let msgs = incoming(msgs);
    h.with_writer(tasks, |w| w.handle_batch(&msgs))
}

fn one_by_one(h: &Harness, msgs: &[Msg]) -> Vec<Result<Handled, StoreError>> {
    incoming(msgs)
        .iter()
        .map(|m| h.with_writer(&h.tasks, |w| w.handle(m)))
        .collect()
}

fn create(id: &str, title: &str, seq: u64) -> Msg {
    (
        "tasks.created",
        json!({"id": id, "title": title}).to_string(),
        Some(seq),
    )
}

fn update(id: &str, title: &str, seq: u64) -> Msg {
    (
        "tasks.updated",
        json!({"id": id, "title": title}).to_string(),
        Some(seq),
    )
}

fn delete(id: &str, seq: u64) -> Msg {
    ("tasks.deleted", json!({"id": id}).to_string(), Some(seq))
}

fn applied(outcomes: &[Result<Handled, StoreError>]) -> usize {
    outcomes
        .iter()
        .filter(|o| matches!(o, Ok(Handled::Applied { .. })))
        .count()
}

#[test]
fn a_batch_of_creates_is_one_read_and_one_write_of_the_tasks_store() {
    let h = Harness::new();
    let msgs: Vec<Msg> = (1..=100)
        .map(|i| create(&format!("t-{i}"), &format!("task {i}"), i))
        .collect();
    let outcomes = batch_on(&h, &h.tasks, &msgs);
    assert_eq!(applied(&outcomes), 100);
    assert_eq!(
        h.tasks.calls(),
        Calls {
            get_many: 1,
            set_many: 1,
            // Each task's document, and whether a tombstone was ever written.
            keys_read: 101,
            ..Calls::default()
        }
    );
    // Locally: one read (pending counters + health), one page-cache invalidation.
    assert_eq!(h.local.calls().get_many, 1);
    assert_eq!(h.local.calls().set_many + h.local.calls().increment, 0);
    let t = h.task("t-100").expect("stored");
    assert_eq!(
        (t.version, t.stream_seq, t.title.as_str()),
        (1, Some(100), "task 100")
    );
    assert!(h.stamp().is_some(), "the membership stamp is written");
    assert!(h.logged("CREATE task=t-1") && h.logged("KV PUT task:t-1 — OK ("));
}

#[test]
fn a_task_s_events_fold_in_order_and_a_redelivered_batch_changes_nothing() {
    let h = Harness::new();
    h.send("tasks.created", r#"{"id":"old","title":"old 1"}"#);
    let msgs = vec![
        create("k-1", "k-1 v1", 1),
        update("k-1", "k-1 v2", 2),
        update("old", "old 2", 3),
        update("k-1", "k-1 v3", 4),
        create("gone", "gone", 5),
        delete("gone", 6),
    ];
    h.tasks.reset_calls();
    assert_eq!(applied(&batch_on(&h, &h.tasks, &msgs)), 6);
    let k = h.task("k-1").expect("stored");
    assert_eq!(
        (k.version, k.title.as_str(), k.stream_seq),
        (3, "k-1 v3", Some(4))
    );
    assert_eq!(h.task("old").map(|t| t.version), Some(2));
    assert!(h.task("gone").is_none());
    // One read (documents and tombstones), one set-many of the tombstone, one
    // delete-many, one set-many (k-1 and the stamp), one compare-and-swap
    // (old, which existed).
    let calls = h.tasks.calls();
    assert_eq!(
        (
            calls.get_many,
            calls.delete_many,
            calls.set_many,
            calls.cas_write
        ),
        (1, 1, 2, 1),
        "{calls:?}"
    );
    // The same pull again (a crash after the commit, before the ack).
    let before = h.tasks.peek(&keys::task("k-1"));
    assert_eq!(applied(&batch_on(&h, &h.tasks, &msgs)), 6);
    assert_eq!(h.tasks.peek(&keys::task("k-1")), before);
    assert_eq!(h.task("old").map(|t| t.version), Some(2));
    assert!(h.logged("SKIP UPDATE task=k-1 — stream sequence 4 is applied already (last 4)"));
}

#[test]
fn refused_events_are_dead_letters_in_place_and_the_rest_applies() {
    let h = Harness::new();
    let msgs = vec![
        create("a", "a", 1),
        ("tasks.created", "{not json".to_owned(), Some(2)),
        update("ghost", "x", 3),
        (
            "tasks.created",
            json!({"id": "b", "title": "a\u{0}b"}).to_string(),
            Some(4),
        ),
        update("a", "a 2", 5),
    ];
    let outcomes = batch_on(&h, &h.tasks, &msgs);
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            Ok(Handled::Applied { .. }) => "applied",
            Ok(Handled::Rejected { .. }) => "rejected",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["applied", "rejected", "rejected", "rejected", "applied"]
    );
    assert_eq!(h.dead_letters().len(), 3);
    assert!(
        h.dead_letters()
            .iter()
            .any(|d| d.reason.contains("update of unknown task \"ghost\""))
    );
    assert_eq!(h.task("a").map(|t| t.version), Some(2));
}

#[test]
fn a_task_with_deferred_events_queues_behind_them_and_the_others_apply() {
    let h = Harness::new();
    h.tasks.set_down(true);
    h.send("tasks.created", r#"{"id":"late","title":"late 1"}"#);
    h.tasks.set_down(false);
    h.advance(60_000); // past the circuit: the store counts as up again
    let msgs = vec![update("late", "late 2", 1), create("fresh", "fresh", 2)];
    let outcomes = batch_on(&h, &h.tasks, &msgs);
    assert!(
        matches!(outcomes[0], Ok(Handled::Queued { behind: 1, .. })),
        "{outcomes:?}"
    );
    assert!(matches!(outcomes[1], Ok(Handled::Applied { .. })));
    assert_eq!(h.pending("late"), Some(2));
    while !h.outbox().is_empty() {
        h.advance(30_000);
        h.tick();
    }
    assert_eq!(
        h.task("late").map(|t| (t.version, t.title)),
        Some((2, "late 2".to_owned()))
    );
}

#[test]
fn a_store_that_fails_the_commit_sends_the_batch_to_the_outbox_in_order() {
    let h = Harness::new();
    let msgs = vec![
        create("x", "x 1", 1),
        update("x", "x 2", 2),
        create("y", "y", 3),
    ];
    let down = Hooked::new(&h.tasks, HookAt::Write, || h.tasks.set_down(true));
    let outcomes = batch_on(&h, &down, &msgs);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Handled::Deferred { .. }))),
        "{outcomes:?}"
    );
    assert_eq!((h.pending("x"), h.pending("y")), (Some(2), Some(1)));
    assert!(
        h.local.peek(keys::TASKS_HEALTH).is_some(),
        "the store is marked down"
    );
    h.tasks.set_down(false);
    while !h.outbox().is_empty() {
        h.advance(30_000);
        h.tick();
    }
    assert_eq!(
        h.task("x").map(|t| (t.version, t.title)),
        Some((2, "x 2".to_owned()))
    );
    assert!(h.task("y").is_some());
}

#[test]
fn a_compare_and_swap_lost_to_another_writer_applies_that_task_one_by_one() {
    let h = Harness::new();
    h.send("tasks.created", r#"{"id":"c","title":"c 1"}"#);
    // Another writer updates c between the batch's read and its write.
    let other = || {
        h.with_writer(&h.tasks, |w| {
            w.handle(&incoming(&[update("c", "someone else", 99)])[0])
        })
        .expect("recorded");
    };
    let racing = Hooked::new(&h.tasks, HookAt::Write, other);
    let outcomes = batch_on(
        &h,
        &racing,
        &[update("c", "c 2", 100), update("c", "c 3", 101)],
    );
    assert_eq!(applied(&outcomes), 2, "{outcomes:?}");
    let c = h.task("c").expect("stored");
    assert_eq!(
        (c.version, c.title.as_str()),
        (4, "c 3"),
        "the other writer's update is kept too"
    );
    assert!(h.logged("changed since the batch read it"));
}

#[test]
fn after_a_message_cannot_be_recorded_the_rest_is_not_recorded_either() {
    let h = Harness::new();
    // The local store fails once the batch's local read is done: the dead
    // letter cannot be written, so it and what follows it are errors.
    let msgs = vec![
        create("a", "a", 1),
        ("tasks.created", "{not json".to_owned(), Some(2)),
        update("ghost", "x", 3),
    ];
    let tasks = Hooked::new(&h.tasks, HookAt::TaskRead, || h.local.set_down(true));
    let outcomes = batch_on(&h, &tasks, &msgs);
    assert!(
        matches!(outcomes[0], Ok(Handled::Applied { .. })),
        "{outcomes:?}"
    );
    assert!(outcomes[1].is_err() && outcomes[2].is_err(), "{outcomes:?}");
    assert!(h.task("a").is_some());
}

/// The task store as comparable JSON: id → document.
#[test]
fn a_delete_leaves_a_tombstone_that_older_events_delivered_again_cannot_pass() {
    for batched in [true, false] {
        let h = Harness::new();
        let run = |msgs: &[Msg]| {
            if batched {
                batch_on(&h, &h.tasks, msgs)
            } else {
                one_by_one(&h, msgs)
            }
        };
        run(&[
            create("a", "a v1", 1),
            update("a", "a v2", 2),
            delete("a", 3),
        ]);
        assert!(h.task("a").is_none());
        // The create and the update come again (a consumer replaying the stream).
        let again = run(&[create("a", "a v1", 1), update("a", "a v2", 2)]);
        assert!(h.task("a").is_none(), "resurrected (batched: {batched})");
        assert_eq!(applied(&again), 2, "skipped, not dead-lettered: {again:?}");
        assert!(h.dead_letters().is_empty(), "batched: {batched}");
        assert!(h.logged(
            "SKIP CREATE task=a — stream sequence 1 is older than the task's delete (at 3)"
        ));
        // Re-created later; the old delete comes again and must not remove it.
        run(&[create("a", "a again", 4), update("b-unrelated", "x", 5)]);
        run(&[delete("a", 3), create("c", "c", 6)]);
        assert_eq!(
            h.task("a").map(|t| (t.title, t.stream_seq)),
            Some(("a again".to_owned(), Some(4))),
            "batched: {batched}"
        );
        // A later delete of the same id replaces the tombstone.
        run(&[delete("a", 7), create("d", "d", 8)]);
        run(&[create("a", "a again", 4), create("e", "e", 9)]);
        assert!(h.task("a").is_none(), "batched: {batched}");
    }
}

#[test]
fn past_the_delivery_lease_nothing_is_written_or_recorded() {
    // The instance is paused after reading, past the lease the trigger gave
    // the call: when it resumes, it writes nothing (another instance holds
    // the events now) and records nothing locally either.
    for batched in [true, false] {
        let h = Harness::new();
        h.send("tasks.created", r#"{"id":"old","title":"old"}"#);
        h.lease.set(Some(h.now.get() + 1_000));
        let pause = || h.now.set(h.now.get() + 60_000);
        let paused = Hooked::new(&h.tasks, HookAt::TaskRead, pause);
        let msgs = [
            create("a", "a", 1),
            update("old", "old 2", 2),
            delete("old", 3),
            update("ghost", "x", 4),
            ("tasks.created", "{oops".to_owned(), Some(5)),
        ];
        let outcomes = if batched {
            // Paused between the batch's read and its commit.
            batch_on(&h, &paused, &msgs)
        } else {
            // Paused before the first message.
            pause();
            one_by_one(&h, &msgs)
        };
        assert!(
            outcomes.iter().all(Result::is_err),
            "batched: {batched}: {outcomes:?}"
        );
        assert!(h.task("a").is_none());
        assert_eq!(h.task("old").map(|t| t.title), Some("old".to_owned()));
        assert!(
            h.dead_letters().is_empty() && h.outbox().is_empty(),
            "batched: {batched}"
        );
        assert!(
            h.logged("the delivery's lease ended at"),
            "batched: {batched}"
        );
        // Within the lease, the same events apply.
        h.lease.set(Some(h.now.get() + 60_000));
        let outcomes = batch_on(&h, &h.tasks, &msgs);
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert!(h.task("a").is_some() && h.task("old").is_none());
    }
}

#[test]
fn events_of_a_stream_made_again_apply_and_late_ones_of_the_old_stream_do_not() {
    for batched in [true, false] {
        let h = Harness::new();
        // (subject, payload, sequence, epoch)
        let run = |msgs: &[(&'static str, String, u64, u64)]| {
            let incoming: Vec<Incoming> = msgs
                .iter()
                .map(|(subject, payload, seq, epoch)| Incoming {
                    subject,
                    payload: payload.as_bytes(),
                    header_correlation_id: None,
                    handler_timed_out_ms: None,
                    stream_sequence: Some(*seq),
                    stream_epoch: Some(*epoch),
                })
                .collect();
            if batched {
                h.with_writer(&h.tasks, |w| w.handle_batch(&incoming))
            } else {
                incoming
                    .iter()
                    .map(|m| h.with_writer(&h.tasks, |w| w.handle(m)))
                    .collect()
            }
        };
        let ev = |subject, id: &str, title: &str, seq, epoch| {
            (
                subject,
                json!({"id": id, "title": title}).to_string(),
                seq,
                epoch,
            )
        };
        run(&[
            ev("tasks.created", "a", "a v1", 1, 100),
            ev("tasks.updated", "a", "a v2", 900, 100),
            ev("tasks.created", "g", "g", 901, 100),
            ("tasks.deleted", json!({"id": "g"}).to_string(), 902, 100),
        ]);
        // The stream is made again (epoch 200): its sequences start at 1.
        run(&[
            ev("tasks.updated", "a", "a v3", 1, 200),
            ev("tasks.created", "g", "g again", 2, 200),
        ]);
        assert_eq!(
            h.task("a")
                .map(|t| (t.title, t.version, t.stream_seq, t.stream_epoch)),
            Some(("a v3".to_owned(), 3, Some(1), Some(200))),
            "batched: {batched}"
        );
        assert_eq!(h.task("g").map(|t| t.title), Some("g again".to_owned()));
        // A late delivery from the old stream changes nothing.
        run(&[
            ev("tasks.updated", "a", "stale", 901, 100),
            ("tasks.deleted", json!({"id": "g"}).to_string(), 903, 100),
        ]);
        assert_eq!(h.task("a").map(|t| t.title), Some("a v3".to_owned()));
        assert!(h.task("g").is_some(), "batched: {batched}");
        assert!(h.logged("of an older incarnation of the stream is applied already"));
    }
}

#[test]
fn a_stream_event_dead_lettered_and_delivered_again_is_one_dead_letter() {
    for batched in [true, false] {
        let h = Harness::new();
        let msgs = [
            ("tasks.created", "{oops".to_owned(), Some(5)),
            update("ghost", "x", 6),
            ("tasks.other", json!({"id": "a"}).to_string(), Some(7)),
        ];
        let run = |msgs: &[Msg]| {
            if batched {
                batch_on(&h, &h.tasks, msgs)
            } else {
                one_by_one(&h, msgs)
            }
        };
        run(&msgs);
        // The acknowledgement was lost: the same pull comes again.
        let again = run(&msgs);
        assert!(
            again
                .iter()
                .all(|o| matches!(o, Ok(Handled::Rejected { .. }))),
            "{again:?}"
        );
        assert_eq!(h.dead_letters().len(), 3, "batched: {batched}");
        assert!(h.logged("(delivered again: dead-lettered already as dlq:"));
        // Without a stream sequence (core NATS) there is nothing to tell them apart by.
        run(&[
            ("tasks.created", "{oops".to_owned(), None),
            ("tasks.created", "{oops".to_owned(), None),
        ]);
        assert_eq!(h.dead_letters().len(), 5, "batched: {batched}");
    }
}

fn tasks_of(h: &Harness) -> Vec<(String, Option<Task>)> {
    h.tasks
        .keys_with_prefix(keys::TASK_PREFIX)
        .into_iter()
        .map(|k| {
            let t = h.tasks.peek(&k).and_then(|b| Task::from_json(&b).ok());
            (k, t)
        })
        .collect()
}

/// A random event on one of four tasks (a few malformed), with stream
/// sequences 1.. in order; then a redelivery of some tail of it.
fn events() -> impl Strategy<Value = (Vec<Msg>, usize)> {
    let one = (0..4usize, 0..10u8, "[a-z ]{0,6}").prop_map(|(task, kind, title)| {
        let id = ["a", "b", "c", "d"][task];
        match kind {
            0..=3 => (
                "tasks.created",
                json!({"id": id, "title": format!("{id} {title}")}).to_string(),
            ),
            4..=7 => (
                "tasks.updated",
                json!({"id": id, "title": format!("{id} {title}!")}).to_string(),
            ),
            8 => ("tasks.deleted", json!({"id": id}).to_string()),
            _ => ("tasks.created", format!("{{\"id\":\"{id}\"")),
        }
    });
    (prop::collection::vec(one, 1..40), 0..40usize).prop_map(|(evs, tail)| {
        let msgs: Vec<Msg> = evs
            .into_iter()
            .enumerate()
            .map(|(i, (subject, payload))| (subject, payload, Some(i as u64 + 1)))
            .collect();
        let tail = tail.min(msgs.len());
        (msgs, tail)
    })
}

#[test]
fn a_batch_ends_where_one_by_one_ends() {
    check("batch = one by one", events(), |(msgs, tail)| {
        fed();
        let (batched, single) = (Harness::new(), Harness::new());
        // One clock for all: both ways stamp the same times.
        batched.step.set(0);
        single.step.set(0);
        let a = batch_on(&batched, &batched.tasks, &msgs);
        let b = one_by_one(&single, &msgs);
        let kind = |o: &Result<Handled, StoreError>| match o {
            Ok(Handled::Applied { .. }) => "applied",
            Ok(Handled::Rejected { .. }) => "rejected",
            Ok(_) => "outbox",
            Err(_) => "error",
        };
        prop_assert_eq!(
            a.iter().map(kind).collect::<Vec<_>>(),
            b.iter().map(kind).collect::<Vec<_>>()
        );
        prop_assert_eq!(tasks_of(&batched), tasks_of(&single));
        // The same dead letters (their keys hold ids drawn in another order).
        let reasons = |h: &Harness| {
            let mut r: Vec<String> = h.dead_letters().into_iter().map(|d| d.reason).collect();
            r.sort();
            r
        };
        prop_assert_eq!(reasons(&batched), reasons(&single));
        // A redelivery of the tail changes nothing.
        let before = tasks_of(&batched);
        let again = &msgs[msgs.len() - tail..];
        let redelivered = batch_on(&batched, &batched.tasks, again);
        prop_assert!(redelivered.iter().all(Result::is_ok));
        prop_assert_eq!(tasks_of(&batched), before.clone());
        // Nor does any earlier event delivered again alone, either way (a
        // consumer replaying the stream, a lost acknowledgement).
        let before_single = tasks_of(&single);
        for m in &msgs {
            batch_on(&batched, &batched.tasks, std::slice::from_ref(m));
            prop_assert_eq!(tasks_of(&batched), before.clone(), "after {:?}", m);
            one_by_one(&single, std::slice::from_ref(m));
            prop_assert_eq!(tasks_of(&single), before_single.clone(), "after {:?}", m);
        }
        Ok::<(), TestCaseError>(())
    });
}

/// Each task's changes in the feed, in feed order: (kind, version).
fn changes_by_task(h: &Harness) -> BTreeMap<String, Vec<(ChangeKind, Option<u64>)>> {
    let mut by_task: BTreeMap<String, Vec<(ChangeKind, Option<u64>)>> = BTreeMap::new();
    for c in feed_changes(&h.feed).expect("fewer changes than the ring holds") {
        by_task.entry(c.id).or_default().push((c.kind, c.version));
    }
    by_task
}

#[test]
fn a_backlog_replayed_after_an_outage_ends_where_applying_directly_ends() {
    // The retrier replays many tasks' records in one batch; whatever the
    // history, lost compare-and-swaps or a store that fails again at the
    // replay's first write, the tasks, dead letters and feed end as if
    // every event had applied as it arrived.
    let faults = (0..40usize, 0..3usize, any::<bool>());
    check(
        "replay = direct",
        (events(), faults),
        |((msgs, _), (up_for, conflicts, relapse))| {
            fed();
            let (replayed, direct) = (Harness::new(), Harness::new());
            replayed.step.set(0);
            direct.step.set(0);
            one_by_one(&direct, &msgs);
            direct.journal.commit(&direct.feed).expect("in memory");

            // Up for the first events, then down while the rest arrive: each
            // task's first event then is deferred, the rest queue behind it.
            let (before, during) = msgs.split_at(up_for.min(msgs.len()));
            one_by_one(&replayed, before);
            replayed.tasks.set_down(true);
            let recorded = one_by_one(&replayed, during);
            prop_assert!(recorded.iter().all(Result::is_ok), "{:?}", recorded);
            replayed.journal.commit(&replayed.feed).expect("in memory");
            replayed.tasks.set_down(false);
            replayed.tasks.inject_conflicts(conflicts);
            if relapse {
                let down_again = || replayed.tasks.set_down(true);
                replayed.tick_on(&Hooked::new(&replayed.tasks, HookAt::Write, down_again));
                replayed.tasks.set_down(false);
            }
            for _ in 0..10 {
                if replayed.outbox().is_empty() {
                    break;
                }
                replayed.advance(31_000);
                replayed.tick();
            }
            prop_assert!(replayed.outbox().is_empty(), "{:?}", replayed.outbox());
            prop_assert_eq!(tasks_of(&replayed), tasks_of(&direct));
            let reasons = |h: &Harness| {
                let mut r: Vec<String> = h.dead_letters().into_iter().map(|d| d.reason).collect();
                r.sort();
                r
            };
            prop_assert_eq!(reasons(&replayed), reasons(&direct));
            prop_assert_eq!(changes_by_task(&replayed), changes_by_task(&direct));
            Ok::<(), TestCaseError>(())
        },
    );
}

#[test]
fn a_replay_whose_commit_fails_keeps_the_outage_start_and_logs_it_down_once() {
    use tasks_outbox::health;
    let h = Harness::new();
    h.tasks.set_down(true);
    batch_on(&h, &h.tasks, &[create("x", "x 1", 1), create("y", "y", 2)]);
    let read_health =
        || health::read(h.local.peek(keys::TASKS_HEALTH).as_deref()).expect("marked down");
    let since = read_health().down_since;
    h.tasks.set_down(false);
    // The probe reads the documents, then the store fails again at the write.
    h.advance(1_000);
    let relapse = Hooked::new(&h.tasks, HookAt::Write, || h.tasks.set_down(true));
    let r = h.tick_on(&relapse);
    assert_eq!((r.applied, r.rescheduled), (0, 2), "{r:?}");
    assert_eq!(read_health().down_since, since, "the same outage goes on");
    let downs = h
        .lines
        .borrow()
        .iter()
        .filter(|l| l.contains("STORE tasks is DOWN"))
        .count();
    assert_eq!(
        downs,
        1,
        "one outage, one DOWN line: {:?}",
        h.lines.borrow()
    );
}
