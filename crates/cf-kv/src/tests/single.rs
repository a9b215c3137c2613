//! Single-key calls, listing, retries, limits and configuration.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::{Client, Config, Error, Method, RetryPolicy, TransportError, hint};

#[test]
fn get_returns_raw_bytes_and_sends_bearer() {
    let fake = Fake::scripted(vec![Ok(raw(200, "{\"not\":\"an envelope\"}"))]);
    let got = client(&fake).get("a/b c").expect("get");
    assert_eq!(got, Some(b"{\"not\":\"an envelope\"}".to_vec()));
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].method, Method::Get);
    assert_eq!(sent[0].url, url("values/a%2Fb%20c"));
    assert_eq!(
        sent[0].header("authorization"),
        Some("Bearer tok-SECRET-42")
    );
    assert!(sent[0].body.is_empty());
}

#[test]
fn get_missing_is_none_only_for_code_10009() {
    let fake = Fake::scripted(vec![
        Ok(fail(404, 10009, "get: 'key not found'")),
        Ok(fail(404, 10013, "get: 'namespace not found'")),
        Ok(raw(404, "404 Not Found")),
        Ok(fail(404, 7003, "No route for the URI")),
    ]);
    let kv = client(&fake);
    assert_eq!(kv.get("k").expect("missing key"), None);
    assert!(matches!(
        kv.get("k"),
        Err(Error::Auth {
            hint: hint::NAMESPACE_ID,
            code: Some(10013),
            ..
        })
    ));
    assert!(matches!(
        kv.get("k"),
        Err(Error::Api {
            status: 404,
            code: None,
            ..
        })
    ));
    assert!(matches!(
        kv.get("k"),
        Err(Error::Auth {
            hint: hint::ACCOUNT_ID,
            ..
        })
    ));
}

#[test]
fn put_and_delete_parse_the_envelope() {
    let fake = Fake::scripted(vec![
        Ok(ok(json!({}))),
        Ok(ok(Value::Null)),
        Ok(raw(
            200,
            r#"{"success":false,"errors":[{"code":10029,"message":"invalid request"}]}"#,
        )),
        Ok(raw(200, "not json")),
        Ok(fail(403, 10000, "Authentication error")),
    ]);
    let kv = client(&fake);
    kv.put("k", &[0, 159, 146, 150]).expect("put");
    kv.delete("k").expect("delete");
    assert!(matches!(
        kv.put("k", b"v"),
        Err(Error::Api {
            status: 200,
            code: Some(10029),
            ..
        })
    ));
    assert!(matches!(
        kv.delete("k"),
        Err(Error::Api {
            status: 200,
            code: None,
            ..
        })
    ));
    let err = kv.put("k", b"v").expect_err("auth");
    assert!(
        matches!(
            err,
            Error::Auth {
                status: 403,
                hint: hint::API_TOKEN,
                ..
            }
        ),
        "{err:?}"
    );
    let sent = fake.sent();
    assert_eq!(sent[0].method, Method::Put);
    assert_eq!(sent[0].body, vec![0, 159, 146, 150]);
    assert_eq!(
        sent[0].header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(sent[1].method, Method::Delete);
    assert_eq!(sent[1].url, url("values/k"));
}

#[test]
fn list_builds_the_query() {
    let fake = Fake::scripted(vec![page(&["p/1"], "")]);
    let kv = client(&fake);
    let got = kv.list("p/ x", Some(10), Some("a+b=")).expect("list");
    assert_eq!(got.keys.len(), 1);
    assert_eq!(got.cursor, None);
    assert_eq!(
        fake.sent()[0].url,
        url("keys?prefix=p%2F%20x&limit=10&cursor=a%2Bb%3D")
    );
    for bad in [0, 9, 1001] {
        assert!(matches!(
            kv.list("", Some(bad), None),
            Err(Error::Invalid(_))
        ));
    }
    assert_eq!(fake.sent().len(), 1);
}

#[test]
fn list_all_follows_the_cursor_through_empty_pages() {
    let fake = Fake::scripted(vec![
        page(&["a", "b"], "c1"),
        page(&[], "c2"),
        page(&[], "c3"),
        page(&["c"], ""),
    ]);
    let keys = client(&fake).list_all("").expect("list_all");
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let urls: Vec<String> = fake.sent().into_iter().map(|r| r.url).collect();
    assert_eq!(
        urls,
        [
            url("keys"),
            url("keys?cursor=c1"),
            url("keys?cursor=c2"),
            url("keys?cursor=c3")
        ]
    );
}

#[test]
fn list_all_ends_on_a_missing_cursor_and_refuses_a_stuck_one() {
    let fake = Fake::scripted(vec![Ok(ok(
        json!([{"name": "a", "expiration": 1_700_000_000, "metadata": {"m": 1}}]),
    ))]);
    let keys = client(&fake).list_all("a").expect("list_all");
    assert_eq!(keys[0].expiration, Some(1_700_000_000));
    assert_eq!(keys[0].metadata, Some(json!({"m": 1})));
    let stuck = Fake::scripted(vec![page(&["a"], "same"), page(&["a"], "same")]);
    assert!(matches!(
        client(&stuck).list_all(""),
        Err(Error::Api { .. })
    ));
}

#[test]
fn transient_errors_are_returned_without_waiting() {
    let fake = Fake::scripted(vec![
        Ok(with_header(
            fail(429, 971, "Please wait"),
            "Retry-After",
            "2",
        )),
        Ok(raw(503, "<html>busy</html>")),
        Err(TransportError("connection reset".to_owned())),
    ]);
    let kv = client(&fake);
    let err = kv.get("k").expect_err("429");
    assert_eq!(
        err,
        Error::Transient {
            status: Some(429),
            retry_after: Some(Duration::from_secs(2)),
            message: "Please wait (code 971)".to_owned()
        }
    );
    assert!(matches!(
        kv.put("k", b"v"),
        Err(Error::Transient {
            status: Some(503),
            retry_after: None,
            ..
        })
    ));
    let err = kv.delete("k").expect_err("transport");
    assert!(err.is_transient());
    assert!(matches!(err, Error::Transient { status: None, .. }));
    assert_eq!(fake.sent().len(), 3);
}

#[test]
fn a_sleeper_turns_on_retries() {
    let fake = Fake::scripted(vec![
        Ok(with_header(fail(429, 971, "wait"), "retry-after", "2")),
        Ok(raw(500, "")),
        Ok(raw(200, "v")),
        Ok(with_header(fail(429, 971, "blocked"), "retry-after", "300")),
    ]);
    let sleeper = RecordingSleeper::default();
    let policy = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(10),
    };
    let kv = client(&fake).with_retry(policy, sleeper.clone());
    assert_eq!(kv.get("k").expect("third try"), Some(b"v".to_vec()));
    // Cloudflare's 5-minute block is longer than max_delay: no wait, the caller decides.
    assert_eq!(
        kv.get("k").expect_err("blocked").retry_after(),
        Some(Duration::from_secs(300))
    );
    assert_eq!(
        sleeper.waits(),
        [Duration::from_secs(2), Duration::from_millis(200)]
    );
    assert_eq!(fake.sent().len(), 4);
}

