//! The Cloudflare `tasks` store over in-memory stores and a fake remote:
//! read-through, write-behind, the writer on top, and the flush.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use tasks_apply::{Handled, Incoming, Writer};
use tasks_cloud::{CloudKv, Remote};
use tasks_cloud_flush::{FlushReport, Flusher};
use tasks_domain::{Task, Timestamp, keys};
use tasks_feed::Journal;
use tasks_kv::lease::Claim;
use tasks_kv::testing::MemoryKv;
use tasks_kv::{AtomicKv, KeyValue, StoreError};
use tasks_outbox::dead_letters::DeadLetter;

const TTL: i64 = 60_000;
const START: i64 = 1_795_327_314_000;

/// Calls a [`FakeRemote`] has served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct RemoteCalls {
    get_many: usize,
    list_keys: usize,
    write_many: usize,
}

type Puts = Vec<(String, Vec<u8>)>;

/// Cloudflare in memory: counts calls, can fail, can lag in its listing,
/// and can run a hook in the middle of its next call (a concurrent writer).
#[derive(Default)]
struct FakeRemote {
    data: RefCell<BTreeMap<String, Vec<u8>>>,
    calls: Cell<RemoteCalls>,
    asked: RefCell<Vec<Vec<String>>>,
    writes: RefCell<Vec<(Puts, Vec<String>)>>,
    down: Cell<bool>,
    frozen_listing: RefCell<Option<Vec<String>>>,
    hook: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl FakeRemote {
    fn call(&self, bump: impl FnOnce(&mut RemoteCalls)) -> Result<(), StoreError> {
        let mut calls = self.calls.get();
        bump(&mut calls);
        self.calls.set(calls);
        let hook = self.hook.borrow_mut().take();
        if let Some(hook) = hook {
            hook();
        }
        if self.down.get() {
            return Err(StoreError::Unavailable("cloudflare answered 503".into()));
        }
        Ok(())
    }

    fn put(&self, key: &str, value: &str) {
        self.data
            .borrow_mut()
            .insert(key.to_owned(), value.as_bytes().to_vec());
    }

    fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.data.borrow().get(key).cloned()
    }

    fn during_next_call(&self, hook: impl FnOnce() + 'static) {
        *self.hook.borrow_mut() = Some(Box::new(hook));
    }
}

