//! The change feed and the counters: what the writer and retrier record,
//! paging and the ring's bound, slots not written yet, the per-process
//! follower, compaction of the counters and their Prometheus text.

use serde_json::json;
use tasks_apply::Incoming;
use tasks_apply::testing::{self, Harness};
use tasks_domain::keys::{self, FEED_CAPACITY};
use tasks_domain::{Status, Timestamp};
use tasks_feed as feed;
use tasks_feed::metrics::{self, Counts, EventOutcome, Gauges, RetryOutcome};
use tasks_feed::{Change, ChangeKind, Cursor, Entry, Follower, GAP_MILLIS, Read, Since, Step};
use tasks_kv::AtomicKv;
use tasks_kv::testing::{HookAt, Hooked, MemoryKv};

/// A message of a JetStream stream (no headers): what these tests deliver.
fn stream_msg<'m>(subject: &'m str, payload: &'m str, seq: Option<u64>) -> Incoming<'m> {
    Incoming {
        subject,
        payload: payload.as_bytes(),
        header_correlation_id: None,
        handler_timed_out_ms: None,
        stream_sequence: seq,
        stream_epoch: None,
    }
}

fn change(id: &str) -> Change {
    Change {
        kind: ChangeKind::Updated,
        id: id.to_owned(),
        version: Some(2),
        status: Some(Status::Completed),
        previous_status: Some(Status::Pending),
        at: Timestamp(Harness::START),
        correlation_id: format!("cid-{id}"),
    }
}

fn append(feed: &MemoryKv, ids: &[&str]) -> Option<u64> {
    let mut counts = Counts::default();
    counts.event("tasks.updated", EventOutcome::Applied);
    feed::append(feed, ids.iter().map(|id| change(id)).collect(), counts).expect("append")
}

/// The series [`append`] counts in.
const APPLIED_UPDATES: &str = "tasks_events_total{outcome=\"applied\",subject=\"tasks.updated\"}";

/// A feed after two counted calls (three changes): two deltas, each one
/// applied update.
fn two_counted_calls() -> MemoryKv {
    let feed = MemoryKv::new();
    append(&feed, &["a", "b"]);
    append(&feed, &["c"]);
    feed
}

fn seqs(read: &Read) -> Vec<u64> {
    match read {
        Read::Entries { entries, .. } => entries.iter().map(|e| e.seq).collect(),
        Read::Reset { .. } => unreachable!("unexpected reset"),
    }
}

#[test]
fn appends_number_changes_across_calls_and_read_in_pages() {
    let feed = MemoryKv::new();
    assert_eq!(append(&feed, &["a", "b"]), Some(2));
    assert_eq!(append(&feed, &["c"]), Some(3));
    // Counts without a change take one number; its slot carries nothing.
    let mut counts = Counts::default();
    counts.http("/", 200);
    assert_eq!(
        feed::append(&feed, vec![], counts).expect("in memory"),
        Some(4)
    );
    assert_eq!(append(&feed, &["d"]), Some(5));
    assert_eq!(
        feed::append(&feed, vec![], Counts::default()).expect("in memory"),
        None
    );

    let first = feed::read_after(&feed, 0, 2).expect("in memory");
    assert_eq!(seqs(&first), vec![1, 2]);
    let rest = feed::read_after(&feed, 2, 100).expect("in memory");
    assert_eq!(seqs(&rest), vec![3, 5], "the empty slot 4 is passed over");
    assert!(matches!(
        rest,
        Read::Entries {
            next: 5,
            head: 5,
            ..
        }
    ));
    let Read::Entries { entries, .. } = rest else {
        unreachable!()
    };
    assert_eq!(entries[0].change, change("c"));
    // The wire form: the change's fields next to its number.
    let wire = serde_json::to_value(&entries[0]).expect("in memory");
    assert_eq!(
        wire,
        json!({"seq": 3, "kind": "updated", "id": "c", "version": 2, "status": "completed",
               "previousStatus": "pending", "at": "2026-11-22T06:01:54.000Z", "correlationId": "cid-c"})
    );
    let back: Entry = serde_json::from_value(wire).expect("in memory");
    assert_eq!(back, entries[0]);
    assert_eq!(
        feed::read_after(&feed, 5, 10).expect("in memory"),
        Read::Entries {
            entries: vec![],
            next: 5,
            head: 5
        }
    );
}

