//! The listener against a real `nats-server` on loopback.

mod support;

use std::time::{Duration, Instant};

use support::*;
use trigger_nats_core::HANDLER_TIMEOUT_HEADER;
use trigger_nats_core::config::Credentials;
use trigger_nats_core::listener::{self, Stats};

#[tokio::test]
async fn requests_get_ok_or_error_acks_and_the_loop_goes_on() -> TestResult {
    let server = start_server(free_port());
    let rec = Recorder::default();
    let running = start_listener(&server.url, vec![sub("tasks.*", None, 1)], &rec).await?;
    let client = async_nats::connect(&server.url).await?;

    let ok = client.request("tasks.created", "one".into()).await?;
    assert_eq!(&ok.payload[..], br#"{"ok":true}"#);
    let bad = client.request("tasks.created", "fail".into()).await?;
    let v: serde_json::Value = serde_json::from_slice(&bad.payload)?;
    assert_eq!(
        v,
        serde_json::json!({"ok": false, "error": "handler refused \"fail\""})
    );
    let again = client.request("tasks.updated", "two".into()).await?;
    assert_eq!(&again.payload[..], br#"{"ok":true}"#);

    let stats = running.stop().await?;
    assert_eq!(
        stats,
        Stats {
            handled: 2,
            failed: 1
        }
    );
    assert_eq!(rec.payloads(), ["one", "fail", "two"]);
    Ok(())
}

#[tokio::test]
async fn a_handler_past_its_timeout_is_cancelled_and_called_again_with_the_header() -> TestResult {
    let server = start_server(free_port());
    let rec = Recorder::default();
    let mut s = sub("tasks.*", None, 1);
    s.handler_timeout = Duration::from_millis(300);
    let running = start_listener(&server.url, vec![s], &rec).await?;
    let client = async_nats::connect(&server.url).await?;

    let started = std::time::Instant::now();
    let ack = client.request("tasks.created", "hang".into()).await?;
    assert_eq!(&ack.payload[..], br#"{"ok":true}"#);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // The subscription goes on: the next message is handled normally.
    let next = client.request("tasks.created", "after".into()).await?;
    assert_eq!(&next.payload[..], br#"{"ok":true}"#);

    running.stop().await?;
    let seen = rec.seen.lock().map(|s| s.clone()).unwrap_or_default();
    let headers: Vec<Vec<(String, String)>> = seen.iter().map(|m| m.headers.clone()).collect();
    assert_eq!(
        rec.payloads(),
        ["hang", "after"],
        "the cancelled call recorded nothing"
    );
    assert_eq!(
        headers[0],
        [(HANDLER_TIMEOUT_HEADER.to_owned(), "300".to_owned())]
    );
    assert!(headers[1].is_empty());
    Ok(())
}

#[tokio::test]
async fn headers_subject_and_reply_reach_the_handler() -> TestResult {
    let server = start_server(free_port());
    let rec = Recorder::default();
    let running = start_listener(&server.url, vec![sub("tasks.>", None, 1)], &rec).await?;
    let client = async_nats::connect(&server.url).await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("X-Correlation-Id", "cid-77");
    // The plugin's own headers are not a publisher's to set: dropped.
    headers.insert("spin-nats-stream-sequence", "18446744073709551615");
    headers.insert("SPIN-NATS-HANDLER-TIMEOUT", "1000");
    client
        .request_with_headers("tasks.deleted", headers, "x".into())
        .await?;
    client.publish("tasks.a.b", "plain".into()).await?;
    client.flush().await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.stop().await?;
    let seen = rec.seen.lock().map(|s| s.clone()).unwrap_or_default();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].subject, "tasks.deleted");
    assert_eq!(
        seen[0].headers,
        [("X-Correlation-Id".to_owned(), "cid-77".to_owned())]
    );
    assert!(seen[0].reply.is_some());
    assert_eq!(
        (seen[1].subject.as_str(), seen[1].reply.as_ref()),
        ("tasks.a.b", None)
    );
    Ok(())
}

#[tokio::test]
async fn max_in_flight_one_keeps_publish_order() -> TestResult {
    let server = start_server(free_port());
    let rec = Recorder {
        delay: Duration::from_millis(1),
        ..Default::default()
    };
    let running = start_listener(&server.url, vec![sub("tasks.*", None, 1)], &rec).await?;
    let client = async_nats::connect(&server.url).await?;
    for i in 0..200 {
        client
            .publish("tasks.created", format!("{i}").into())
            .await?;
    }
    client.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rec.payloads().len() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.stop().await?;
    let want: Vec<String> = (0..200).map(|i| i.to_string()).collect();
    assert_eq!(rec.payloads(), want);
    Ok(())
}

#[tokio::test]
async fn a_queue_group_shares_messages_each_handled_once() -> TestResult {
    let server = start_server(free_port());
    let (a, b) = (Recorder::default(), Recorder::default());
    let run_a = start_listener(&server.url, vec![sub("tasks.*", Some("writers"), 4)], &a).await?;
    let run_b = start_listener(&server.url, vec![sub("tasks.*", Some("writers"), 4)], &b).await?;
    let client = async_nats::connect(&server.url).await?;
    for i in 0..500 {
        client
            .publish("tasks.created", format!("m{i}").into())
            .await?;
    }
    client.flush().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.payloads().len() + b.payloads().len() < 500 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (sa, sb) = (run_a.stop().await?, run_b.stop().await?);
    let mut all = a.payloads();
    all.extend(b.payloads());
    all.sort();
    let mut want: Vec<String> = (0..500).map(|i| format!("m{i}")).collect();
    want.sort();
    assert_eq!(all, want, "every message exactly once across the group");
    assert!(
        sa.handled > 50 && sb.handled > 50,
        "both members took a share: {sa:?} {sb:?}"
    );
    Ok(())
}

#[tokio::test]
async fn shutdown_drains_every_delivered_message_and_acks_only_handled_ones() -> TestResult {
    let server = start_server(free_port());
    let rec = Recorder {
        delay: Duration::from_millis(20),
        ..Default::default()
    };
    let running = start_listener(&server.url, vec![sub("tasks.*", None, 2)], &rec).await?;
    let client = async_nats::connect(&server.url).await?;
    // 60 requests in flight at once; stop the listener while they are being handled.
    let mut requests = Vec::new();
    for i in 0..60 {
        let c = client.clone();
        requests.push(tokio::spawn(async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                c.request("tasks.created", format!("r{i}").into()),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = running.stop().await?;
    let mut acked = Vec::new();
    for (i, r) in requests.into_iter().enumerate() {
        if let Ok(Ok(Ok(reply))) = r.await {
            assert_eq!(&reply.payload[..], br#"{"ok":true}"#);
            acked.push(format!("r{i}"));
        }
    }
    let handled = rec.payloads();
    assert_eq!(stats.handled as usize, handled.len());
    for a in &acked {
        assert!(handled.contains(a), "{a} was acknowledged but not handled");
    }
    assert_eq!(
        acked.len(),
        handled.len(),
        "every handled request was acknowledged before exit"
    );
    assert!(
        handled.len() >= 5,
        "some were in flight at shutdown: {}",
        handled.len()
    );
    // After the drain nothing is subscribed any more.
    let late = tokio::time::timeout(
        Duration::from_millis(500),
        client.request("tasks.created", "late".into()),
    )
    .await;
    assert!(!matches!(late, Ok(Ok(_))), "no one answers after shutdown");
    Ok(())
}

#[tokio::test]
async fn connect_waits_for_a_server_that_starts_later() -> TestResult {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let connecting = tokio::spawn({
        let url = url.clone();
        async move {
            listener::connect(&url, &Credentials::None, "late", std::future::pending())
                .await
                .map_err(|e| e.to_string())
        }
    });
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!connecting.is_finished(), "still waiting for the server");
    let _server = start_server(port);
    let client = tokio::time::timeout(Duration::from_secs(10), connecting).await??;
    assert!(client?.is_some());
    // And a shutdown while waiting ends the wait cleanly.
    let nobody = format!("nats://127.0.0.1:{}", free_port());
    let gave_up = listener::connect(
        &nobody,
        &Credentials::None,
        "x",
        tokio::time::sleep(Duration::from_millis(300)),
    )
    .await?;
    assert!(gave_up.is_none());
    Ok(())
}

#[tokio::test]
async fn subscriptions_survive_a_server_restart() -> TestResult {
    let port = free_port();
    let server = start_server(port);
    let rec = Recorder::default();
    let running = start_listener(&server.url, vec![sub("tasks.*", None, 1)], &rec).await?;
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let server = start_server(port);
    let client = async_nats::connect(&server.url).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut acked = false;
    while !acked && Instant::now() < deadline {
        let r = tokio::time::timeout(
            Duration::from_millis(500),
            client.request("tasks.created", "after-restart".into()),
        )
        .await;
        acked = matches!(r, Ok(Ok(ref m)) if &m.payload[..] == br#"{"ok":true}"#);
    }
    assert!(acked, "the listener reconnected and resubscribed");
    running.stop().await?;
    Ok(())
}

#[tokio::test]
async fn user_password_and_token_credentials_work_and_wrong_ones_fail_fast() -> TestResult {
    let never = std::future::pending::<()>;
    let users = start_server_with(free_port(), &["--user", "spin", "--pass", "s3cret"]);
    let ok = listener::connect(
        &users.url,
        &Credentials::UserPassword("spin".into(), "s3cret".into()),
        "t",
        never(),
    )
    .await?;
    assert!(ok.is_some());
    let started = Instant::now();
    let wrong = listener::connect(
        &users.url,
        &Credentials::UserPassword("spin".into(), "nope".into()),
        "t",
        never(),
    )
    .await;
    let err = wrong.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("refused the credentials"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retry loop on bad credentials"
    );

    let tokens = start_server_with(free_port(), &["--auth", "tok-123"]);
    assert!(
        listener::connect(
            &tokens.url,
            &Credentials::Token("tok-123".into()),
            "t",
            never()
        )
        .await?
        .is_some()
    );
    let missing = listener::connect(&tokens.url, &Credentials::None, "t", never()).await;
    assert!(
        missing.is_err(),
        "connecting without the token must fail, not hang"
    );
    Ok(())
}

#[tokio::test]
async fn a_stop_while_the_server_is_gone_ends_within_seconds() -> TestResult {
    let server = start_server(free_port());
    let rec = Recorder::default();
    let running = start_listener(&server.url, vec![sub("tasks.*", None, 1)], &rec).await?;
    drop(server);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(20), running.stop()).await;
    let took = started.elapsed();
    assert!(stopped.is_ok(), "the listener never stopped");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    Ok(())
}