impl Remote for FakeRemote {
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.call(|c| c.get_many += 1)?;
        self.asked.borrow_mut().push(keys.to_vec());
        Ok(keys.iter().map(|k| self.value(k)).collect())
    }

    fn list_keys(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.call(|c| c.list_keys += 1)?;
        if let Some(frozen) = self.frozen_listing.borrow().clone() {
            return Ok(frozen);
        }
        let data = self.data.borrow();
        Ok(data
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn write_many(&self, puts: Puts, deletes: Vec<String>) -> Result<(), StoreError> {
        self.call(|c| c.write_many += 1)?;
        self.writes
            .borrow_mut()
            .push((puts.clone(), deletes.clone()));
        let mut data = self.data.borrow_mut();
        data.extend(puts);
        for k in deletes {
            data.remove(&k);
        }
        Ok(())
    }
}

/// The stores, shared with hooks.
#[derive(Clone)]
struct Stores {
    cache: Rc<MemoryKv>,
    local: Rc<MemoryKv>,
    now: Rc<Cell<i64>>,
    counter: Rc<Cell<u32>>,
    lines: Rc<RefCell<Vec<String>>>,
}

impl Stores {
    fn new() -> Self {
        Stores {
            cache: Rc::new(MemoryKv::new()),
            local: Rc::new(MemoryKv::new()),
            now: Rc::new(Cell::new(START)),
            counter: Rc::new(Cell::new(0)),
            lines: Rc::new(RefCell::new(Vec::new())),
        }
    }

    fn clock(&self) -> impl Fn() -> Timestamp + use<> {
        let now = self.now.clone();
        move || Timestamp(now.get())
    }

    fn unique(&self) -> impl Fn() -> String + use<> {
        let counter = self.counter.clone();
        move || {
            counter.set(counter.get() + 1);
            format!("u{}", counter.get())
        }
    }

    fn log(&self) -> impl Fn(&str) + use<> {
        let lines = self.lines.clone();
        move |line: &str| lines.borrow_mut().push(line.to_owned())
    }

    fn advance(&self, millis: i64) {
        self.now.set(self.now.get() + millis);
    }

    /// Runs `f` on the Cloudflare store over these stores and `remote`.
    fn with_kv<T>(
        &self,
        remote: &FakeRemote,
        f: impl FnOnce(&CloudKv<'_, MemoryKv, MemoryKv, FakeRemote>) -> T,
    ) -> T {
        let clock = self.clock();
        f(&CloudKv {
            cache: &self.cache,
            local: &self.local,
            remote,
            ttl_millis: TTL,
            clock: &clock,
        })
    }

    fn set(&self, key: &str, value: &str) {
        let pairs = vec![(key.to_owned(), value.as_bytes().to_vec())];
        self.with_kv(&FakeRemote::default(), |kv| kv.set_many(pairs))
            .expect("set");
    }

    fn flush(&self, remote: &FakeRemote) -> Result<FlushReport, StoreError> {
        let (clock, unique, log) = (self.clock(), self.unique(), self.log());
        Flusher {
            cache: &*self.cache,
            local: &*self.local,
            remote,
            clock: &clock,
            unique: &unique,
            log: &log,
        }
        .flush()
    }

    fn send(&self, remote: &FakeRemote, subject: &str, payload: &str) -> Handled {
        let (clock, unique, log) = (self.clock(), self.unique(), self.log());
        self.with_kv(remote, |kv| {
            Writer {
                tasks: kv,
                local: &*self.local,
                clock: &clock,
                unique: &unique,
                log: &log,
                verify_writes: false,
                journal: &Journal::new(),
                feed: &MemoryKv::new(),
                commit_until: None,
            }
            .handle(&Incoming {
                subject,
                payload: payload.as_bytes(),
                header_correlation_id: None,
                handler_timed_out_ms: None,
                stream_sequence: None,
                stream_epoch: None,
            })
        })
        .expect("recorded")
    }

    /// The working-copy entry's tag and payload.
    fn envelope(&self, key: &str) -> Option<(char, Vec<u8>)> {
        let bytes = self.cache.peek(key)?;
        Some((char::from(bytes[0]), bytes[14..].to_vec()))
    }

    fn flush_records(&self) -> Vec<String> {
        self.local
            .keys_with_prefix(keys::FLUSH_PREFIX)
            .into_iter()
            .filter(|k| keys::flush_key(k).is_some())
            .collect()
    }

    fn logged(&self, needle: &str) -> bool {
        self.lines.borrow().iter().any(|l| l.contains(needle))
    }
}

fn get(s: &Stores, remote: &FakeRemote, key: &str) -> Option<String> {
    s.with_kv(remote, |kv| kv.get(key))
        .expect("get")
        .map(|v| String::from_utf8_lossy(&v).into_owned())
}

#[test]
fn reads_go_to_cloudflare_only_when_missing_or_stale() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    remote.put("task:a", "1");
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("1"));
    assert_eq!(get(&s, &remote, "task:b"), None);
    // One listing names what exists: task:a is fetched, task:b (not
    // listed) is known absent without a read.
    assert_eq!(
        (remote.calls.get().list_keys, remote.calls.get().get_many),
        (1, 1)
    );

    s.advance(TTL - 1);
    remote.put("task:a", "2");
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("1"), "fresh");
    assert_eq!(get(&s, &remote, "task:b"), None, "fresh absence");
    assert_eq!(
        (remote.calls.get().list_keys, remote.calls.get().get_many),
        (1, 1),
        "no remote call within the TTL"
    );

    s.advance(1);
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("2"), "expired");
    assert_eq!(remote.calls.get().get_many, 2);

    // Fresh, stale and missing keys at once: one remote call for the rest.
    remote.put("task:c", "3");
    s.set("task:w", "local");
    let wanted: Vec<String> = ["task:a", "task:b", "task:c", "task:w"]
        .map(String::from)
        .to_vec();
    let values = s
        .with_kv(&remote, |kv| kv.get_many(&wanted))
        .expect("get_many");
    let values: Vec<Option<&str>> = values
        .iter()
        .map(|v| v.as_deref().and_then(|b| std::str::from_utf8(b).ok()))
        .collect();
    assert_eq!(values, [Some("2"), None, Some("3"), Some("local")]);
    // task:c has no entry and the listing expired: one new listing names
    // it, then one read fetches the stale task:b and task:c together.
    assert_eq!(
        (remote.calls.get().list_keys, remote.calls.get().get_many),
        (2, 3)
    );
    assert_eq!(
        remote.asked.borrow().last().cloned(),
        Some(vec!["task:b".to_owned(), "task:c".to_owned()])
    );
    assert_eq!(s.envelope("task:b"), Some(('A', Vec::new())));
    assert_eq!(s.envelope("task:c"), Some(('V', b"3".to_vec())));
}