#[test]
fn the_ring_keeps_the_last_capacity_changes_and_resets_readers_behind_it() {
    let feed = MemoryKv::new();
    let ids: Vec<String> = (0..FEED_CAPACITY + 5).map(|i| format!("t{i}")).collect();
    for chunk in ids.chunks(1_000) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        append(&feed, &refs);
    }
    let slots = feed.keys_with_prefix(keys::FEED_SLOT_PREFIX).len() as u64;
    assert_eq!(slots, FEED_CAPACITY, "bounded");
    assert_eq!(
        feed::read_after(&feed, 0, 10).expect("in memory"),
        Read::Reset {
            head: FEED_CAPACITY + 5
        }
    );
    // Just inside the bound: the oldest kept change is there.
    let read = feed::read_after(&feed, 5, 3).expect("in memory");
    assert_eq!(seqs(&read), vec![6, 7, 8]);
    // A reader whose next slot was overwritten while it read is reset too.
    let mut cursor = Cursor::at(0);
    assert_eq!(
        cursor.advance(feed::read_after(&feed, 0, 10).expect("in memory"), 0),
        Step::Reset
    );
    assert_eq!(cursor.after, FEED_CAPACITY + 5);
}

#[test]
fn a_slot_not_written_yet_stops_readers_until_the_gap_times_out() {
    let feed = MemoryKv::new();
    append(&feed, &["a"]);
    // A writer took number 2 and has not written it (or died).
    feed.increment(keys::FEED_HEAD, 1).expect("in memory");
    append(&feed, &["c"]);
    let mut cursor = Cursor::at(0);
    let step = cursor.advance(feed::read_after(&feed, 0, 10).expect("in memory"), 1_000);
    assert!(matches!(step, Step::Send(ref e) if e.len() == 1 && e[0].seq == 1));
    assert_eq!(cursor.after, 1, "stops before the missing slot");
    let step = cursor.advance(feed::read_after(&feed, 1, 10).expect("in memory"), 2_000);
    assert_eq!(step, Step::Send(vec![]));
    let step = cursor.advance(
        feed::read_after(&feed, 1, 10).expect("in memory"),
        2_000 + GAP_MILLIS - 1,
    );
    assert_eq!(
        (step, cursor.after),
        (Step::Send(vec![]), 1),
        "still waiting"
    );
    cursor.advance(
        feed::read_after(&feed, 1, 10).expect("in memory"),
        2_000 + GAP_MILLIS,
    );
    assert_eq!(cursor.after, 2, "stepped over the slot that never came");
    let step = cursor.advance(feed::read_after(&feed, 2, 10).expect("in memory"), 9_000);
    assert!(matches!(step, Step::Send(ref e) if e.len() == 1 && e[0].seq == 3));
}

#[test]
fn one_follower_serves_every_reader_of_a_process_with_one_read_per_interval() {
    let feed = MemoryKv::new();
    append(&feed, &["old"]);
    let mut follower = Follower::start(&feed, 0, 250).expect("in memory");
    assert_eq!(follower.position(), 1, "starts at the head");
    append(&feed, &["a", "b"]);
    feed.reset_calls();
    assert!(
        !follower.refresh(&feed, 100).expect("in memory"),
        "too soon"
    );
    assert_eq!(feed.calls().get, 0);
    assert!(follower.refresh(&feed, 250).expect("in memory"));
    let Since::Entries(entries, next) = follower.since(1) else {
        unreachable!("behind")
    };
    assert_eq!(
        (entries.iter().map(|e| e.seq).collect::<Vec<_>>(), next),
        (vec![2, 3], 3)
    );
    let Since::Entries(entries, _) = follower.since(2) else {
        unreachable!("behind")
    };
    assert_eq!(entries.len(), 1);
    assert_eq!(
        follower.since(0),
        Since::Behind(3),
        "older than what it keeps: behind its position"
    );
    let calls = feed.calls();
    assert_eq!(
        calls.get + calls.get_many,
        2,
        "head and slots, once for all"
    );
}

