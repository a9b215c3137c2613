//! JetStream mode against a real `nats-server -js` on loopback: the stream
//! and durable consumer made ready (or the difference named), acknowledgement
//! only after success, redelivery after an error or a hung handler, batches
//! and `max_ack_pending`, drain, restart of the server, and messages
//! published while no listener ran.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use serde_json::json;
use support::*;
use trigger_nats_core::config::{self, TriggerConfig};
use trigger_nats_core::consumer::provision;
use trigger_nats_core::listener::{self, HandlerFuture, Message};
use trigger_nats_core::plan::{self, Subscription};
use trigger_nats_core::{
    DELIVERED_HEADER, HANDLER_TIMEOUT_HEADER, LEASE_HEADER, STREAM_EPOCH_HEADER,
    STREAM_SEQUENCE_HEADER,
};

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A `nats-server -js` whose store is a fresh directory, removed at drop.
struct JsServer {
    server: Option<Server>,
    port: u16,
    dir: PathBuf,
}

impl JsServer {
    fn start() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("nats-js-{}-{port}", std::process::id()));
        let mut s = JsServer {
            server: None,
            port,
            dir,
        };
        s.restart();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        self.server = None;
    }

    /// (Re)starts the server on the same port and store.
    fn restart(&mut self) {
        self.server = None;
        let dir = self.dir.to_string_lossy().into_owned();
        self.server = Some(start_server_with(self.port, &["-js", "-sd", &dir]));
    }
}