#[test]
fn own_writes_show_at_once_and_never_go_stale() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    remote.put("task:a", "old");
    remote.put("task:b", "doomed");
    s.with_kv(&remote, |kv| {
        kv.set_many(vec![("task:a".into(), b"new".to_vec())])?;
        kv.delete_many(vec!["task:b".into()])
    })
    .expect("write");
    assert_eq!(remote.calls.get(), RemoteCalls::default(), "write-behind");
    s.advance(10 * TTL);
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("new"));
    assert_eq!(get(&s, &remote, "task:b"), None);
    let (_, value) = s
        .with_kv(&remote, |kv| kv.cas_read("task:a"))
        .expect("cas_read");
    assert_eq!(value.as_deref(), Some(&b"new"[..]));
    assert_eq!(remote.calls.get().get_many, 0);
    assert_eq!(s.flush_records().len(), 2);
    assert_eq!(s.envelope("task:b"), Some(('D', Vec::new())));
}

#[test]
fn a_write_during_a_fetch_is_not_overwritten() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    remote.put("task:a", "remote");
    let writer = s.clone();
    remote.during_next_call(move || writer.set("task:a", "local"));
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("local"));
    assert_eq!(s.envelope("task:a"), Some(('W', b"local".to_vec())));

    // Through compare-and-swap as well.
    s.advance(TTL);
    remote.put("task:c", "remote");
    let writer = s.clone();
    remote.during_next_call(move || writer.set("task:c", "local"));
    let (_, value) = s
        .with_kv(&remote, |kv| kv.cas_read("task:c"))
        .expect("cas_read");
    assert_eq!(value.as_deref(), Some(&b"local"[..]));
    assert_eq!(s.envelope("task:c"), Some(('W', b"local".to_vec())));
}

#[test]
fn listings_add_local_writes_and_drop_local_deletes() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    for k in ["task:a", "task:b", keys::TASKS_STAMP] {
        remote.put(k, "x");
    }
    s.set("task:c", "new");
    s.with_kv(&remote, |kv| kv.delete_many(vec!["task:a".into()]))
        .expect("delete");
    let list =
        |s: &Stores, remote: &FakeRemote| s.with_kv(remote, |kv| kv.list_keys()).expect("list");
    assert_eq!(list(&s, &remote), [keys::TASKS_STAMP, "task:b", "task:c"]);

    // Cloudflare's listing lags the flush: fresh entries keep it right.
    *remote.frozen_listing.borrow_mut() = Some(vec!["task:a".into(), "task:b".into()]);
    s.flush(&remote).expect("flush");
    assert_eq!(s.envelope("task:c").map(|e| e.0), Some('V'));
    assert_eq!(s.envelope("task:a").map(|e| e.0), Some('A'));
    assert_eq!(list(&s, &remote), ["task:b", "task:c"]);
    assert_eq!(remote.calls.get().get_many, 0);
}