fn deliver(h: &Harness, subject: &str, payload: serde_json::Value, seq: Option<u64>) {
    let payload = payload.to_string();
    h.deliver_on(&h.tasks, &stream_msg(subject, &payload, seq))
        .expect("recorded");
}

#[test]
fn the_writer_records_each_change_once_with_versions_and_statuses() {
    let h = Harness::new();
    deliver(
        &h,
        "tasks.created",
        json!({"id": "t-1", "title": "A"}),
        Some(1),
    );
    deliver(
        &h,
        "tasks.updated",
        json!({"id": "t-1", "status": "completed"}),
        Some(2),
    );
    // A redelivery changes nothing and records nothing.
    deliver(
        &h,
        "tasks.created",
        json!({"id": "t-1", "title": "A"}),
        Some(1),
    );
    deliver(&h, "tasks.deleted", json!({"id": "t-1"}), Some(3));
    deliver(
        &h,
        "tasks.updated",
        json!({"id": "nope", "title": "x"}),
        None,
    );
    let changes = h.journal.changes();
    let summary: Vec<_> = changes
        .iter()
        .map(|c| (c.kind, c.version, c.status, c.previous_status))
        .collect();
    assert_eq!(
        summary,
        vec![
            (ChangeKind::Created, Some(1), Some(Status::Pending), None),
            (
                ChangeKind::Updated,
                Some(2),
                Some(Status::Completed),
                Some(Status::Pending)
            ),
            (ChangeKind::Deleted, None, None, None),
        ]
    );
    h.journal.commit(&h.feed).expect("in memory");
    let snap = metrics::snapshot(&h.feed).expect("in memory");
    let text = metrics::render(&snap);
    for line in [
        "tasks_events_total{outcome=\"applied\",subject=\"tasks.created\"} 1",
        "tasks_events_total{outcome=\"applied\",subject=\"tasks.updated\"} 1",
        "tasks_events_total{outcome=\"skipped\",subject=\"tasks.created\"} 1",
        "tasks_events_total{outcome=\"applied\",subject=\"tasks.deleted\"} 1",
        "tasks_events_total{outcome=\"rejected\",subject=\"tasks.updated\"} 1",
        "tasks_dead_letters_created_total{source=\"writer\",subject=\"tasks.updated\"} 1",
        "tasks_change_feed_head 3",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn a_batch_records_the_same_changes_as_one_by_one() {
    let msgs = [
        ("tasks.created", json!({"id": "a", "title": "A"}), Some(1)),
        ("tasks.created", json!({"id": "b", "title": "B"}), Some(2)),
        (
            "tasks.updated",
            json!({"id": "a", "status": "in_progress"}),
            Some(3),
        ),
        ("tasks.deleted", json!({"id": "b"}), Some(4)),
        ("tasks.updated", json!({"id": "zz", "title": "x"}), Some(5)),
    ];
    let batch = Harness::new();
    let payloads: Vec<String> = msgs.iter().map(|(_, p, _)| p.to_string()).collect();
    let incoming: Vec<Incoming> = msgs
        .iter()
        .zip(&payloads)
        .map(|((subject, _, seq), payload)| stream_msg(subject, payload, *seq))
        .collect();
    batch.with_writer(&batch.tasks, |w| w.handle_batch(&incoming));
    let single = Harness::new();
    for (subject, payload, seq) in msgs {
        deliver(&single, subject, payload, seq);
    }
    let strip = |h: &Harness| {
        h.journal
            .changes()
            .into_iter()
            .map(|c| (c.kind, c.id, c.version, c.status, c.previous_status))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&batch), strip(&single));
    assert_eq!(strip(&batch).len(), 4);
}

#[test]
fn a_snapshot_taken_while_a_fold_lands_counts_every_delta_once() {
    let feed = two_counted_calls();
    let series = APPLIED_UPDATES;
    // Another process folds the deltas after this snapshot read the totals
    // and before it reads the deltas.
    let now = Timestamp(Harness::START);
    let racing = Hooked::new(&feed, HookAt::DeltaRead, || {
        let done = metrics::compact(&feed, None, now).expect("in memory");
        assert_eq!(done.folded, 2);
    });
    let snap = metrics::snapshot(&racing).expect("in memory");
    assert_eq!(
        snap.counts.get(series),
        2,
        "every delta, folded or not, once"
    );
    assert!(feed.keys_with_prefix(keys::METRICS_DELTA_PREFIX).is_empty());
}

#[test]
fn compaction_folds_deltas_once_and_snapshots_see_what_is_not_folded() {
    let feed = two_counted_calls();
    let series = APPLIED_UPDATES;
    assert_eq!(
        metrics::snapshot(&feed)
            .expect("in memory")
            .counts
            .get(series),
        2
    );
    let gauges = Gauges {
        outbox: 3,
        dead_letters: 1,
    };
    let now = Timestamp(Harness::START);
    let done = metrics::compact(&feed, Some(gauges), now).expect("in memory");
    assert_eq!(done.folded, 2);
    assert!(feed.keys_with_prefix(keys::METRICS_DELTA_PREFIX).is_empty());
    append(&feed, &["d"]);
    let snap = metrics::snapshot(&feed).expect("in memory");
    assert_eq!(snap.counts.get(series), 3, "totals plus the new delta");
    assert_eq!(snap.gauges, Some(gauges));
    // Nothing new: a second compaction changes nothing, and never counts twice.
    metrics::compact(&feed, Some(gauges), now).expect("in memory");
    assert_eq!(
        metrics::compact(&feed, Some(gauges), now)
            .expect("in memory")
            .folded,
        0
    );
    assert_eq!(
        metrics::snapshot(&feed)
            .expect("in memory")
            .counts
            .get(series),
        3
    );
}

#[test]
fn compaction_waits_for_a_delta_in_flight_then_steps_over_it() {
    let feed = MemoryKv::new();
    append(&feed, &["a"]);
    feed.increment(keys::FEED_HEAD, 1).expect("in memory"); // taken, not written
    append(&feed, &["c"]);
    let t0 = Harness::START;
    let first = metrics::compact(&feed, None, Timestamp(t0)).expect("in memory");
    assert_eq!((first.folded, first.gave_up), (1, 0));
    let later = metrics::compact(&feed, None, Timestamp(t0 + 1_000)).expect("in memory");
    assert_eq!((later.folded, later.gave_up), (0, 0), "waits");
    let gave_up = metrics::compact(&feed, None, Timestamp(t0 + GAP_MILLIS)).expect("in memory");
    assert_eq!((gave_up.folded, gave_up.gave_up), (1, 1));
    let series = APPLIED_UPDATES;
    assert_eq!(
        metrics::snapshot(&feed)
            .expect("in memory")
            .counts
            .get(series),
        2
    );
}

#[test]
fn a_compaction_that_loses_the_race_changes_nothing() {
    let feed = MemoryKv::new();
    append(&feed, &["a"]);
    feed.inject_conflicts(1);
    let lost = metrics::compact(&feed, None, Timestamp(Harness::START)).expect("in memory");
    assert!(lost.lost_race);
    assert_eq!(feed.keys_with_prefix(keys::METRICS_DELTA_PREFIX).len(), 1);
    let won = metrics::compact(&feed, None, Timestamp(Harness::START)).expect("in memory");
    assert_eq!(won.folded, 1);
    let series = APPLIED_UPDATES;
    assert_eq!(
        metrics::snapshot(&feed)
            .expect("in memory")
            .counts
            .get(series),
        1
    );
}

#[test]
fn prometheus_text_has_help_type_cumulative_buckets_and_escaped_labels() {
    let mut counts = Counts::default();
    counts.processing(700, 2); // 0.7 ms each
    counts.processing(30_000, 1); // 30 ms
    counts.http("/tasks/:id", 200);
    counts.http("/a\"b\\c\nd", 404);
    counts.event("made.up.subject", EventOutcome::Rejected);
    counts.retry("tasks.created", RetryOutcome::DeadLettered);
    counts.page_cache(true);
    counts.page_cache(false);
    counts.page_cache(false);
    let text = metrics::render(&metrics::Snapshot {
        counts,
        gauges: None,
        feed_head: 9,
    });
    let lines: Vec<&str> = text.lines().collect();
    for want in [
        "# TYPE tasks_event_processing_seconds histogram",
        "tasks_event_processing_seconds_bucket{le=\"0.0005\"} 0",
        "tasks_event_processing_seconds_bucket{le=\"0.001\"} 2",
        "tasks_event_processing_seconds_bucket{le=\"0.025\"} 2",
        "tasks_event_processing_seconds_bucket{le=\"0.05\"} 3",
        "tasks_event_processing_seconds_bucket{le=\"+Inf\"} 3",
        "tasks_event_processing_seconds_sum 0.0314",
        "tasks_event_processing_seconds_count 3",
        "tasks_http_requests_total{route=\"/tasks/:id\",status=\"200\"} 1",
        "tasks_http_requests_total{route=\"/a\\\"b\\\\c\\nd\",status=\"404\"} 1",
        "tasks_events_total{outcome=\"rejected\",subject=\"other\"} 1",
        "tasks_dead_letters_created_total{source=\"retrier\",subject=\"tasks.created\"} 1",
        "tasks_retries_total{outcome=\"dead_lettered\",subject=\"tasks.created\"} 1",
        "tasks_page_cache_total{result=\"miss\"} 2",
        "# TYPE tasks_outbox_depth gauge",
        "tasks_change_feed_head 9",
    ] {
        assert!(lines.contains(&want), "{want} missing from\n{text}");
    }
    assert!(
        !text.contains("tasks_outbox_depth 0"),
        "no value before a retrier run"
    );
    // Every sample line belongs to the family declared just before it.
    let mut family = "";
    for line in &lines {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            family = rest.split(' ').next().expect("in memory");
        } else if !line.starts_with('#') {
            assert!(line.starts_with(family), "{line} outside {family}");
        }
    }
}