#[test]
fn limits_are_checked_before_any_request() {
    let fake = Fake::scripted(Vec::new());
    let kv = client(&fake);
    let long = "k".repeat(513);
    let big = vec![b'x'; 25 * 1024 * 1024 + 1];
    for key in ["", ".", "..", long.as_str()] {
        assert!(matches!(kv.get(key), Err(Error::Invalid(_))), "{key:?}");
        assert!(matches!(kv.put(key, b"v"), Err(Error::Invalid(_))));
        assert!(matches!(kv.delete(key), Err(Error::Invalid(_))));
        assert!(matches!(
            kv.bulk_get(&[key.to_owned()]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            kv.bulk_delete(&[key.to_owned()]),
            Err(Error::Invalid(_))
        ));
    }
    assert!(matches!(kv.put("k", &big), Err(Error::Invalid(_))));
    let pairs = vec![("ok".to_owned(), b"v".to_vec()), ("k".to_owned(), big)];
    assert!(matches!(kv.bulk_write(&pairs), Err(Error::Invalid(_))));
    assert!(fake.sent().is_empty());
}

#[test]
fn the_token_stays_out_of_debug_and_errors() {
    let fake = Fake::scripted(vec![Ok(fail(
        403,
        10000,
        &format!("token {TOKEN} is invalid"),
    ))]);
    let kv = client(&fake);
    let err = kv.get("k").expect_err("auth");
    for text in [
        format!("{err}"),
        format!("{err:?}"),
        format!("{kv:?}"),
        format!("{:?}", fake.sent()),
    ] {
        assert!(!text.contains("SECRET"), "{text}");
    }
    assert!(err.to_string().contains("cf_api_token"), "{err}");
}

#[test]
fn config_shapes() {
    let cfg = Config::cloudflare("abc123", NS, TOKEN).expect("config");
    assert_eq!(
        cfg.base,
        "https://api.cloudflare.com/client/v4/accounts/abc123"
    );
    assert!(
        matches!(Config::cloudflare("", NS, TOKEN), Err(Error::Invalid(m)) if m.contains("cf_account_id"))
    );
    assert!(matches!(
        Config::cloudflare("a/b", NS, TOKEN),
        Err(Error::Invalid(_))
    ));
    assert_eq!(Config::new("http://h/api/", NS, "").base, "http://h/api");
    let fake = Fake::scripted(Vec::new());
    assert!(Client::new(&fake, Config::new("ftp://h", NS, "")).is_err());
    assert!(Client::new(&fake, Config::new("http://h?x", NS, "")).is_err());
    assert!(
        matches!(Client::new(&fake, Config::new(BASE, "", "")), Err(Error::Invalid(m)) if m.contains("cf_namespace_id"))
    );
    // No token: no Authorization header (miniflare).
    let fake = Fake::scripted(vec![Ok(raw(200, "v"))]);
    let kv = Client::new(&fake, Config::new(BASE, NS, "")).expect("client");
    kv.get("k").expect("get");
    assert_eq!(fake.sent()[0].header("authorization"), None);
}