#[test]
fn the_writer_creates_updates_and_deletes_over_cloudflare() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    // A cold working copy: one key listing tells the id is new; no read.
    s.send(&remote, "tasks.created", r#"{"id":"t-1","title":"One"}"#);
    assert_eq!(
        (remote.calls.get().list_keys, remote.calls.get().get_many),
        (1, 0)
    );
    // An id already known to be absent costs no remote call.
    assert_eq!(get(&s, &remote, "task:t-2"), None);
    let before = remote.calls.get();
    s.send(&remote, "tasks.created", r#"{"id":"t-2","title":"Two"}"#);
    s.send(
        &remote,
        "tasks.updated",
        r#"{"id":"t-1","status":"completed"}"#,
    );
    s.send(&remote, "tasks.deleted", r#"{"id":"t-2"}"#);
    assert_eq!(remote.calls.get(), before, "nothing reached Cloudflare yet");

    let report = s.flush(&remote).expect("flush");
    assert_eq!(
        (
            report.puts,
            report.deletes,
            report.calls,
            report.calls_failed
        ),
        (2, 1, 1, false),
        "t-1 and the stamp; t-2"
    );
    let stored = Task::from_json(&remote.value("task:t-1").expect("flushed")).expect("a task");
    assert_eq!((stored.version, stored.status.as_str()), (2, "completed"));
    assert_eq!(remote.value("task:t-2"), None);
    assert!(remote.value(keys::TASKS_STAMP).is_some());
    assert!(s.flush_records().is_empty());
    assert!(s.logged("[-] FLUSH 7 records → 2 puts, 1 deletes (1 call)"));
}

#[test]
fn a_hundred_creates_and_updates_flush_in_one_call() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    let mut wanted: Vec<String> = (0..100).map(|n| keys::task(&format!("t-{n}"))).collect();
    wanted.push(keys::TASKS_STAMP.to_owned());
    s.with_kv(&remote, |kv| kv.get_many(&wanted))
        .expect("warm the working copy");
    assert_eq!(
        (remote.calls.get().list_keys, remote.calls.get().get_many),
        (1, 0),
        "one listing: none of them exists"
    );
    for n in 0..100 {
        let created = format!(r#"{{"id":"t-{n}","title":"Task {n}"}}"#);
        let updated = format!(r#"{{"id":"t-{n}","status":"in_progress"}}"#);
        assert!(matches!(
            s.send(&remote, "tasks.created", &created),
            Handled::Applied { .. }
        ));
        assert!(matches!(
            s.send(&remote, "tasks.updated", &updated),
            Handled::Applied { .. }
        ));
    }
    assert_eq!(
        remote.calls.get().get_many,
        0,
        "no reads beyond the warm-up"
    );

    let report = s.flush(&remote).expect("flush");
    assert_eq!(
        (report.records, report.puts, report.deletes, report.calls),
        (300, 101, 0, 1)
    );
    assert_eq!(remote.calls.get().write_many, 1);
    let writes = remote.writes.borrow();
    let (puts, deletes) = &writes[0];
    assert_eq!((puts.len(), deletes.len()), (101, 0));
    for (key, value) in puts
        .iter()
        .filter(|(k, _)| k.starts_with(keys::TASK_PREFIX))
    {
        let task = Task::from_json(value).expect("a task");
        assert_eq!(task.version, 2, "{key}: the updated document");
    }
    assert_eq!(report.confirmed, 101);
    assert!(s.flush_records().is_empty());
}

#[test]
fn later_writes_of_a_key_win() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    for v in ["1", "2", "3"] {
        s.set("task:a", v);
    }
    s.with_kv(&remote, |kv| {
        kv.delete_many(vec!["task:b".into()])?;
        kv.set_many(vec![("task:b".into(), b"4".to_vec())])?;
        kv.set_many(vec![("task:c".into(), b"5".to_vec())])?;
        kv.delete_many(vec!["task:c".into()])
    })
    .expect("writes");
    let report = s.flush(&remote).expect("flush");
    assert_eq!((report.records, report.puts, report.deletes), (7, 2, 1));
    let writes = remote.writes.borrow();
    let (puts, deletes) = &writes[0];
    assert_eq!(
        puts,
        &[
            ("task:a".to_owned(), b"3".to_vec()),
            ("task:b".to_owned(), b"4".to_vec())
        ]
    );
    assert_eq!(deletes, &["task:c".to_owned()]);
}

fn state(s: &Stores) -> Option<serde_json::Value> {
    s.local
        .peek(keys::FLUSH_STATE)
        .and_then(|v| serde_json::from_slice(&v).ok())
}

#[test]
fn failing_flushes_back_off_then_dead_letter() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    s.set("task:t-1", "one");
    s.set("task:t-1", "two");
    s.with_kv(&remote, |kv| kv.delete_many(vec![keys::TASKS_STAMP.into()]))
        .expect("delete");
    remote.down.set(true);
    for (retry, wait) in [(0, 1), (1, 3), (2, 10), (3, 20), (4, 30)] {
        let report = s.flush(&remote).expect("flush");
        assert!(report.calls_failed, "retry {retry}");
        let st = state(&s).expect("backoff state");
        // The outbox records' backoff: retries made, the first try not one.
        assert_eq!(st["attempts"], retry);
        assert_eq!(
            Timestamp::parse_rfc3339(st["nextAttemptAt"].as_str().unwrap_or_default()),
            Ok(Timestamp(s.now.get() + wait * 1_000))
        );
        let which = if retry == 0 {
            "failed".to_owned()
        } else {
            format!("attempt={retry}/5")
        };
        assert!(s.logged(&format!(
            "[-] FLUSH {which} — store unavailable: cloudflare answered 503; next attempt in {wait} s"
        )));
        // Not due yet: no remote call.
        s.advance(wait * 1_000 - 1);
        let calls = remote.calls.get().write_many;
        let report = s.flush(&remote).expect("flush");
        assert_eq!(report.waiting_until, Some(Timestamp(s.now.get() + 1)));
        assert_eq!(remote.calls.get().write_many, calls);
        s.advance(1);
    }
    let report = s.flush(&remote).expect("fifth retry");
    assert_eq!((report.calls_failed, report.dead), (true, 3));
    assert!(s.logged(
        "[-] DEAD flush of 3 records after 5 attempts: store unavailable: cloudflare answered 503"
    ));
    assert!(s.flush_records().is_empty());
    assert_eq!(state(&s), None);
    let dead: Vec<DeadLetter> = s
        .local
        .keys_with_prefix(keys::DLQ_PREFIX)
        .iter()
        .filter_map(|k| s.local.peek(k))
        .filter_map(|v| serde_json::from_slice(&v).ok())
        .collect();
    assert_eq!(dead.len(), 3);
    assert_eq!(
        dead.iter()
            .map(|d| (d.task_id.as_deref(), d.raw.bytes()))
            .collect::<Vec<_>>(),
        [
            (Some("t-1"), b"one".to_vec()),
            (Some("t-1"), b"two".to_vec()),
            (None, Vec::new())
        ],
        "in record order"
    );
    for d in &dead {
        assert_eq!(
            (d.subject.as_str(), d.attempts, d.errors.len()),
            ("flush", 5, 6),
            "5 retries; the first try's error and theirs"
        );
        assert!(
            d.reason
                .starts_with("gave up flushing to Cloudflare after 5 attempts: "),
            "{}",
            d.reason
        );
    }
    // The working copy still shows the writes Cloudflare never got.
    assert_eq!(s.envelope("task:t-1"), Some(('W', b"two".to_vec())));

    // A later success starts from a clean state.
    remote.down.set(false);
    s.set("task:t-3", "three");
    let report = s.flush(&remote).expect("flush");
    assert_eq!((report.puts, report.calls_failed), (1, false));
}

#[test]
fn a_success_clears_the_backoff() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    s.set("task:a", "1");
    remote.down.set(true);
    s.flush(&remote).expect("flush");
    assert!(state(&s).is_some());
    remote.down.set(false);
    s.advance(3_000);
    let report = s.flush(&remote).expect("flush");
    assert_eq!((report.puts, report.calls_failed), (1, false));
    assert_eq!(state(&s), None);
}