/// What a change says of its task, without when and by whom.
type Said = (
    ChangeKind,
    String,
    Option<u64>,
    Option<Status>,
    Option<Status>,
);

/// Every change the feed holds, in feed order, as it says of its task.
fn feed_changes(feed: &MemoryKv) -> Vec<Said> {
    testing::feed_changes(feed)
        .expect("fewer changes than the feed's ring holds")
        .into_iter()
        .map(|c| (c.kind, c.id, c.version, c.status, c.previous_status))
        .collect()
}

/// The `tasks_events_total{outcome="applied",…}` lines of the counters.
fn applied_counts(feed: &MemoryKv) -> Vec<String> {
    let text = metrics::render(&metrics::snapshot(feed).expect("in memory"));
    text.lines()
        .filter(|l| l.starts_with("tasks_events_total{outcome=\"applied\""))
        .map(str::to_owned)
        .collect()
}

/// How a call of the history below ends.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// Its feed write lands and its messages are acknowledged.
    Done,
    /// It ends after its task writes, before its feed write (killed, or
    /// the feed write failed): its messages are delivered again.
    EndsBeforeFeed,
    /// Its feed write lands but its acknowledgement is lost: its messages
    /// are delivered again.
    AckLost,
}

#[test]
fn each_change_reaches_the_feed_and_the_counters_once_whichever_calls_end_before_the_feed() {
    use proptest::prelude::*;
    use tasks_proptest_kit::{check, fed};
    let one = (0..4usize, 0..10u8, "[a-z]{0,4}").prop_map(|(task, kind, title)| {
        let id = ["a", "b", "c", "d"][task];
        match kind {
            0..=3 => (
                "tasks.created",
                json!({"id": id, "title": format!("{id} {title}")}),
            ),
            4..=6 => (
                "tasks.updated",
                json!({"id": id, "title": format!("{id} {title}!")}),
            ),
            7 => ("tasks.updated", json!({"id": id, "status": "completed"})),
            8 => ("tasks.deleted", json!({"id": id})),
            _ => ("tasks.created", json!({"title": "no id"})),
        }
    });
    let calls = prop::collection::vec(
        (
            1..6usize,
            any::<bool>(),
            prop_oneof![
                3 => Just(Fate::Done),
                2 => Just(Fate::EndsBeforeFeed),
                1 => Just(Fate::AckLost),
            ],
        ),
        0..30,
    );
    let history = (prop::collection::vec(one, 1..30), calls);
    check(
        "each change once in the feed",
        history,
        |(events, calls)| {
            fed();
            let msgs: Vec<(&str, String, Option<u64>)> = events
                .iter()
                .enumerate()
                .map(|(i, (s, p))| (*s, p.to_string(), Some(i as u64 + 1)))
                .collect();
            fn incoming<'m>(m: &'m (&'static str, String, Option<u64>)) -> Incoming<'m> {
                Incoming {
                    subject: m.0,
                    payload: m.1.as_bytes(),
                    header_correlation_id: None,
                    handler_timed_out_ms: None,
                    stream_sequence: m.2,
                    stream_epoch: None,
                }
            }
            // What each event changes, delivered once each, in its own call.
            let model = Harness::new();
            model.step.set(0);
            for m in &msgs {
                model
                    .deliver_on(&model.tasks, &incoming(m))
                    .expect("recorded");
                model.journal.commit(&model.feed).expect("in memory");
            }
            // The same events through calls that end early or lose their acks;
            // what a call did not see acknowledged is delivered again first.
            let h = Harness::new();
            h.step.set(0);
            let mut calls = calls.into_iter();
            let mut next = 0;
            while next < msgs.len() {
                let (len, batched, fate) = calls.next().unwrap_or((3, true, Fate::Done));
                let call: Vec<Incoming> = msgs[next..(next + len).min(msgs.len())]
                    .iter()
                    .map(incoming)
                    .collect();
                let outcomes = if batched {
                    h.with_writer(&h.tasks, |w| w.handle_batch(&call))
                } else {
                    call.iter()
                        .map(|m| h.with_writer(&h.tasks, |w| w.handle(m)))
                        .collect()
                };
                prop_assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                match fate {
                    Fate::Done => {
                        h.journal.commit(&h.feed).expect("in memory");
                        next += call.len();
                    }
                    Fate::EndsBeforeFeed => {
                        // Its feed write goes nowhere.
                        h.journal.commit(&MemoryKv::new()).expect("in memory");
                    }
                    Fate::AckLost => {
                        h.journal.commit(&h.feed).expect("in memory");
                    }
                }
            }
            let (got, want) = (feed_changes(&h.feed), feed_changes(&model.feed));
            let of = |said: &[Said], id: &str| -> Vec<Said> {
                said.iter().filter(|s| s.1 == id).cloned().collect()
            };
            for id in ["a", "b", "c", "d"] {
                prop_assert_eq!(of(&got, id), of(&want, id), "task {}", id);
            }
            prop_assert_eq!(got.len(), want.len());
            prop_assert_eq!(applied_counts(&h.feed), applied_counts(&model.feed));
            Ok::<(), TestCaseError>(())
        },
    );
}

#[test]
fn a_call_that_took_long_since_its_numbers_counts_under_a_number_taken_at_its_commit() {
    let feed = MemoryKv::new();
    let journal = feed::Journal::new();
    let first = journal.reserve(&feed, 1).expect("in memory");
    journal.count(|c| c.event("tasks.updated", EventOutcome::Applied));
    // Past half the fold's wait: the fold may step over the reserved
    // number before this commit lands.
    std::thread::sleep(std::time::Duration::from_millis(
        GAP_MILLIS as u64 / 2 + 100,
    ));
    journal.changed_in(feed::Reserved {
        slot: first,
        stream_seq: 7,
        stream_epoch: None,
        change: change("a"),
    });
    assert_eq!(journal.commit(&feed).expect("in memory"), Some(first + 1));
    let delta = |seq| {
        feed.peek(&keys::metrics_delta(seq))
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    assert!(
        !delta(first).unwrap_or_default().contains("tasks.updated"),
        "{:?}",
        delta(first)
    );
    assert!(
        delta(first + 1)
            .unwrap_or_default()
            .contains("tasks.updated")
    );
    let text = metrics::render(&metrics::snapshot(&feed).expect("in memory"));
    assert!(text.contains(APPLIED_UPDATES), "{text}");
}

#[test]
fn a_call_past_its_lease_leaves_the_feed_to_the_redelivery_which_records_each_change_once() {
    // An instance writes its tasks, then is paused past its lease before
    // writing the feed; the events go to another instance, which finds them
    // applied and records their changes. The first instance, resumed,
    // writes no feed record of its own: the changes and counts stay once.
    let h = Harness::new();
    h.lease.set(Some(h.now.get() + 1_000));
    let msgs = [
        ("tasks.created", json!({"id": "a", "title": "A"}), 1),
        ("tasks.updated", json!({"id": "a", "title": "A2"}), 2),
        ("tasks.created", json!({"id": "b", "title": "B"}), 3),
    ];
    let payloads: Vec<String> = msgs.iter().map(|(_, p, _)| p.to_string()).collect();
    let incoming: Vec<Incoming> = msgs
        .iter()
        .zip(&payloads)
        .map(|((subject, _, seq), payload)| stream_msg(subject, payload, Some(*seq)))
        .collect();
    let outcomes = h.with_writer(&h.tasks, |w| w.handle_batch(&incoming));
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    h.now.set(h.now.get() + 60_000);
    // The other instance (the same stores, its own call) gets the events.
    let journal = feed::Journal::new();
    let b = tasks_apply::Writer {
        tasks: &h.tasks,
        local: &h.local,
        clock: &|| Timestamp(h.now.get()),
        unique: &|| "b".to_owned(),
        log: &|_: &str| {},
        verify_writes: false,
        journal: &journal,
        feed: &h.feed,
        commit_until: None,
    };
    let outcomes = b.handle_batch(&incoming);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    b.commit_journal().expect("no lease");
    // The first instance resumes: its feed write is fenced.
    let fenced = h.with_writer(&h.tasks, |w| w.commit_journal());
    assert!(
        matches!(fenced, Err(tasks_apply::apply::Failure::Fenced(_))),
        "{fenced:?}"
    );
    let other = h;
    let said: Vec<(ChangeKind, String, Option<u64>)> = feed_changes(&other.feed)
        .into_iter()
        .map(|(kind, id, version, ..)| (kind, id, version))
        .collect();
    assert_eq!(
        said,
        [
            (ChangeKind::Created, "a".to_owned(), Some(1)),
            (ChangeKind::Updated, "a".to_owned(), Some(2)),
            (ChangeKind::Created, "b".to_owned(), Some(1)),
        ]
    );
    assert_eq!(
        applied_counts(&other.feed),
        [
            "tasks_events_total{outcome=\"applied\",subject=\"tasks.created\"} 2",
            "tasks_events_total{outcome=\"applied\",subject=\"tasks.updated\"} 1",
        ]
    );
}

#[test]
fn request_counts_take_no_change_feed_number_and_are_folded_like_the_rest() {
    let feed = MemoryKv::new();
    append(&feed, &["a"]);
    let http = |n: u64| {
        let mut c = Counts::default();
        for _ in 0..n {
            c.http("/api/tasks/:id", 200);
        }
        c
    };
    const GETS: &str = "tasks_http_requests_total{route=\"/api/tasks/:id\",status=\"200\"}";
    for n in [3, 4] {
        metrics::append_counts(&feed, http(n)).expect("in memory");
    }
    // A writer of counts that died between its number and its write.
    feed.increment(keys::COUNTS_HEAD, 1).expect("in memory");
    metrics::append_counts(&feed, http(5)).expect("in memory");
    metrics::append_counts(&feed, Counts::default()).expect("nothing to write");
    assert_eq!(
        feed::head(&feed).expect("in memory"),
        1,
        "the feed took one number"
    );
    let snap = metrics::snapshot(&feed).expect("in memory");
    assert_eq!(
        (snap.counts.get(GETS), snap.counts.get(APPLIED_UPDATES)),
        (12, 1)
    );
    assert_eq!(snap.feed_head, 1);

    let t0 = Harness::START;
    let first = metrics::compact(&feed, None, Timestamp(t0)).expect("in memory");
    assert_eq!(
        (first.folded, first.gave_up),
        (3, 0),
        "the feed's and two counts deltas"
    );
    let gave_up = metrics::compact(&feed, None, Timestamp(t0 + GAP_MILLIS)).expect("in memory");
    assert_eq!(
        (gave_up.folded, gave_up.gave_up),
        (1, 1),
        "past the missing one"
    );
    assert!(feed.keys_with_prefix(keys::COUNTS_DELTA_PREFIX).is_empty());
    let snap = metrics::snapshot(&feed).expect("in memory");
    assert_eq!(
        (snap.counts.get(GETS), snap.counts.get(APPLIED_UPDATES)),
        (12, 1)
    );
}

#[test]
fn a_delta_that_lands_after_the_fold_stepped_over_its_number_is_still_counted_once() {
    // A call takes its number, then is held up past the fold's wait (paused
    // between its last check and its write, or its store slow) and writes
    // its counts under that number after all.
    let feed = MemoryKv::new();
    append(&feed, &["a"]);
    let journal = feed::Journal::new();
    let slot = journal.reserve(&feed, 1).expect("in memory");
    append(&feed, &["c"]);
    let t0 = Harness::START;
    metrics::compact(&feed, None, Timestamp(t0)).expect("in memory");
    let stepped = metrics::compact(&feed, None, Timestamp(t0 + GAP_MILLIS)).expect("in memory");
    assert_eq!(stepped.gave_up, 1);
    journal.count(|c| c.event("tasks.updated", EventOutcome::Applied));
    journal.changed_in(feed::Reserved {
        slot,
        stream_seq: 7,
        stream_epoch: None,
        change: change("b"),
    });
    assert_eq!(journal.commit(&feed).expect("in memory"), Some(slot));
    let applied = |feed: &MemoryKv| {
        metrics::snapshot(feed)
            .expect("in memory")
            .counts
            .get(APPLIED_UPDATES)
    };
    assert_eq!(applied(&feed), 3, "/metrics counts it before the next fold");
    let late =
        metrics::compact(&feed, None, Timestamp(t0 + GAP_MILLIS + 1_000)).expect("in memory");
    assert_eq!((late.folded, late.folded_late), (1, 1));
    assert_eq!(applied(&feed), 3, "and after it, once");
    assert_eq!(
        feed.peek(&keys::metrics_delta(slot)),
        None,
        "folded and deleted"
    );
    let again =
        metrics::compact(&feed, None, Timestamp(t0 + GAP_MILLIS + 2_000)).expect("in memory");
    assert_eq!(again.folded, 0);
    assert_eq!(applied(&feed), 3);
}

#[test]
fn the_fold_steps_over_a_dead_calls_whole_range_at_once_and_forgets_it_after_a_while() {
    // A call took 50 numbers and died before its write: the counters wait
    // once for the range, not once per number.
    let feed = MemoryKv::new();
    append(&feed, &["a"]);
    feed.increment(keys::FEED_HEAD, 50).expect("in memory");
    append(&feed, &["c"]);
    let t0 = Harness::START;
    metrics::compact(&feed, None, Timestamp(t0)).expect("in memory");
    let stepped = metrics::compact(&feed, None, Timestamp(t0 + GAP_MILLIS)).expect("in memory");
    assert_eq!((stepped.gave_up, stepped.folded), (50, 1));
    let head = feed::head(&feed).expect("in memory");
    let totals: metrics::Totals =
        serde_json::from_slice(&feed.peek(keys::METRICS_TOTALS).expect("written")).expect("json");
    assert_eq!(totals.upto, head);
    // A delta for one of them, written long after: past the time numbers
    // stepped over are kept, it is no longer looked for.
    let late = Timestamp(t0 + GAP_MILLIS + metrics::SKIPPED_KEEP_MILLIS + 1);
    metrics::compact(&feed, None, late).expect("in memory");
    let totals: metrics::Totals =
        serde_json::from_slice(&feed.peek(keys::METRICS_TOTALS).expect("written")).expect("json");
    assert!(totals.skipped.is_empty(), "{:?}", totals.skipped);
}