impl Drop for JsServer {
    fn drop(&mut self) {
        self.server = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The subscription a `[[trigger.nats]]` entry with these fields plans.
fn js_sub(fields: serde_json::Value) -> Subscription {
    let mut entry = json!({"component": "writer", "subject": "tasks.>",
        "stream": "TASKS", "consumer": "spin-tasks-writer",
        "stream_subjects": ["tasks.>"], "handler_timeout_ms": 1000, "ack_wait_ms": 5000});
    if let (Some(e), Some(f)) = (entry.as_object_mut(), fields.as_object()) {
        e.extend(f.clone());
    }
    let entry: TriggerConfig = serde_json::from_value(entry).expect("an entry");
    plan::plan(&[entry]).expect("a valid entry").remove(0)
}

async fn publish(url: &str, n: usize, prefix: &str) -> TestResult {
    let js = jetstream::new(async_nats::connect(url).await?);
    for i in 0..n {
        js.publish("tasks.created", format!("{prefix}{i}").into())
            .await?
            .await?;
    }
    Ok(())
}

/// The consumer's (pending, acknowledgements outstanding) counts.
async fn consumer_counts(url: &str) -> Result<(u64, usize), async_nats::Error> {
    durable_counts(url, "spin-tasks-writer").await
}

/// Pending and unacknowledged messages of durable consumer `name` on `TASKS`.
async fn durable_counts(url: &str, name: &str) -> Result<(u64, usize), async_nats::Error> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let mut stream = js.get_stream("TASKS").await?;
    let _ = stream.info().await?;
    let info = stream.consumer_info(name).await?;
    Ok((info.num_pending, info.num_ack_pending))
}

async fn until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Fails a payload starting with `flaky` on its first delivery; hangs on
/// `hang` unless called again with the handler-timeout header.
#[derive(Clone, Default)]
struct Flaky {
    seen: Arc<Mutex<Vec<Message>>>,
}

impl Flaky {
    fn handler(&self) -> Arc<dyn listener::Handler> {
        let seen = self.seen.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let seen = seen.clone();
            Box::pin(async move {
                let header = |name: &str| {
                    msg.headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                };
                if msg.payload == b"hang" && header(HANDLER_TIMEOUT_HEADER).is_none() {
                    std::future::pending::<()>().await;
                }
                let first = header(DELIVERED_HEADER).as_deref() == Some("1");
                let flaky = msg.payload.starts_with(b"flaky");
                if let Ok(mut s) = seen.lock() {
                    s.push(msg);
                }
                if flaky && first {
                    Err("flaky on its first delivery".into())
                } else {
                    Ok(())
                }
            })
        })
    }

    /// `payload#delivery` for each call, in order.
    fn calls(&self) -> Vec<String> {
        self.seen
            .lock()
            .map(|s| {
                s.iter()
                    .map(|m| {
                        let delivered = m
                            .headers
                            .iter()
                            .find(|(n, _)| n == DELIVERED_HEADER)
                            .map(|(_, v)| v.as_str())
                            .unwrap_or("?");
                        format!("{}#{delivered}", String::from_utf8_lossy(&m.payload))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn run_listener(
    url: &str,
    sub: Subscription,
    handler: Arc<dyn listener::Handler>,
) -> Result<Running, async_nats::Error> {
    run_listeners(url, vec![sub], handler).await
}

/// One instance running `subs` (all an entry plans, e.g. one per partition).
async fn run_listeners(
    url: &str,
    subs: Vec<Subscription>,
    handler: Arc<dyn listener::Handler>,
) -> Result<Running, async_nats::Error> {
    let client = listener::connect(
        url,
        &config::Credentials::None,
        "test",
        std::future::pending(),
    )
    .await?
    .ok_or("no client")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        listener::run(client, subs, handler, async move {
            let _ = stopped.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(Running { stop, task })
}

#[tokio::test]
async fn a_missing_stream_and_consumer_are_created_and_a_different_one_is_named() -> TestResult {
    let server = JsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let plan = |fields| js_sub(fields).jetstream.expect("JetStream mode");
    // Without stream_subjects, a missing stream is an error that says what to do.
    let no_create = plan(json!({"stream_subjects": null}));
    let err = provision(&client, &no_create)
        .await
        .expect_err("no stream")
        .to_string();
    assert!(err.contains("stream \"TASKS\" does not exist"), "{err}");
    // With them, both are created; a second provision finds them as they are.
    provision(&client, &plan(json!({}))).await?;
    provision(&client, &plan(json!({}))).await?;
    provision(&client, &no_create).await?;
    // A consumer that differs is named field by field, not changed.
    let err = provision(
        &client,
        &plan(json!({"ack_wait_ms": 9000, "batch": 50, "max_ack_pending": 100})),
    )
    .await
    .expect_err("differs")
    .to_string();
    assert!(
        err.contains("ack_wait_ms is 5000 on the server, 9000 in the manifest"),
        "{err}"
    );
    assert!(
        err.contains("nats consumer rm TASKS spin-tasks-writer"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn acks_follow_success_and_a_failure_is_delivered_again_in_order() -> TestResult {
    let server = JsServer::start();
    let flaky = Flaky::default();
    let running = run_listener(&server.url(), js_sub(json!({})), flaky.handler()).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    for p in ["a", "flaky-b", "c"] {
        js.publish("tasks.created", p.into()).await?.await?;
    }
    assert!(
        until(10, || flaky.calls().len() >= 4).await,
        "{:?}",
        flaky.calls()
    );
    // b failed once and came back; c waited for it (never handled before b succeeded).
    let calls = flaky.calls();
    let b_ok = calls.iter().position(|c| c == "flaky-b#2");
    let c_first = calls.iter().position(|c| c.starts_with("c#"));
    assert_eq!(calls[..2], ["a#1", "flaky-b#1"], "{calls:?}");
    assert!(b_ok.is_some() && c_first > b_ok, "{calls:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if consumer_counts(&server.url()).await? == (0, 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        consumer_counts(&server.url()).await?,
        (0, 0),
        "all acknowledged"
    );
    // Every message carries its stream sequence.
    let seqs: Vec<String> = flaky
        .seen
        .lock()
        .map(|s| {
            s.iter()
                .filter_map(|m| {
                    m.headers
                        .iter()
                        .find(|(n, _)| n == STREAM_SEQUENCE_HEADER)
                        .map(|(_, v)| v.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(seqs[..2], ["1", "2"]);
    running.stop().await?;
    Ok(())
}

/// A hand-back first takes the consumer's waiting slot with a pull of its
/// own (`clear_waiting`). When that pull outlived the time it was given
/// (`max_wait` and a half, 30 ms here, for a pull of 50 ms), it was dropped
/// unread while the server still held it; the hand-back then met a pull
/// nobody listened to, and nats-server 2.9.10 lost the message until
/// `ack_wait` (30 s here). The stall test met the same with `max_wait` 100
/// ms, when the slot came free late in that time.
#[tokio::test]
async fn a_failed_message_comes_back_at_once_when_pulls_are_short() -> TestResult {
    let server = JsServer::start();
    let flaky = Flaky::default();
    let sub = js_sub(json!({"max_wait_ms": 20, "ack_wait_ms": 30000}));
    let running = run_listener(&server.url(), sub, flaky.handler()).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    for p in ["a", "flaky-b", "c", "flaky-d", "e"] {
        js.publish("tasks.created", p.into()).await?.await?;
    }
    // What was handled, in order (a flaky message fails its first delivery).
    let handled = || -> Vec<String> {
        flaky
            .calls()
            .iter()
            .filter(|c| !(c.starts_with("flaky") && c.ends_with("#1")))
            .filter_map(|c| c.split('#').next().map(str::to_owned))
            .collect()
    };
    // At most two failures, a second's pause after each: far less than
    // ack_wait.
    assert!(
        until(8, || handled().len() >= 5).await,
        "{:?}",
        flaky.calls()
    );
    assert_eq!(
        handled(),
        ["a", "flaky-b", "c", "flaky-d", "e"],
        "{:?}",
        flaky.calls()
    );
    running.stop().await?;
    Ok(())
}

/// nats-server 2.9.10 ends a pull without a word when a message comes for
/// it just after it expired, before its expiry timer ran (`nextWaiting`
/// drops an expired request without the 408 `processWaiting` sends), and
/// the client library waits 5 s past `expires` for that word. Messages keep
/// coming here while pulls of 10 ms expire, so some pull ends that way: the
/// listener must go on at once, not hold what that pull brought for 5 s.
#[tokio::test]
async fn a_pull_the_server_ends_without_a_word_does_not_hold_delivery_back() -> TestResult {
    let server = JsServer::start();
    let times: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let handler = {
        let times = times.clone();
        Arc::new(move |_: &str, _: Message| -> HandlerFuture {
            let times = times.clone();
            Box::pin(async move {
                if let Ok(mut t) = times.lock() {
                    t.push(Instant::now());
                }
                Ok(())
            })
        }) as Arc<dyn listener::Handler>
    };
    let sub = js_sub(json!({"max_wait_ms": 10, "batch": 20}));
    let running = run_listener(&server.url(), sub, handler).await?;
    let n = 3000;
    publish(&server.url(), n, "m").await?;
    let count = || times.lock().map(|t| t.len()).unwrap_or(0);
    assert!(until(20, || count() >= n).await, "{} of {n}", count());
    let longest = times
        .lock()
        .map(|t| {
            t.windows(2)
                .map(|w| w[1].saturating_duration_since(w[0]))
                .max()
                .unwrap_or_default()
        })
        .unwrap_or_default();
    assert!(
        longest < Duration::from_secs(2),
        "delivery stopped for {longest:?}"
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_hung_handler_is_cancelled_and_the_message_recorded_by_the_second_call() -> TestResult {
    let server = JsServer::start();
    let flaky = Flaky::default();
    let running = run_listener(&server.url(), js_sub(json!({})), flaky.handler()).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.publish("tasks.created", "hang".into()).await?.await?;
    js.publish("tasks.created", "after".into()).await?.await?;
    assert!(
        until(10, || flaky.calls().len() >= 2).await,
        "{:?}",
        flaky.calls()
    );
    assert_eq!(flaky.calls(), ["hang#1", "after#1"]);
    let again = flaky
        .seen
        .lock()
        .map(|s| s[0].headers.clone())
        .unwrap_or_default();
    assert!(
        again
            .iter()
            .any(|(n, v)| n == HANDLER_TIMEOUT_HEADER && v == "1000")
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn messages_published_before_the_listener_starts_are_all_handled_in_order() -> TestResult {
    let server = JsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let sub = js_sub(json!({"batch": 100}));
    provision(&client, sub.jetstream.as_ref().expect("plan")).await?;
    publish(&server.url(), 250, "m").await?;
    let rec = Recorder::default();
    let running = run_listener(&server.url(), sub, rec.handler()).await?;
    assert!(
        until(20, || rec.payloads().len() >= 250).await,
        "{}",
        rec.payloads().len()
    );
    let want: Vec<String> = (0..250).map(|i| format!("m{i}")).collect();
    assert_eq!(rec.payloads(), want, "each once, in publish order");
    let js = jetstream::new(client);
    let info = js
        .get_stream("TASKS")
        .await?
        .consumer_info("spin-tasks-writer")
        .await?;
    assert_eq!(info.config.max_ack_pending, 100, "one batch in flight");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_stop_handles_what_was_delivered_and_the_rest_waits_in_the_stream() -> TestResult {
    let server = JsServer::start();
    let rec = Recorder {
        delay: Duration::from_millis(20),
        ..Default::default()
    };
    let sub = js_sub(json!({"batch": 10}));
    let running = run_listener(&server.url(), sub.clone(), rec.handler()).await?;
    publish(&server.url(), 60, "d").await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.stop().await?;
    let first = rec.payloads().len();
    assert!(first > 0 && first < 60, "stopped mid-way ({first})");
    let (pending, unacked) = consumer_counts(&server.url()).await?;
    assert_eq!(unacked, 0, "nothing delivered was left unacknowledged");
    assert_eq!(pending as usize, 60 - first);
    // Started again, the same durable consumer goes on where it stopped.
    let rec2 = Recorder::default();
    let running = run_listener(&server.url(), sub, rec2.handler()).await?;
    assert!(until(10, || rec2.payloads().len() >= 60 - first).await);
    let mut all = rec.payloads();
    all.extend(rec2.payloads());
    let want: Vec<String> = (0..60).map(|i| format!("d{i}")).collect();
    assert_eq!(all, want, "every message once, in order");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_consumer_resumes_after_a_server_restart() -> TestResult {
    let mut server = JsServer::start();
    let rec = Recorder::default();
    let running = run_listener(&server.url(), js_sub(json!({})), rec.handler()).await?;
    publish(&server.url(), 5, "before").await?;
    assert!(until(10, || rec.payloads().len() >= 5).await);
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    while publish(&server.url(), 5, "after").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the restarted server took no publish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        until(30, || rec
            .payloads()
            .iter()
            .filter(|p| p.starts_with("after"))
            .count()
            >= 5)
        .await,
        "{:?}",
        rec.payloads()
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn deliveries_a_dead_instance_left_come_back_before_newer_messages() -> TestResult {
    let server = JsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let sub = js_sub(json!({"ack_wait_ms": 4000}));
    let plan = sub.jetstream.clone().expect("plan");
    provision(&client, &plan).await?;
    publish(&server.url(), 10, "e").await?;
    // An instance takes the first three and dies before acknowledging them.
    {
        let dead = provision(&client, &plan).await?;
        let mut taken = dead.fetch().max_messages(3).messages().await?;
        let mut n = 0;
        while let Some(m) = taken.next().await {
            m?;
            n += 1;
        }
        assert_eq!(n, 3);
    }
    let rec = Recorder::default();
    let started = Instant::now();
    let running = run_listener(&server.url(), sub, rec.handler()).await?;
    assert!(
        until(20, || rec.payloads().len() >= 10).await,
        "{:?}",
        rec.payloads()
    );
    let want: Vec<String> = (0..10).map(|i| format!("e{i}")).collect();
    assert_eq!(rec.payloads(), want, "the three came back first");
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "it waited for them"
    );
    running.stop().await?;
    Ok(())
}

/// A component that takes batches: records each call's messages, fails the
/// first delivery of a payload starting with `flaky`, hangs on `hang`
/// unless called again with the handler-timeout header.
#[derive(Clone, Default)]
struct Batches {
    calls: Arc<Mutex<Vec<Vec<Message>>>>,
}

impl listener::Handler for Batches {
    fn handle(&self, _: &str, _: Message) -> HandlerFuture {
        Box::pin(async { Err("called one at a time".to_owned()) })
    }

    fn takes_batches(&self, _: &str) -> bool {
        true
    }

    fn handle_batch(&self, _: &str, msgs: Vec<Message>) -> listener::BatchFuture {
        let calls = self.calls.clone();
        Box::pin(async move {
            let timed_out =
                |m: &Message| m.headers.iter().any(|(n, _)| n == HANDLER_TIMEOUT_HEADER);
            if msgs.iter().any(|m| m.payload == b"hang" && !timed_out(m)) {
                std::future::pending::<()>().await;
            }
            let outcomes = msgs
                .iter()
                .map(|m| {
                    let first = m.stream.is_some_and(|s| s.delivered == 1);
                    if m.payload.starts_with(b"flaky") && first {
                        Err("flaky on its first delivery".to_owned())
                    } else {
                        Ok(())
                    }
                })
                .collect();
            if let Ok(mut c) = calls.lock() {
                c.push(msgs);
            }
            outcomes
        })
    }
}

impl Batches {
    /// Each call as its `payload#delivery` list.
    fn calls(&self) -> Vec<Vec<String>> {
        self.calls
            .lock()
            .map(|c| {
                c.iter()
                    .map(|batch| {
                        batch
                            .iter()
                            .map(|m| {
                                let d = m.stream.map_or(0, |s| s.delivered);
                                format!("{}#{d}", String::from_utf8_lossy(&m.payload))
                            })
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn handled(&self) -> usize {
        self.calls().iter().map(Vec::len).sum()
    }
}

#[tokio::test]
async fn a_pull_whose_messages_are_still_being_published_is_handed_over_in_few_calls() -> TestResult
{
    let server = JsServer::start();
    let batches = Batches::default();
    let running = run_listener(
        &server.url(),
        js_sub(json!({"batch": 50})),
        Arc::new(batches.clone()),
    )
    .await?;
    // A pull is waiting; 50 messages come one after another, each stored
    // before the next is sent (a fraction of a millisecond apart here).
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..50 {
        js.publish("tasks.created", format!("g{i}").into())
            .await?
            .await?;
    }
    assert!(until(10, || batches.handled() >= 50).await);
    let calls: Vec<usize> = batches
        .calls()
        .iter()
        .map(Vec::len)
        .filter(|n| *n > 0)
        .collect();
    // Taken as they arrived, the first call would hold the first message
    // alone, and the rest follow a few at a time.
    assert!(
        calls.len() <= 3 && calls[0] >= 20,
        "calls of {calls:?} messages"
    );
    let handled: Vec<String> = batches.calls().concat();
    let want: Vec<String> = (0..50).map(|i| format!("g{i}#1")).collect();
    assert_eq!(handled, want, "in order, once");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn tick_ms_calls_a_batch_component_with_no_message_while_none_comes_and_stops_with_the_listener()
-> TestResult {
    let server = JsServer::start();
    let sub = js_sub(json!({"tick_ms": 200}));
    let batches = Batches::default();
    let running = run_listener(&server.url(), sub, Arc::new(batches.clone())).await?;
    let empty = |b: &Batches| b.calls().iter().filter(|c| c.is_empty()).count();
    // No message published: only empty calls, about five a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ticks = empty(&batches);
    assert!((3..=8).contains(&ticks), "{ticks} empty calls in 1.5 s");
    assert_eq!(batches.handled(), 0);
    // Messages still go in order, beside the ticks.
    publish(&server.url(), 30, "t").await?;
    assert!(until(10, || batches.handled() >= 30).await);
    let handled: Vec<String> = batches.calls().concat();
    let expected: Vec<String> = (0..30).map(|i| format!("t{i}#1")).collect();
    assert_eq!(handled, expected);
    running.stop().await?;
    let after_stop = empty(&batches);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(empty(&batches), after_stop, "no tick call after the stop");
    Ok(())
}

#[tokio::test]
async fn tick_ms_on_a_component_without_handle_batch_is_refused_by_name() -> TestResult {
    let server = JsServer::start();
    let sub = js_sub(json!({"tick_ms": 200}));
    let rec = Recorder::default();
    let running = run_listener(&server.url(), sub, rec.handler()).await?;
    let error = running.task.await?.expect_err("refused");
    assert!(
        error.contains(r#"component "writer" has tick_ms but does not export handle-batch"#),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn a_batch_component_gets_whole_pulls_and_what_follows_a_failure_comes_back_in_order()
-> TestResult {
    let server = JsServer::start();
    // 250 messages waiting before the listener starts: pulls of at most 100.
    let sub = js_sub(json!({"batch": 100}));
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    publish(&server.url(), 250, "m").await?;
    let batches = Batches::default();
    let running = run_listener(&server.url(), sub, Arc::new(batches.clone())).await?;
    assert!(until(10, || batches.handled() >= 250).await);
    let calls = batches.calls();
    assert!(calls.iter().all(|c| c.len() <= 100), "{calls:?}");
    // A call takes what has arrived of its pull so far, so on a busy machine
    // a pull may take a few calls; one call per message would be 250.
    assert!(
        calls.len() <= 25,
        "few calls for 250 waiting messages: {}",
        calls.len()
    );
    let all: Vec<String> = calls.concat();
    let expected: Vec<String> = (0..250).map(|i| format!("m{i}#1")).collect();
    assert_eq!(all, expected, "every message once, in order");
    // Stream metadata on every message: sequence 1.., published time set.
    let seen = batches.calls.lock().map(|c| c.concat()).unwrap_or_default();
    assert!(seen.iter().enumerate().all(|(i, m)| {
        m.stream
            .is_some_and(|s| s.sequence == i as u64 + 1 && s.published_ms > 1_700_000_000_000)
    }));

    // A failure in the middle of a batch: what came before it is acknowledged,
    // it and what follows come back, in order, before anything newer.
    batches.calls.lock().map(|mut c| c.clear()).ok();
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let acks = futures::future::try_join_all(
        ["x0", "x1", "flaky-x2", "x3", "x4"].map(|p| js.publish("tasks.created", p.into())),
    )
    .await?;
    for ack in acks {
        ack.await?;
    }
    assert!(until(10, || batches.calls().concat().contains(&"x4#2".to_owned())).await);
    let all = batches.calls().concat();
    let x2_ok = all.iter().position(|c| c == "flaky-x2#2");
    assert!(x2_ok.is_some(), "{all:?}");
    assert_eq!(
        all[x2_ok.unwrap_or(0)..],
        ["flaky-x2#2", "x3#2", "x4#2"],
        "{all:?}"
    );
    assert!(
        !all.contains(&"x1#2".to_owned()),
        "x1 was acknowledged: {all:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while consumer_counts(&server.url()).await? != (0, 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        consumer_counts(&server.url()).await?,
        (0, 0),
        "all acknowledged"
    );

    // A batch that hangs is cancelled and handed over again with the header.
    batches.calls.lock().map(|mut c| c.clear()).ok();
    js.publish("tasks.created", "hang".into()).await?.await?;
    assert!(until(5, || batches.handled() >= 1).await);
    let seen = batches.calls.lock().map(|c| c.concat()).unwrap_or_default();
    assert!(
        seen[0]
            .headers
            .iter()
            .any(|(n, v)| n == HANDLER_TIMEOUT_HEADER && v == "1000")
    );
    running.stop().await?;
    Ok(())
}

/// Records, across instances, which stream sequences have finished, and
/// every message that started while an earlier one had not. With `stall`
/// (a stream sequence and a duration), the first call for that sequence
/// makes every call, on any instance, wait until that long after it: a
/// shared store that stops answering for a while.
#[derive(Clone, Default)]
struct InOrder {
    finished: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    early: Arc<Mutex<Vec<u64>>>,
    by_instance: Arc<Mutex<[usize; 3]>>,
    stall: Option<(u64, Duration)>,
    stalled_until: Arc<Mutex<Option<Instant>>>,
}

impl InOrder {
    fn handler(&self, instance: usize) -> Arc<dyn listener::Handler> {
        let this = self.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let this = this.clone();
            Box::pin(async move {
                if let Ok(mut n) = this.by_instance.lock() {
                    n[instance] += 1;
                }
                let seq = msg.stream.map_or(0, |s| s.sequence);
                let until = this.stalled_until.lock().ok().and_then(|mut u| {
                    match this.stall {
                        Some((at, long)) if at == seq && u.is_none() => {
                            *u = Some(Instant::now() + long);
                        }
                        _ => {}
                    }
                    *u
                });
                if let Some(until) = until {
                    tokio::time::sleep_until(until.into()).await;
                }
                let all_before = this
                    .finished
                    .lock()
                    .map(|f| (1..seq).all(|s| f.contains(&s)))
                    .unwrap_or(false);
                if !all_before && let Ok(mut e) = this.early.lock() {
                    e.push(seq);
                }
                tokio::time::sleep(Duration::from_millis(seq % 3)).await;
                if let Ok(mut f) = this.finished.lock() {
                    f.insert(seq);
                }
                Ok(())
            })
        })
    }

    fn count(&self) -> usize {
        self.finished.lock().map(|f| f.len()).unwrap_or(0)
    }
}

#[tokio::test]
async fn two_instances_on_one_consumer_never_handle_a_message_before_the_earlier_ones() -> TestResult
{
    let server = JsServer::start();
    let sub = js_sub(json!({"batch": 20}));
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    let order = InOrder::default();
    let a = run_listener(&server.url(), sub.clone(), order.handler(0)).await?;
    let b = run_listener(&server.url(), sub, order.handler(1)).await?;
    // Published while both pull, so pulls often bring part of a batch at a time.
    let js = jetstream::new(client);
    for i in 0..600 {
        js.publish("tasks.created", format!("m{i}").into())
            .await?
            .await?;
    }
    assert!(
        until(30, || order.count() >= 600).await,
        "{}",
        order.count()
    );
    let early = order.early.lock().map(|e| e.clone()).unwrap_or_default();
    assert!(
        early.is_empty(),
        "handled before an earlier message finished: {early:?}"
    );
    let shares = order.by_instance.lock().map(|n| *n).unwrap_or_default();
    assert!(
        shares[0] > 0 && shares[1] > 0,
        "both instances took part: {shares:?}"
    );
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_store_that_stalls_every_instance_holds_delivery_back_only_while_it_stalls() -> TestResult
{
    let server = JsServer::start();
    // Pulls end short (a few messages each), so while one instance is stuck
    // with part of the stream the others' pulls bring newer messages. Calls
    // time out while it lasts, so their messages are handed back and come
    // again, mixed with new ones.
    let sub = js_sub(
        json!({"batch": 20, "max_wait_ms": 100, "handler_timeout_ms": 1500,
        "ack_wait_ms": 9000}),
    );
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    // The store stops answering for 5 s at the 100th message.
    let order = InOrder {
        stall: Some((100, Duration::from_secs(5))),
        ..InOrder::default()
    };
    let mut running = Vec::new();
    for i in 0..3 {
        running.push(run_listener(&server.url(), sub.clone(), order.handler(i)).await?);
    }
    let js = jetstream::new(client);
    for i in 0..400 {
        js.publish("tasks.created", format!("m{i}").into())
            .await?
            .await?;
        if i % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    let stalled_until = order
        .stalled_until
        .lock()
        .ok()
        .and_then(|u| *u)
        .ok_or("the stall happened")?;
    // Drained soon after the store answers again: a few takeover waits, not
    // one `ack_wait` per pull.
    let drained = until(30, || order.count() >= 400).await;
    let after = Instant::now().saturating_duration_since(stalled_until);
    assert!(drained, "{} of 400 handled", order.count());
    assert!(
        after < Duration::from_secs(10),
        "drained {after:?} after the stall ended"
    );
    let early = order.early.lock().map(|e| e.clone()).unwrap_or_default();
    assert!(
        early.is_empty(),
        "handled before an earlier message finished: {early:?}"
    );
    for r in running {
        r.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_standby_does_not_overtake_messages_an_instance_died_holding() -> TestResult {
    let server = JsServer::start();
    let sub = js_sub(json!({"batch": 20, "ack_wait_ms": 4000, "max_wait_ms": 1000}));
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    // (instance, payload) in the order handling started; each call takes 150 ms,
    // so whoever takes the first messages still holds most of them a moment later.
    let started: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let handler = |instance: usize| -> Arc<dyn listener::Handler> {
        let started = started.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let started = started.clone();
            Box::pin(async move {
                if let Ok(mut s) = started.lock() {
                    s.push((instance, String::from_utf8_lossy(&msg.payload).into_owned()));
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(())
            })
        })
    };
    let mut running = [
        Some(run_listener(&server.url(), sub.clone(), handler(0)).await?),
        Some(run_listener(&server.url(), sub, handler(1)).await?),
    ];
    let js = jetstream::new(client);
    for i in 0..5 {
        js.publish("tasks.created", format!("old-{i}").into())
            .await?
            .await?;
    }
    let first_taker = || started.lock().ok().and_then(|s| s.first().map(|(i, _)| *i));
    assert!(until(5, || first_taker().is_some()).await);
    let dead = first_taker().unwrap_or(0);
    // It dies holding its pull (nothing of it acknowledged: that happens when the pull is over).
    if let Some(r) = running[dead].take() {
        r.task.abort();
    }
    for i in 0..5 {
        js.publish("tasks.created", format!("new-{i}").into())
            .await?
            .await?;
    }
    let survivor = 1 - dead;
    let by_survivor = || -> Vec<String> {
        started
            .lock()
            .map(|s| {
                s.iter()
                    .filter(|(i, _)| *i == survivor)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        until(20, || by_survivor().iter().any(|p| p == "new-4")).await,
        "{:?}",
        by_survivor()
    );
    // Every old message comes back to the survivor before any new one.
    let seen = by_survivor();
    let first_new = seen.iter().position(|p| p.starts_with("new-"));
    let last_old = seen.iter().rposition(|p| p.starts_with("old-"));
    assert!(
        last_old.is_some() && first_new > last_old,
        "the survivor handled a newer message before the dead instance's: {seen:?}"
    );
    if let Some(r) = running[survivor].take() {
        r.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_pull_that_takes_longer_than_ack_wait_is_not_delivered_again() -> TestResult {
    let server = JsServer::start();
    // Five messages, 2 s each, in one pull: 10 s, more than twice ack_wait.
    let sub = js_sub(json!({"batch": 5, "handler_timeout_ms": 3000, "ack_wait_ms": 4000}));
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    publish(&server.url(), 5, "slow-").await?;
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let handler: Arc<dyn listener::Handler> = {
        let calls = calls.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let calls = calls.clone();
            Box::pin(async move {
                let delivered = msg.stream.map_or(0, |s| s.delivered);
                if let Ok(mut c) = calls.lock() {
                    c.push(format!(
                        "{}#{delivered}",
                        String::from_utf8_lossy(&msg.payload)
                    ));
                }
                tokio::time::sleep(Duration::from_millis(2000)).await;
                Ok(())
            })
        })
    };
    let running = run_listener(&server.url(), sub, handler).await?;
    let count = || calls.lock().map(|c| c.len()).unwrap_or(0);
    assert!(until(20, || count() >= 5).await);
    // Long enough for a redelivery to show up if the server had given up on them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = calls.lock().map(|c| c.clone()).unwrap_or_default();
    let expected: Vec<String> = (0..5).map(|i| format!("slow-{i}#1")).collect();
    assert_eq!(seen, expected, "each handled once, on its first delivery");
    assert_eq!(
        consumer_counts(&server.url()).await?,
        (0, 0),
        "all acknowledged"
    );
    running.stop().await?;
    Ok(())
}

/// The stream TASKS (subjects `tasks.>`) made by hand, as an operator or
/// another app would, before the trigger starts.
async fn stream_by_hand(url: &str) -> TestResult {
    let js = jetstream::new(async_nats::connect(url).await?);
    js.create_stream(jetstream::stream::Config {
        name: "TASKS".into(),
        subjects: vec!["tasks.>".into()],
        ..Default::default()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_stream_storing_subjects_no_entry_takes_is_refused_by_name() -> TestResult {
    let server = JsServer::start();
    stream_by_hand(&server.url()).await?;
    let client = async_nats::connect(server.url()).await?;
    let narrow = js_sub(json!({"subject": "tasks.*", "stream_subjects": null}));
    let err = provision(&client, narrow.jetstream.as_ref().ok_or("JetStream mode")?)
        .await
        .expect_err("tasks.a.b would be stored and never handled")
        .to_string();
    assert!(
        err.contains("stores tasks.> that no [[trigger.nats]] entry takes"),
        "{err}"
    );
    let wide = js_sub(json!({"stream_subjects": null}));
    provision(&client, wide.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    Ok(())
}

#[tokio::test]
async fn a_message_the_filter_skips_does_not_hold_back_the_ones_after_it() -> TestResult {
    // nats-server 2.9 leaves the acknowledgement floor below a message the
    // consumer's filter skips until a later acknowledgement: a pull that
    // waited for the floor to reach its first message waited for good.
    let server = JsServer::start();
    stream_by_hand(&server.url()).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.publish("tasks.q.r", "deeper".into()).await?.await?;
    publish(&server.url(), 20, "after-").await?;
    let sub = js_sub(json!({"subject": "tasks.*", "stream_subjects": null,
        "allow_unconsumed_subjects": true}));
    let rec = Recorder::default();
    let running = run_listener(&server.url(), sub, rec.handler()).await?;
    assert!(
        until(5, || rec.payloads().len() >= 20).await,
        "handled {:?}",
        rec.payloads()
    );
    let want: Vec<String> = (0..20).map(|i| format!("after-{i}")).collect();
    assert_eq!(rec.payloads(), want);
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_message_on_a_deeper_subject_reaches_the_component() -> TestResult {
    let server = JsServer::start();
    let rec = Recorder::default();
    let running = run_listener(&server.url(), js_sub(json!({})), rec.handler()).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.publish("tasks.created.x", "typo".into()).await?.await?;
    publish(&server.url(), 3, "ok-").await?;
    assert!(
        until(5, || rec.payloads().len() >= 4).await,
        "{:?}",
        rec.payloads()
    );
    assert_eq!(rec.payloads(), ["typo", "ok-0", "ok-1", "ok-2"]);
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_publisher_cannot_set_the_plugins_delivery_headers() -> TestResult {
    let server = JsServer::start();
    let rec = Recorder::default();
    let running = run_listener(&server.url(), js_sub(json!({})), rec.handler()).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(STREAM_SEQUENCE_HEADER, "18446744073709551615");
    headers.insert("Spin-Nats-Delivered", "99");
    headers.insert(STREAM_EPOCH_HEADER, "1");
    headers.insert(HANDLER_TIMEOUT_HEADER, "5000");
    headers.insert("X-Correlation-Id", "cid-1");
    js.publish_with_headers("tasks.created", headers, "forged".into())
        .await?
        .await?;
    assert!(until(5, || !rec.payloads().is_empty()).await);
    let seen = rec
        .seen
        .lock()
        .map(|s| s[0].clone())
        .map_err(|e| e.to_string())?;
    let lower: Vec<(String, String)> = seen
        .headers
        .iter()
        .filter(|(n, _)| n != LEASE_HEADER && n != STREAM_EPOCH_HEADER)
        .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
        .collect();
    let epochs: Vec<&str> = seen
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(STREAM_EPOCH_HEADER))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        epochs.len() == 1 && epochs[0] != "1",
        "the stream's own epoch only: {epochs:?}"
    );
    let lease = seen
        .headers
        .iter()
        .find(|(n, _)| n == LEASE_HEADER)
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .ok_or("the plugin's lease header")?;
    assert!(
        lease > unix_ms() + 1_000,
        "the lease covers a call: {lease}"
    );
    assert_eq!(
        lower,
        [
            ("x-correlation-id".to_owned(), "cid-1".to_owned()),
            (STREAM_SEQUENCE_HEADER.to_owned(), "1".to_owned()),
            (DELIVERED_HEADER.to_owned(), "1".to_owned()),
        ],
        "only the plugin's own values"
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_stop_while_earlier_messages_are_held_elsewhere_hands_the_pull_back() -> TestResult {
    // One instance holds a slow pull; the other is handed newer messages
    // (max_ack_pending leaves room) and must wait for it. Stopped during that
    // wait, it hands them back; it used to handle them, ahead of the old ones.
    let server = JsServer::start();
    let sub = js_sub(json!({"batch": 5, "max_ack_pending": 10,
        "handler_timeout_ms": 3000, "ack_wait_ms": 10000}));
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    let handled: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let handler = |instance: usize| -> Arc<dyn listener::Handler> {
        let handled = handled.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let handled = handled.clone();
            Box::pin(async move {
                let payload = String::from_utf8_lossy(&msg.payload).into_owned();
                if payload.starts_with("old-") {
                    tokio::time::sleep(Duration::from_millis(1000)).await;
                }
                if let Ok(mut h) = handled.lock() {
                    h.push((instance, payload));
                }
                Ok(())
            })
        })
    };
    let mut running = [
        Some(run_listener(&server.url(), sub.clone(), handler(0)).await?),
        Some(run_listener(&server.url(), sub, handler(1)).await?),
    ];
    publish(&server.url(), 5, "old-").await?;
    let holder = || handled.lock().ok().and_then(|h| h.first().map(|(i, _)| *i));
    assert!(
        until(5, || holder().is_some()).await,
        "an instance took the old ones"
    );
    let holder = holder().unwrap_or(0);
    publish(&server.url(), 5, "new-").await?;
    // The other one's pull brought the new ones and waits (up to 2 s): stop it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(r) = running[1 - holder].take() {
        r.stop().await?;
    }
    let by = |instance: usize| -> Vec<String> {
        handled
            .lock()
            .map(|h| {
                h.iter()
                    .filter(|(i, _)| *i == instance)
                    .map(|(_, p)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        by(1 - holder).is_empty(),
        "handled {:?} while the other instance held older messages",
        by(1 - holder)
    );
    assert!(
        until(20, || by(holder).len() >= 10).await,
        "{:?}",
        by(holder)
    );
    let want: Vec<String> = (0..5)
        .map(|i| format!("old-{i}"))
        .chain((0..5).map(|i| format!("new-{i}")))
        .collect();
    assert_eq!(by(holder), want);
    if let Some(r) = running[holder].take() {
        r.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_pull_the_server_forgot_in_a_restart_does_not_overtake_messages_held_elsewhere()
-> TestResult {
    // nats-server 2.9 writes a consumer's state at most every 100 ms. One
    // instance holds the old messages; the other's pull brings new ones and
    // waits for them. The server is killed within 100 ms of that delivery
    // and starts again on a state without it: it counts only the old
    // messages as unacknowledged, as many as (or fewer than) the pull holds.
    // The waiting instance used to subtract its pull from that count, see
    // nothing held elsewhere, and handle the new messages first.
    let mut server = JsServer::start();
    let sub = js_sub(json!({"batch": 20, "max_ack_pending": 40,
        "handler_timeout_ms": 10000, "ack_wait_ms": 12000}));
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    // (instance, payload, started) for each call; the old ones wait for `release`.
    let calls: Arc<Mutex<Vec<(usize, String, bool)>>> = Arc::default();
    let (release, released) = tokio::sync::watch::channel(false);
    let handler = |instance: usize| -> Arc<dyn listener::Handler> {
        let calls = calls.clone();
        let released = released.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let calls = calls.clone();
            let mut released = released.clone();
            Box::pin(async move {
                let payload = String::from_utf8_lossy(&msg.payload).into_owned();
                let record = |started: bool| {
                    if let Ok(mut c) = calls.lock() {
                        c.push((instance, payload.clone(), started));
                    }
                };
                record(true);
                if payload.starts_with("old-") {
                    let _ = released.wait_for(|r| *r).await;
                }
                record(false);
                Ok(())
            })
        })
    };
    let mut running = [
        Some(run_listener(&server.url(), sub.clone(), handler(0)).await?),
        Some(run_listener(&server.url(), sub, handler(1)).await?),
    ];
    publish(&server.url(), 5, "old-").await?;
    let holder = || {
        calls
            .lock()
            .ok()
            .and_then(|c| c.first().map(|(i, _, _)| *i))
    };
    assert!(
        until(5, || holder().is_some()).await,
        "an instance took the old ones"
    );
    // The holder's pull is over (max_wait 1 s); the other one pulls now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    for i in 0..15 {
        js.publish("tasks.created", format!("new-{i}").into())
            .await?
            .await?;
    }
    // Within 100 ms of the delivery: killed, and started again on its store.
    server.restart();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let new_started = || -> Vec<String> {
        calls
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(_, p, started)| *started && p.starts_with("new-"))
                    .map(|(_, p, _)| p.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        new_started().is_empty(),
        "new messages were handled while an instance held the old ones: {:?}",
        new_started()
    );
    release.send_replace(true);
    // Then every message once, the old ones first.
    assert!(
        until(40, || new_started().len() >= 15).await,
        "{:?}",
        new_started()
    );
    let finished: Vec<String> = calls
        .lock()
        .map(|c| {
            c.iter()
                .filter(|(_, _, s)| !*s)
                .map(|(_, p, _)| p.clone())
                .collect()
        })
        .unwrap_or_default();
    let old_done = finished.iter().filter(|p| p.starts_with("old-")).count();
    assert!(old_done >= 5, "{finished:?}");
    let mut new_seen: Vec<String> = new_started();
    new_seen.dedup();
    let want: Vec<String> = (0..15).map(|i| format!("new-{i}")).collect();
    assert_eq!(new_seen, want, "the new messages, once each, in order");
    for r in running.iter_mut().filter_map(Option::take) {
        r.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_instance_paused_past_ack_wait_learns_it_lost_its_messages_and_leaves_them_alone()
-> TestResult {
    // Instance A freezes (its whole runtime, as under SIGSTOP) in its first
    // call for longer than ack_wait; the server delivers the messages to B.
    // When A wakes up, its call's lease header is in the past, so a
    // component checking it commits nothing, and A neither acknowledges nor
    // hands back what B now holds.
    let server = JsServer::start();
    let sub = js_sub(json!({"batch": 5, "ack_wait_ms": 4000}));
    let client = async_nats::connect(server.url()).await?;
    provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    // (instance, payload) of each commit, in order.
    let commits: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let handler = |instance: usize| -> Arc<dyn listener::Handler> {
        let commits = commits.clone();
        let frozen = Arc::new(std::sync::atomic::AtomicBool::new(instance == 0));
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let commits = commits.clone();
            let frozen = frozen.clone();
            Box::pin(async move {
                if frozen.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(6500));
                }
                // B is still working on them when A wakes up.
                if instance == 1 && msg.payload.starts_with(b"m") {
                    tokio::time::sleep(Duration::from_millis(600)).await;
                }
                let lease = msg
                    .headers
                    .iter()
                    .find(|(n, _)| n == LEASE_HEADER)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
                    .unwrap_or(0);
                if unix_ms() >= lease {
                    return Err("lease over: not committed".to_owned());
                }
                if let Ok(mut c) = commits.lock() {
                    c.push((instance, String::from_utf8_lossy(&msg.payload).into_owned()));
                }
                Ok(())
            })
        })
    };
    // A on a runtime of its own, so that freezing it freezes nothing else.
    let (a_stop, a_stopped) = tokio::sync::oneshot::channel::<()>();
    let a_url = server.url();
    let a_sub = sub.clone();
    let a_handler = handler(0);
    let a = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let running = run_listener(&a_url, a_sub, a_handler)
                .await
                .map_err(|e| e.to_string())?;
            let _ = a_stopped.await;
            running.stop().await.map(drop)
        })
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    publish(&server.url(), 5, "m").await?;
    // A has them (and is frozen) before B starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = run_listener(&server.url(), sub, handler(1)).await?;
    let count = || commits.lock().map(|c| c.len()).unwrap_or(0);
    assert!(
        until(20, || count() >= 5).await,
        "{:?}",
        commits.lock().map(|c| c.clone())
    );
    // A wakes up meanwhile; more messages come after.
    tokio::time::sleep(Duration::from_secs(3)).await;
    publish(&server.url(), 5, "n").await?;
    assert!(
        until(20, || count() >= 10).await,
        "{:?}",
        commits.lock().map(|c| c.clone())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen: Vec<String> = commits
        .lock()
        .map(|c| c.iter().map(|(_, p)| p.clone()).collect())
        .unwrap_or_default();
    let want: Vec<String> = (0..5)
        .map(|i| format!("m{i}"))
        .chain((0..5).map(|i| format!("n{i}")))
        .collect();
    assert_eq!(seen, want, "each committed once, in order");
    assert_eq!(
        consumer_counts(&server.url()).await?,
        (0, 0),
        "all acknowledged"
    );
    let _ = a_stop.send(());
    a.join().map_err(|_| "A panicked")??;
    b.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_consumer_deleted_under_the_trigger_is_made_again_from_where_it_was() -> TestResult {
    let server = JsServer::start();
    let rec = Recorder::default();
    let running = run_listener(&server.url(), js_sub(json!({})), rec.handler()).await?;
    publish(&server.url(), 5, "before-").await?;
    assert!(
        until(5, || rec.payloads().len() >= 5).await,
        "{:?}",
        rec.payloads()
    );
    // Give the pull time to end and acknowledge them.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.get_stream("TASKS")
        .await?
        .delete_consumer("spin-tasks-writer")
        .await?;
    publish(&server.url(), 5, "after-").await?;
    assert!(
        until(15, || rec.payloads().len() >= 10).await,
        "{:?}",
        rec.payloads()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let want: Vec<String> = (0..5)
        .map(|i| format!("before-{i}"))
        .chain((0..5).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(
        rec.payloads(),
        want,
        "the new ones once, the old ones not again"
    );
    let info = js
        .get_stream("TASKS")
        .await?
        .consumer_info("spin-tasks-writer")
        .await?;
    assert_eq!(info.config.max_waiting, 1, "made as the trigger makes it");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_consumer_made_again_with_other_settings_is_not_pulled_from() -> TestResult {
    let server = JsServer::start();
    let rec = Recorder::default();
    let running = run_listener(&server.url(), js_sub(json!({})), rec.handler()).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let stream = js.get_stream("TASKS").await?;
    stream.delete_consumer("spin-tasks-writer").await?;
    // Someone makes it again at once, with pulls of many instances at a time.
    stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("spin-tasks-writer".into()),
            filter_subject: "tasks.>".into(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(5),
            max_ack_pending: 100,
            max_waiting: 512,
            ..Default::default()
        })
        .await?;
    publish(&server.url(), 3, "x-").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        rec.payloads().is_empty(),
        "pulled from it: {:?}",
        rec.payloads()
    );
    // Put back as the manifest has it: the trigger takes it up again.
    stream.delete_consumer("spin-tasks-writer").await?;
    assert!(
        until(15, || rec.payloads().len() >= 3).await,
        "{:?}",
        rec.payloads()
    );
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_message_the_component_keeps_failing_on_is_dead_lettered_and_the_rest_go_on() -> TestResult
{
    let server = JsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.create_stream(jetstream::stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        ..Default::default()
    })
    .await?;
    let sub = js_sub(json!({"dead_letter_subject": "dlq.writer", "max_attempts": 3}));
    let rec = Recorder::default();
    let running = run_listener(&server.url(), sub, rec.handler()).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Correlation-Id", "cid-poison");
    js.publish("tasks.created", "a-0".into()).await?.await?;
    js.publish_with_headers("tasks.created", headers, "fail".into())
        .await?
        .await?;
    publish(&server.url(), 2, "b-").await?;
    assert!(
        until(20, || rec.payloads().iter().any(|p| p == "b-1")).await,
        "{:?}",
        rec.payloads()
    );
    let calls = rec.payloads();
    assert_eq!(
        calls,
        ["a-0", "fail", "fail", "fail", "b-0", "b-1"],
        "three calls, then the rest in order"
    );
    let mut dlq = js.get_stream("DLQ").await?;
    assert_eq!(dlq.info().await?.state.messages, 1);
    let letter = dlq.get_raw_message(1).await?;
    let header = |name: &str| {
        letter
            .headers
            .get(name)
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    assert_eq!(letter.payload.as_ref(), b"fail");
    assert_eq!(header("spin-nats-dead-letter-subject"), "tasks.created");
    assert_eq!(header("spin-nats-dead-letter-sequence"), "2");
    assert_eq!(
        header("spin-nats-dead-letter-reason"),
        "handler refused \"fail\""
    );
    assert_eq!(header("X-Correlation-Id"), "cid-poison");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(consumer_counts(&server.url()).await?, (0, 0), "none left");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_stream_made_again_is_told_apart_by_its_epoch() -> TestResult {
    let server = JsServer::start();
    let rec = Recorder::default();
    let running = run_listener(&server.url(), js_sub(json!({})), rec.handler()).await?;
    publish(&server.url(), 3, "old-").await?;
    assert!(
        until(5, || rec.payloads().len() >= 3).await,
        "{:?}",
        rec.payloads()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // An operator deletes the stream and makes it again: sequences start at 1.
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.delete_stream("TASKS").await?;
    stream_by_hand(&server.url()).await?;
    publish(&server.url(), 3, "new-").await?;
    assert!(
        until(15, || rec.payloads().len() >= 6).await,
        "{:?}",
        rec.payloads()
    );
    let seen = rec
        .seen
        .lock()
        .map(|s| s.clone())
        .map_err(|e| e.to_string())?;
    let header = |m: &Message, name: &str| {
        m.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let at: Vec<(String, String, String)> = seen
        .iter()
        .map(|m| {
            (
                String::from_utf8_lossy(&m.payload).into_owned(),
                header(m, STREAM_SEQUENCE_HEADER),
                header(m, STREAM_EPOCH_HEADER),
            )
        })
        .collect();
    let epochs: Vec<&str> = at.iter().map(|(_, _, e)| e.as_str()).collect();
    assert!(
        epochs[..3].iter().all(|e| *e == epochs[0]) && epochs[3..].iter().all(|e| *e == epochs[3]),
        "{at:?}"
    );
    assert!(
        epochs[3].parse::<u64>()? > epochs[0].parse::<u64>()?,
        "the new stream's epoch is later: {at:?}"
    );
    let payloads: Vec<(&str, &str)> = at
        .iter()
        .map(|(p, s, _)| (p.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        payloads,
        [
            ("old-0", "1"),
            ("old-1", "2"),
            ("old-2", "3"),
            ("new-0", "1"),
            ("new-1", "2"),
            ("new-2", "3")
        ]
    );
    running.stop().await?;
    Ok(())
}

/// Per key, the order its messages were handled in; how many calls ran at
/// once at most; which instance handled what.
#[derive(Clone, Default)]
struct ByKey {
    handled: Arc<Mutex<std::collections::HashMap<String, Vec<u64>>>>,
    busy_keys: Arc<Mutex<std::collections::HashSet<String>>>,
    overlapped_key: Arc<Mutex<Vec<String>>>,
    running: Arc<std::sync::atomic::AtomicUsize>,
    most_at_once: Arc<std::sync::atomic::AtomicUsize>,
    by_instance: Arc<Mutex<[usize; 3]>>,
}

impl ByKey {
    fn handler(&self, instance: usize) -> Arc<dyn listener::Handler> {
        use std::sync::atomic::Ordering::SeqCst;
        let this = self.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let this = this.clone();
            Box::pin(async move {
                let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
                let key = v["key"].as_str().unwrap_or("").to_owned();
                let n = v["n"].as_u64().unwrap_or(u64::MAX);
                let now = this.running.fetch_add(1, SeqCst) + 1;
                this.most_at_once.fetch_max(now, SeqCst);
                let fresh = this
                    .busy_keys
                    .lock()
                    .map(|mut b| b.insert(key.clone()))
                    .unwrap_or(false);
                if !fresh && let Ok(mut o) = this.overlapped_key.lock() {
                    o.push(key.clone());
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
                if let Ok(mut h) = this.handled.lock() {
                    h.entry(key.clone()).or_default().push(n);
                }
                if let Ok(mut n) = this.by_instance.lock() {
                    n[instance] += 1;
                }
                if let Ok(mut b) = this.busy_keys.lock() {
                    b.remove(&key);
                }
                this.running.fetch_sub(1, SeqCst);
                Ok(())
            })
        })
    }

    fn count(&self) -> usize {
        self.handled
            .lock()
            .map(|h| h.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Publishes 800 messages over `keys` interleaving keys and one without
    /// the key (the empty key, one more like any other), waits for them,
    /// and checks each was handled once, each key in order, never two of one
    /// key at once. Returns the most calls seen at once.
    async fn publish_and_check(&self, url: &str, keys: u64) -> Result<usize, async_nats::Error> {
        let js = jetstream::new(async_nats::connect(url).await?);
        let mut acks = Vec::new();
        for n in 0..800u64 {
            let body = match n % 50 {
                49 => json!({"n": n}),
                k => json!({"key": format!("k{}", k % keys), "n": n}),
            };
            acks.push(js.publish("tasks.created", body.to_string().into()).await?);
        }
        for ack in acks {
            ack.await?;
        }
        assert!(
            until(60, || self.count() >= 800).await,
            "{} of 800",
            self.count()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let handled = self.handled.lock().map(|h| h.clone()).unwrap_or_default();
        let mut all: Vec<u64> = handled.values().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..800).collect::<Vec<_>>(), "each message once");
        for (key, ns) in &handled {
            assert!(
                ns.windows(2).all(|w| w[0] < w[1]),
                "key {key:?} out of order: {ns:?}"
            );
        }
        let overlapped = self
            .overlapped_key
            .lock()
            .map(|o| o.clone())
            .unwrap_or_default();
        assert!(
            overlapped.is_empty(),
            "a key handled twice at once: {overlapped:?}"
        );
        Ok(self.most_at_once.load(std::sync::atomic::Ordering::SeqCst))
    }
}

#[tokio::test]
async fn with_partitions_keys_run_in_parallel_across_instances_each_key_in_order_once() -> TestResult
{
    let server = JsServer::start();
    let subs = js_subs(json!({"partitions": 4, "ordering_key": "payload:key"}))?;
    let durables: Vec<String> = subs
        .iter()
        .filter_map(|s| s.jetstream.as_ref().map(|p| p.consumer.durable.clone()))
        .collect();
    assert_eq!(durables, ["w-p0of4", "w-p1of4", "w-p2of4", "w-p3of4"]);
    let keys = ByKey::default();
    let mut instances = Vec::new();
    for i in 0..3 {
        instances.push(run_listeners(&server.url(), subs.clone(), keys.handler(i)).await?);
    }
    let most = keys.publish_and_check(&server.url(), 16).await?;
    assert!(
        most >= 2,
        "keys ran in parallel: at most {most} calls at once"
    );
    let shares = keys.by_instance.lock().map(|n| *n).unwrap_or_default();
    assert!(
        shares.iter().filter(|n| **n > 0).count() >= 2,
        "instances took part: {shares:?}"
    );
    for i in instances {
        i.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn with_concurrency_one_consumer_s_pull_runs_its_keys_at_once_each_key_in_order_once()
-> TestResult {
    let server = JsServer::start();
    let subs = js_subs(json!({"concurrency": 4, "ordering_key": "payload:key"}))?;
    let durables: Vec<String> = subs
        .iter()
        .filter_map(|s| s.jetstream.as_ref().map(|p| p.consumer.durable.clone()))
        .collect();
    assert_eq!(durables, ["w"], "one consumer");
    let keys = ByKey::default();
    let a = run_listeners(&server.url(), subs.clone(), keys.handler(0)).await?;
    let b = run_listeners(&server.url(), subs, keys.handler(1)).await?;
    let most = keys.publish_and_check(&server.url(), 17).await?;
    // One pull at a time across the instances: the calls at once are one
    // pull's, split by key.
    assert!(
        (2..=4).contains(&most),
        "a pull's keys ran at once, in at most 4 calls: at most {most} calls at once"
    );
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        durable_counts(&server.url(), "w").await?,
        (0, 0),
        "none left"
    );
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

#[tokio::test]
async fn with_concurrency_a_failed_message_comes_back_with_its_key_s_later_ones_and_nothing_is_lost_or_repeated()
-> TestResult {
    every_ninth_fails_once_and_nothing_is_lost_or_repeated(js_subs(
        json!({"concurrency": 3, "ordering_key": "payload:key"}),
    )?)
    .await
}

#[tokio::test]
async fn with_concurrency_two_calls_failing_for_good_in_one_pull_are_both_dead_lettered_and_the_rest_go_on()
-> TestResult {
    let server = JsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    js.create_stream(jetstream::stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        ..Default::default()
    })
    .await?;
    js.create_stream(jetstream::stream::Config {
        name: "TASKS".into(),
        subjects: vec!["tasks.>".into()],
        ..Default::default()
    })
    .await?;
    let subs = js_subs(json!({"concurrency": 2, "ordering_key": "payload:key",
        "dead_letter_subject": "dlq.writer", "max_attempts": 2}))?;
    // Records each call's payload; refuses the two poison messages always.
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let handler = {
        let seen = seen.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let seen = seen.clone();
            Box::pin(async move {
                let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
                let n = v["n"].as_u64().unwrap_or(u64::MAX);
                if v["poison"].as_bool() == Some(true) {
                    return Err(format!("{n} never applies"));
                }
                if let Ok(mut s) = seen.lock() {
                    s.push(n);
                }
                Ok(())
            })
        }) as Arc<dyn listener::Handler>
    };
    // Published before the instance starts: one pull takes them all, keys
    // a and b in two calls, each with a poison message early on.
    let mut acks = Vec::new();
    for n in 0..12u64 {
        let key = if n % 2 == 0 { "a" } else { "b" };
        let body = json!({"key": key, "n": n, "poison": n == 2 || n == 3});
        acks.push(js.publish("tasks.created", body.to_string().into()).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let running = run_listeners(&server.url(), subs, handler).await?;
    let count = || seen.lock().map(|s| s.len()).unwrap_or(0);
    assert!(until(30, || count() >= 10).await, "{} of 10", count());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for parity in [0, 1] {
        let of_key: Vec<u64> = seen.iter().copied().filter(|n| n % 2 == parity).collect();
        let want: Vec<u64> = (0..12)
            .filter(|n| n % 2 == parity && *n != 2 && *n != 3)
            .collect();
        assert_eq!(
            of_key, want,
            "each key's messages once, in order, its poison left out"
        );
    }
    let mut dlq = js.get_stream("DLQ").await?;
    assert_eq!(dlq.info().await?.state.messages, 2, "both poison messages");
    let mut sequences = Vec::new();
    for seq in 1..=2 {
        let letter = dlq.get_raw_message(seq).await?;
        sequences.push(
            letter
                .headers
                .get("spin-nats-dead-letter-sequence")
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
    }
    sequences.sort();
    assert_eq!(sequences, ["3", "4"], "stream sequences of n = 2 and n = 3");
    assert_eq!(
        durable_counts(&server.url(), "w").await?,
        (0, 0),
        "none left"
    );
    running.stop().await?;
    Ok(())
}

/// The subscriptions of a JetStream entry on `TASKS` with these fields (all
/// of them: one per partition).
fn js_subs(fields: serde_json::Value) -> Result<Vec<Subscription>, config::ConfigError> {
    let mut entry = json!({"component": "writer", "subject": "tasks.>",
        "stream": "TASKS", "consumer": "w", "stream_subjects": ["tasks.>"],
        "handler_timeout_ms": 1000, "ack_wait_ms": 5000, "batch": 20});
    if let (Some(e), Some(f)) = (entry.as_object_mut(), fields.as_object()) {
        e.extend(f.clone());
    }
    plan::plan(&[serde_json::from_value(entry).expect("an entry")])
}

/// Two instances on `subs`; 300 messages over 10 keys, every ninth failing
/// on its first delivery: each handled once, each key in order.
async fn every_ninth_fails_once_and_nothing_is_lost_or_repeated(
    subs: Vec<Subscription>,
) -> TestResult {
    let server = JsServer::start();
    let ok = Arc::new(Mutex::new(Vec::new()));
    let a = run_listeners(&server.url(), subs.clone(), failing_every_ninth(ok.clone())).await?;
    let b = run_listeners(&server.url(), subs, failing_every_ninth(ok.clone())).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let mut acks = Vec::new();
    for n in 0..300u64 {
        let body = json!({"key": format!("k{}", n % 10), "n": n});
        acks.push(js.publish("tasks.created", body.to_string().into()).await?);
    }
    for ack in acks {
        ack.await?;
    }
    let count = || ok.lock().map(|o| o.len()).unwrap_or(0);
    assert!(until(60, || count() >= 300).await, "{} of 300", count());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = ok.lock().map(|o| o.clone()).unwrap_or_default();
    let mut all: Vec<u64> = ok.iter().map(|(_, n)| *n).collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..300).collect::<Vec<_>>(),
        "each message handled once"
    );
    for key in (0..10).map(|k| format!("k{k}")) {
        let ns: Vec<u64> = ok
            .iter()
            .filter(|(k, _)| *k == key)
            .map(|(_, n)| *n)
            .collect();
        assert!(
            ns.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {ns:?}"
        );
    }
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// Records the `n` of each successful call, per key; fails the first
/// delivery of every `n` with `n % 9 == 4`.
fn failing_every_ninth(ok: Arc<Mutex<Vec<(String, u64)>>>) -> Arc<dyn listener::Handler> {
    Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
        let ok = ok.clone();
        Box::pin(async move {
            let v: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap_or_default();
            let n = v["n"].as_u64().unwrap_or(u64::MAX);
            let first = msg
                .headers
                .iter()
                .any(|(name, value)| name == DELIVERED_HEADER && value == "1");
            if n % 9 == 4 && first {
                return Err(format!("{n} fails on its first delivery"));
            }
            if let Ok(mut ok) = ok.lock() {
                ok.push((v["key"].as_str().unwrap_or("").to_owned(), n));
            }
            Ok(())
        })
    })
}

#[tokio::test]
async fn with_partitions_a_failed_message_comes_back_with_its_key_s_later_ones_and_nothing_is_lost_or_repeated()
-> TestResult {
    every_ninth_fails_once_and_nothing_is_lost_or_repeated(js_subs(
        json!({"partitions": 3, "ordering_key": "payload:key"}),
    )?)
    .await
}

#[tokio::test]
async fn with_partitions_a_header_key_given_in_several_cases_is_read_alike_by_every_consumer()
-> TestResult {
    let server = JsServer::start();
    let subs = js_subs(json!({"partitions": 2, "ordering_key": "header:Tenant"}))?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let seen = seen.clone();
            Box::pin(async move {
                if let Ok(mut s) = seen.lock() {
                    s.push(String::from_utf8_lossy(&msg.payload).into_owned());
                }
                Ok(())
            })
        }) as Arc<dyn listener::Handler>
    };
    let running = run_listeners(&server.url(), subs, handler).await?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    for n in 0..200 {
        // The same name in three cases, each with its own value: whichever the
        // header map yields first, every consumer must pick the same one.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("tenant", format!("b{}", n % 7).as_str());
        headers.insert("TENANT", format!("c{}", n % 3).as_str());
        if n % 2 == 0 {
            headers.insert("Tenant", format!("a{}", n % 5).as_str());
        }
        js.publish_with_headers("tasks.created", headers, format!("m{n}").into())
            .await?
            .await?;
    }
    let count = || seen.lock().map(|s| s.len()).unwrap_or(0);
    assert!(until(30, || count() >= 200).await, "{} of 200", count());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    seen.sort();
    let mut want: Vec<String> = (0..200).map(|n| format!("m{n}")).collect();
    want.sort();
    assert_eq!(seen, want, "each message handled once, by one partition");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_new_consumer_starts_where_deliver_policy_says() -> TestResult {
    // A stream that holds 10,000 messages before the app's first start.
    let server = JsServer::start();
    let client = async_nats::connect(server.url()).await?;
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "TASKS".into(),
        subjects: vec!["tasks.>".into()],
        ..Default::default()
    })
    .await?;
    // In rounds: the client holds back a publish while too many wait for
    // their acknowledgement.
    for round in 0..10 {
        let mut acks = Vec::with_capacity(1_000);
        for i in round * 1_000..(round + 1) * 1_000 {
            acks.push(
                js.publish("tasks.created", format!("old-{i}").into())
                    .await?,
            );
        }
        for ack in acks {
            ack.await?;
        }
    }
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let handler = || -> Arc<dyn listener::Handler> {
        let seen = seen.clone();
        Arc::new(move |_: &str, msg: Message| -> HandlerFuture {
            let seen = seen.clone();
            Box::pin(async move {
                let sequence = msg
                    .headers
                    .iter()
                    .find(|(n, _)| n == STREAM_SEQUENCE_HEADER)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                if let Ok(mut s) = seen.lock() {
                    s.push((sequence, String::from_utf8_lossy(&msg.payload).into_owned()));
                }
                Ok(())
            })
        })
    };
    let fields = |consumer: &str, extra: serde_json::Value| {
        let mut f = json!({"consumer": consumer, "batch": 10});
        if let (Some(f), Some(x)) = (f.as_object_mut(), extra.as_object()) {
            f.extend(x.clone());
        }
        f
    };
    let new_only = run_listener(
        &server.url(),
        js_sub(fields("only-new", json!({"deliver_policy": "new"}))),
        handler(),
    )
    .await?;
    let from_9998 = run_listener(
        &server.url(),
        js_sub(fields(
            "from-9998",
            json!({"deliver_policy": "by_start_sequence", "opt_start_seq": 9_998}),
        )),
        handler(),
    )
    .await?;
    publish(&server.url(), 5, "after-").await?;
    let count = || seen.lock().map(|s| s.len()).unwrap_or(0);
    // 5 for "new"; 9998..=10000 and the 5 for the other.
    assert!(
        until(20, || count() >= 13).await,
        "{:?}",
        seen.lock().map(|s| s.clone())
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut got: Vec<(String, String)> = seen.lock().map(|s| s.clone()).unwrap_or_default();
    got.sort();
    let mut want: Vec<(String, String)> = (9_998..=10_000)
        .map(|s| (s.to_string(), format!("old-{}", s - 1)))
        .chain((0..5).flat_map(|i| {
            let at = (10_001 + i).to_string();
            [
                (at.clone(), format!("after-{i}")),
                (at, format!("after-{i}")),
            ]
        }))
        .collect();
    want.sort();
    assert_eq!(got, want, "only what each policy starts at, each once");
    new_only.stop().await?;
    from_9998.stop().await?;
    // Set in the manifest, the policy is checked against the consumer that exists.
    let all = js_sub(fields("only-new", json!({"deliver_policy": "all"})));
    let refused = provision(&client, all.jetstream.as_ref().ok_or("JetStream mode")?)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("deliver_policy is \"new\" on the server, \"all\" in the manifest"),
        "{refused}"
    );
    // Unset, it is not: the consumer keeps its start.
    let unset = js_sub(fields("only-new", json!({})));
    provision(&client, unset.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    Ok(())
}

#[tokio::test]
async fn start_up_asks_again_while_jetstream_does_not_answer_and_fails_at_once_when_it_is_off()
-> TestResult {
    // A server where JetStream requests go unanswered, as in a cluster
    // between two meta leaders: something listens on $JS.API.> and says
    // nothing. Start-up used to fail on the first timeout (5 s), and a
    // `spin up` restarted during a node's restart exited.
    let port = free_port();
    let _server = start_server(port);
    let url = format!("nats://127.0.0.1:{port}");
    let silent = async_nats::connect(&url).await?;
    let mut unanswered = silent.subscribe("$JS.API.>").await?;
    let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = asked.clone();
    tokio::spawn(async move {
        while unanswered.next().await.is_some() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    silent.flush().await?;
    let client = listener::connect(
        &url,
        &config::Credentials::None,
        "test",
        std::future::pending(),
    )
    .await?
    .ok_or("no client")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handler: Arc<dyn listener::Handler> =
        Arc::new(|_: &str, _: Message| -> HandlerFuture { Box::pin(async { Ok(()) }) });
    let run = tokio::spawn(listener::run(
        client,
        vec![js_sub(json!({}))],
        handler,
        async move {
            let _ = stopped.await;
        },
    ));
    tokio::time::sleep(Duration::from_secs(13)).await;
    assert!(
        !run.is_finished(),
        "start-up gave up on a server that did not answer for 8 s"
    );
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "it asked again"
    );
    // A shutdown meanwhile ends it cleanly.
    let _ = stop.send(());
    let ended = tokio::time::timeout(Duration::from_secs(5), run).await??;
    assert!(ended.is_ok(), "{:?}", ended.err().map(|e| e.to_string()));

    // JetStream off (nobody listens on $JS.API.>): an answer, at once.
    let port = free_port();
    let _plain = start_server(port);
    let url = format!("nats://127.0.0.1:{port}");
    let client = listener::connect(
        &url,
        &config::Credentials::None,
        "test",
        std::future::pending(),
    )
    .await?
    .ok_or("no client")?;
    let handler: Arc<dyn listener::Handler> =
        Arc::new(|_: &str, _: Message| -> HandlerFuture { Box::pin(async { Ok(()) }) });
    let began = Instant::now();
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        listener::run(
            client,
            vec![js_sub(json!({}))],
            handler,
            std::future::pending(),
        ),
    )
    .await?
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(refused.contains("JetStream enabled"), "{refused}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "took {:?}",
        began.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn more_unacknowledged_messages_than_one_pull_takes_under_a_frozen_floor_are_taken_in_one_pull()
-> TestResult {
    // The acknowledgement floor of nats-server 2.9.10 can stay below
    // messages that are done: here one `max_deliver` gave up on (the server
    // drops it from pending without moving the floor; the cluster chaos run
    // froze it through a consumer leader change). With more messages
    // pending than one pull of `batch` takes, no pull started at the floor
    // nor held everything pending: each was handed back after 2 s, for good
    // (that run: 123 pending, batch 100, traded between two instances for
    // two minutes).
    let server = JsServer::start();
    let sub = js_sub(
        json!({"batch": 5, "max_ack_pending": 10, "ack_wait_ms": 4000,
        "max_deliver": 3}),
    );
    let client = async_nats::connect(server.url()).await?;
    let consumer = provision(&client, sub.jetstream.as_ref().ok_or("JetStream mode")?).await?;
    publish(&server.url(), 11, "m").await?;
    let fetch = |n: usize| {
        let consumer = consumer.clone();
        async move {
            let mut got = Vec::new();
            let mut batch = consumer
                .fetch()
                .max_messages(n)
                .expires(Duration::from_millis(500))
                .messages()
                .await?;
            while let Some(m) = batch.next().await {
                got.push(m?);
            }
            Ok::<_, async_nats::Error>(got)
        }
    };
    // m0 handed back three times: max_deliver gives up on it.
    for _ in 0..3 {
        for m in fetch(1).await? {
            assert_eq!(m.payload.as_ref(), b"m0");
            m.ack_with(jetstream::AckKind::Nak(None)).await?;
        }
        // The server takes acknowledgements in turn, apart from pulls.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // m1..m10 delivered and handed back: ten pending above a floor of 0.
    let held = fetch(10).await?;
    let payloads: Vec<String> = held
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(
        payloads,
        (1..=10).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    for m in held {
        m.ack_with(jetstream::AckKind::Nak(None)).await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, pending) = consumer_counts(&server.url()).await?;
    let js = jetstream::new(client.clone());
    let floor = js
        .get_stream("TASKS")
        .await?
        .consumer_info("spin-tasks-writer")
        .await?
        .ack_floor
        .stream_sequence;
    assert_eq!(
        (floor, pending),
        (0, 10),
        "a frozen floor below ten pending messages"
    );
    let rec = Recorder::default();
    let running = run_listener(&server.url(), sub, rec.handler()).await?;
    assert!(
        until(30, || rec.payloads().len() >= 10).await,
        "handled only {:?}",
        rec.payloads()
    );
    let want: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    assert_eq!(rec.payloads(), want, "each once, in order");
    running.stop().await?;
    Ok(())
}

/// Fails the first message of its first call, once `release` is notified;
/// records the payloads of every call after it.
#[derive(Clone, Default)]
struct FailsFirstOnCue {
    release: Arc<tokio::sync::Notify>,
    calls: Arc<Mutex<usize>>,
    handled: Arc<Mutex<Vec<String>>>,
}

impl listener::Handler for FailsFirstOnCue {
    fn handle(&self, _: &str, _: Message) -> HandlerFuture {
        Box::pin(async { Err("called one at a time".to_owned()) })
    }

    fn takes_batches(&self, _: &str) -> bool {
        true
    }

    fn handle_batch(&self, _: &str, msgs: Vec<Message>) -> listener::BatchFuture {
        let me = self.clone();
        Box::pin(async move {
            let first = me.calls.lock().map(|mut c| {
                *c += 1;
                *c == 1
            });
            if first.unwrap_or(false) {
                me.release.notified().await;
                return msgs
                    .iter()
                    .map(|_| Err("the store is down".to_owned()))
                    .collect();
            }
            if let Ok(mut h) = me.handled.lock() {
                h.extend(
                    msgs.iter()
                        .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
                );
            }
            msgs.iter().map(|_| Ok(())).collect()
        })
    }
}

#[tokio::test]
async fn a_message_handed_back_while_a_dead_clients_pull_waits_comes_back_at_once() -> TestResult {
    // nats-server 2.9.10 drops a handed-back message it takes off its
    // redelivery queue when the waiting pull's client has gone (or the pull
    // has just expired), until ack_wait: the hand-back clears the slot first.
    let server = JsServer::start();
    let sub = js_sub(
        json!({"batch": 3, "max_ack_pending": 3, "ack_wait_ms": 10000,
        "handler_timeout_ms": 2000}),
    );
    let plan = sub.jetstream.clone().ok_or("JetStream mode")?;
    let client = async_nats::connect(server.url()).await?;
    provision(&client, &plan).await?;
    publish(&server.url(), 3, "m-").await?;
    let handler = FailsFirstOnCue::default();
    let running = run_listener(&server.url(), sub, Arc::new(handler.clone())).await?;
    // The first call holds m-0..m-2. Meanwhile a client makes a pull and goes
    // away (an instance killed while its pull waits): the slot holds it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gone = async_nats::connect(server.url()).await?;
    let inbox = gone.new_inbox();
    let mut replies = gone.subscribe(inbox.clone()).await?;
    gone.publish_with_reply(
        format!(
            "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
            plan.stream, plan.consumer.durable
        ),
        inbox,
        r#"{"batch":10,"expires":30000000000}"#.into(),
    )
    .await?;
    gone.flush().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    replies.unsubscribe().await?;
    gone.flush().await?;
    drop(gone);
    // The call fails: m-0..m-2 are handed back, and come back at once, in
    // order; not m-1 and m-2 only, with m-0 lost until ack_wait (10 s).
    let started = Instant::now();
    handler.release.notify_one();
    let done = || handler.handled.lock().map(|h| h.len()).unwrap_or(0) >= 3;
    assert!(
        until(5, done).await,
        "handled within 5 s: {:?}",
        handler
            .handled
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    );
    assert_eq!(
        handler
            .handled
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default(),
        ["m-0", "m-1", "m-2"]
    );
    println!("handed back and handled again in {:?}", started.elapsed());
    running.stop().await?;
    Ok(())
}

/// A TCP proxy to the server at `upstream` that forwards everything, except
/// that it swallows the first delivery (`MSG`/`HMSG` frame) whose payload is
/// `lost`: the client never sees it, the server counts it delivered, and the
/// connection stays up (what a connection cut mid-pull does to the
/// deliveries written to it, without the cut). Returns its URL.
fn proxy_losing_one_delivery(upstream: u16, lost: &'static [u8]) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the proxy");
    let port = listener.local_addr().expect("its address").port();
    let swallowed = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_read, mut s_write) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut s_write);
            });
            let swallowed = swallowed.clone();
            std::thread::spawn(move || {
                let mut from_server = BufReader::new(server);
                let mut to_client = client;
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if from_server.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    let mut frame = line.clone();
                    if text.starts_with("MSG ") || text.starts_with("HMSG ") {
                        let total: usize = text
                            .split_whitespace()
                            .last()
                            .and_then(|n| n.parse().ok())
                            .expect("a frame length");
                        let mut body = vec![0; total + 2];
                        if from_server.read_exact(&mut body).is_err() {
                            return;
                        }
                        let payload = &body[..total];
                        if payload.ends_with(lost) && !swallowed.swap(true, Ordering::SeqCst) {
                            continue;
                        }
                        frame.extend_from_slice(&body);
                    }
                    if to_client.write_all(&frame).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("nats://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_delivery_lost_on_the_way_mid_pull_is_not_overtaken_by_the_ones_after_it() -> TestResult {
    let server = JsServer::start();
    let url = proxy_losing_one_delivery(server.port, b"m-3");
    let flaky = Flaky::default();
    // One pull stays open 3 s, so the later messages come in the pull the
    // first ones were admitted in.
    let sub = js_sub(json!({"max_wait_ms": 3000}));
    let running = run_listener(&url, sub, flaky.handler()).await?;
    publish(&server.url(), 3, "m-").await?;
    assert!(
        until(5, || flaky.calls().len() >= 3).await,
        "{:?}",
        flaky.calls()
    );
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    for i in 3..7 {
        js.publish("tasks.created", format!("m-{i}").into())
            .await?
            .await?;
    }
    // m-3 never reached the instance; the server delivers it again after
    // ack_wait (5 s). Nothing after it may be handled before it.
    let handled = || {
        let mut seen: Vec<String> = Vec::new();
        for c in flaky.calls() {
            let p = c.split('#').next().unwrap_or("").to_owned();
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen
    };
    assert!(
        until(20, || handled().len() >= 7).await,
        "{:?}",
        flaky.calls()
    );
    assert_eq!(
        handled(),
        ["m-0", "m-1", "m-2", "m-3", "m-4", "m-5", "m-6"],
        "every message handled in stream order: {:?}",
        flaky.calls()
    );
    running.stop().await?;
    Ok(())
}