#[test]
fn a_held_lease_stops_a_second_flush() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    s.set("task:a", "1");
    let other = s.clone();
    let seen = Rc::new(Cell::new(None));
    let seen_in_hook = seen.clone();
    remote.during_next_call(move || {
        seen_in_hook.set(Some(other.flush(&FakeRemote::default())));
    });
    let report = s.flush(&remote).expect("flush");
    assert_eq!(report.puts, 1);
    let nested = seen.take().expect("the hook ran").expect("nested flush");
    assert!(nested.held, "{nested:?}");
    assert_eq!(nested.calls, 0);

    // Released afterwards: the next run takes it.
    s.set("task:a", "2");
    assert_eq!(s.flush(&remote).expect("flush").puts, 1);

    // A live lease of a run elsewhere blocks; once lapsed, it is taken.
    let lease = Claim {
        token: "elsewhere".into(),
        until: Timestamp(s.now.get() + 30_000),
    };
    s.local
        .put(keys::FLUSH_LOCK, serde_json::to_vec(&lease).expect("json"));
    s.set("task:a", "3");
    assert!(s.flush(&remote).expect("flush").held);
    s.advance(30_000);
    let report = s.flush(&remote).expect("flush");
    assert_eq!((report.held, report.puts), (false, 1));
    assert_eq!(remote.calls.get().write_many, 3);
}

#[test]
fn writes_during_a_flush_survive_it() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    s.set("task:a", "1");
    s.set("task:b", "1");
    let writer = s.clone();
    remote.during_next_call(move || writer.set("task:a", "2"));
    let report = s.flush(&remote).expect("flush");
    assert_eq!((report.records, report.puts, report.confirmed), (2, 2, 1));
    assert_eq!(remote.value("task:a"), Some(b"1".to_vec()));
    // b holds what was sent: now a fetched entry. a changed: still a write.
    assert_eq!(s.envelope("task:b"), Some(('V', b"1".to_vec())));
    assert_eq!(s.envelope("task:a"), Some(('W', b"2".to_vec())));
    assert_eq!(s.flush_records().len(), 1);

    let report = s.flush(&remote).expect("flush");
    assert_eq!((report.records, report.puts, report.confirmed), (1, 1, 1));
    assert_eq!(remote.value("task:a"), Some(b"2".to_vec()));
    assert_eq!(s.envelope("task:a"), Some(('V', b"2".to_vec())));
    assert!(s.flush_records().is_empty());

    // Flushed entries expire like fetched ones.
    s.advance(TTL);
    let before = remote.calls.get().get_many;
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("2"));
    assert_eq!(remote.calls.get().get_many, before + 1);
}

#[test]
fn unreadable_flush_records_are_dead_lettered() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    s.local.put(&keys::flush(1, "task:a"), "garbage");
    s.set("task:b", "1");
    let report = s.flush(&remote).expect("flush");
    assert_eq!((report.dead, report.records, report.puts), (1, 1, 1));
    assert!(s.flush_records().is_empty());
    assert_eq!(s.local.keys_with_prefix(keys::DLQ_PREFIX).len(), 1);
    assert!(s.logged("is unreadable"));
}

#[test]
fn nothing_to_flush_costs_no_remote_call() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    assert_eq!(s.flush(&remote).expect("flush"), FlushReport::default());
    assert_eq!(remote.calls.get(), RemoteCalls::default());
}

#[test]
fn counters_are_refused() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    let refused = s.with_kv(&remote, |kv| kv.increment("seq:x", 1));
    assert!(matches!(refused, Err(StoreError::Other(m)) if m.contains("not supported")));
}

#[test]
fn a_purged_task_is_fetched_again_not_taken_for_absent() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    remote.put("task:a", "1");
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("1"));
    remote.put("task:a", "2");
    let purged = s.with_kv(&remote, |kv| kv.purge(None)).expect("purge");
    assert!(purged >= 1);
    // The listing is still fresh, yet the purged key is asked for again.
    assert_eq!(get(&s, &remote, "task:a").as_deref(), Some("2"));
}

#[test]
fn a_batch_on_the_working_copy_flushes_each_task_at_its_last_version() {
    let (s, remote) = (Stores::new(), FakeRemote::default());
    remote.put("task:old", r#"{"id":"old","title":"old","status":"pending","createdAt":"2026-11-23T00:00:00.000Z","updatedAt":"2026-11-23T00:00:00.000Z","version":1}"#);
    let msgs: Vec<(&str, String, u64)> = (0..50)
        .flat_map(|i| {
            let id = format!("b-{i}");
            [
                (
                    "tasks.created",
                    format!(r#"{{"id":"{id}","title":"{id} v1"}}"#),
                    0,
                ),
                (
                    "tasks.updated",
                    format!(r#"{{"id":"{id}","title":"{id} v2"}}"#),
                    0,
                ),
            ]
        })
        .chain([(
            "tasks.updated",
            r#"{"id":"old","title":"old v2"}"#.to_owned(),
            0,
        )])
        .enumerate()
        .map(|(i, (subject, payload, _))| (subject, payload, i as u64 + 1))
        .collect();
    let incoming: Vec<Incoming> = msgs
        .iter()
        .map(|(subject, payload, seq)| Incoming {
            subject,
            payload: payload.as_bytes(),
            header_correlation_id: None,
            handler_timed_out_ms: None,
            stream_sequence: Some(*seq),
            stream_epoch: None,
        })
        .collect();
    let (clock, unique, log) = (s.clock(), s.unique(), s.log());
    let outcomes = s.with_kv(&remote, |kv| {
        Writer {
            tasks: kv,
            local: &*s.local,
            clock: &clock,
            unique: &unique,
            log: &log,
            verify_writes: false,
            journal: &Journal::new(),
            feed: &MemoryKv::new(),
            commit_until: None,
        }
        .handle_batch(&incoming)
    });
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Ok(Handled::Applied { .. }))),
        "{outcomes:?}"
    );
    s.flush(&remote).expect("flushed");
    let remote_task = |id: &str| {
        remote
            .value(&format!("task:{id}"))
            .and_then(|b| Task::from_json(&b).ok())
            .map(|t| (t.version, t.title))
    };
    assert_eq!(remote_task("b-0"), Some((2, "b-0 v2".to_owned())));
    assert_eq!(remote_task("b-49"), Some((2, "b-49 v2".to_owned())));
    assert_eq!(remote_task("old"), Some((2, "old v2".to_owned())));
    assert!(s.flush_records().is_empty(), "everything flushed");
}
