//! Bulk write, get and delete: splitting, encoding, unsuccessful keys.

use std::sync::Mutex;

use serde_json::{Value, json};

use super::*;
use crate::{Error, HttpRequest, Method, Options, RetryPolicy, TransportError};

fn bulk_ok(req: &HttpRequest) -> Reply {
    let n = body_json(req).as_array().map_or(0, Vec::len);
    Ok(ok(
        json!({"successful_key_count": n, "unsuccessful_keys": []}),
    ))
}

#[test]
fn bulk_write_splits_at_ten_thousand_pairs() {
    let fake = Fake::with(bulk_ok);
    let pairs: Vec<(String, Vec<u8>)> = (0..10_001)
        .map(|i| (format!("k{i}"), b"v".to_vec()))
        .collect();
    client(&fake).bulk_write(&pairs).expect("bulk write");
    let sizes: Vec<usize> = fake
        .sent()
        .iter()
        .map(|r| body_json(r).as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [10_000, 1]);
    let first = &fake.sent()[0];
    assert_eq!(
        (first.method, first.url.clone()),
        (Method::Put, url("bulk"))
    );
    assert_eq!(first.header("content-type"), Some("application/json"));
}

#[test]
fn bulk_write_splits_by_bytes_encodes_binary_and_dedupes() {
    let fake = Fake::with(bulk_ok);
    let kv = client(&fake).with_options(Options {
        bulk_write_bytes: 100,
        ..Options::default()
    });
    let pairs = vec![
        ("a".to_owned(), vec![b'x'; 30]),
        ("b".to_owned(), vec![0xff, 0x00, 0xfe]),
        ("a".to_owned(), b"last".to_vec()),
        ("c".to_owned(), vec![b'y'; 60]),
    ];
    kv.bulk_write(&pairs).expect("bulk write");
    let bodies: Vec<Value> = fake.sent().iter().map(body_json).collect();
    assert!(fake.sent().iter().all(|r| r.body.len() <= 100));
    assert_eq!(
        bodies,
        [
            json!([{"key": "a", "value": "last"}, {"key": "b", "value": "/wD+", "base64": true}]),
            json!([{"key": "c", "value": "y".repeat(60)}]),
        ]
    );
}

#[test]
fn oversized_bulk_items_go_by_single_put() {
    let fake = Fake::with(|req| match req.method {
        Method::Put if req.url.ends_with("/bulk") => bulk_ok(req),
        _ => Ok(ok(json!({}))),
    });
    // 20 MiB of non-UTF-8 bytes is 26.7 M base64 characters, over a bulk item's cap.
    let big = vec![0xffu8; 20 * 1024 * 1024];
    let pairs = vec![
        ("big".to_owned(), big.clone()),
        ("small".to_owned(), b"s".to_vec()),
    ];
    client(&fake).bulk_write(&pairs).expect("bulk write");
    let sent = fake.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[0].url.clone(), sent[0].body.len()),
        (url("values/big"), big.len())
    );
    assert_eq!(body_json(&sent[1]), json!([{"key": "small", "value": "s"}]));
}

#[test]
fn unsuccessful_keys_are_retried_then_reported() {
    // Round 1: b and c fail; round 2: c fails; round 3: all good.
    let calls = Mutex::new(0);
    let fake = Fake::with(move |req| {
        let mut n = calls
            .lock()
            .map_err(|_| TransportError("poisoned".to_owned()))?;
        *n += 1;
        let keys: Vec<String> = body_json(req)
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["key"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let failed: Vec<&String> = match *n {
            1 => keys.iter().filter(|k| *k != "a").collect(),
            2 => keys.iter().filter(|k| *k == "c").collect(),
            _ => Vec::new(),
        };
        Ok(ok(
            json!({"successful_key_count": keys.len() - failed.len(), "unsuccessful_keys": failed}),
        ))
    });
    let sleeper = RecordingSleeper::default();
    let kv = client(&fake).with_retry(RetryPolicy::default(), sleeper.clone());
    let pairs: Vec<(String, Vec<u8>)> = ["a", "b", "c"]
        .iter()
        .map(|k| ((*k).to_owned(), b"v".to_vec()))
        .collect();
    kv.bulk_write(&pairs).expect("bulk write");
    let sent: Vec<Value> = fake.sent().iter().map(body_json).collect();
    assert_eq!(sent.len(), 3);
    assert_eq!(
        sent[1],
        json!([{"key": "b", "value": "v"}, {"key": "c", "value": "v"}])
    );
    assert_eq!(sent[2], json!([{"key": "c", "value": "v"}]));
    assert_eq!(sleeper.waits().len(), 2);

    // Always failing: 1 + unsuccessful_rounds requests, then Incomplete.
    let stubborn = Fake::with(|req| {
        let n = body_json(req).as_array().map_or(0, Vec::len);
        Ok(ok(
            json!({"successful_key_count": 0, "unsuccessful_keys": ["x"], "n": n}),
        ))
    });
    let kv = client(&stubborn).with_options(Options {
        unsuccessful_rounds: 2,
        ..Options::default()
    });
    let err = kv
        .bulk_write(&[("x".to_owned(), b"v".to_vec())])
        .expect_err("incomplete");
    assert_eq!(
        err,
        Error::Incomplete {
            unsuccessful_keys: vec!["x".to_owned()]
        }
    );
    assert!(err.is_transient());
    assert_eq!(stubborn.sent().len(), 3);
}

#[test]
fn a_partial_failure_envelope_is_retried_and_other_failures_are_errors() {
    let fake = Fake::scripted(vec![
        Ok(raw(
            400,
            r#"{"success":false,"errors":[{"code":10001,"message":"partial"}],"result":{"successful_key_count":1,"unsuccessful_keys":["b"]}}"#,
        )),
        Ok(ok(
            json!({"successful_key_count": 1, "unsuccessful_keys": []}),
        )),
        Ok(fail(400, 10001, "received duplicate key")),
    ]);
    let kv = client(&fake);
    let pairs = vec![
        ("a".to_owned(), b"1".to_vec()),
        ("b".to_owned(), b"2".to_vec()),
    ];
    kv.bulk_write(&pairs).expect("retried");
    assert_eq!(
        body_json(&fake.sent()[1]),
        json!([{"key": "b", "value": "2"}])
    );
    assert!(matches!(
        kv.bulk_write(&pairs),
        Err(Error::Api {
            status: 400,
            code: Some(10001),
            ..
        })
    ));
}

#[test]
fn bulk_get_splits_at_one_hundred_and_lines_up_with_the_input() {
    let fake = Fake::with(|req| {
        let keys = body_json(req)["keys"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut values = serde_json::Map::new();
        for k in keys.iter().filter_map(Value::as_str) {
            let v = if k.ends_with('7') {
                Value::Null
            } else {
                json!(format!("v-{k}"))
            };
            values.insert(k.to_owned(), v);
        }
        Ok(ok(json!({ "values": values })))
    });
    let mut keys: Vec<String> = (0..250).map(|i| format!("k{i}")).collect();
    keys.push("k3".to_owned());
    let got = client(&fake).bulk_get(&keys).expect("bulk get");
    assert_eq!(got.len(), 251);
    assert_eq!(got[3].as_deref(), Some("v-k3"));
    assert_eq!(got[7], None);
    assert_eq!(got[250].as_deref(), Some("v-k3"));
    let sent = fake.sent();
    let sizes: Vec<usize> = sent
        .iter()
        .map(|r| body_json(r)["keys"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(body_json(&sent[0])["type"], "text");
    assert_eq!(
        (sent[0].method, sent[0].url.clone()),
        (Method::Post, url("bulk/get"))
    );
}

#[test]
fn get_many_rereads_values_that_were_not_text() {
    let fake = Fake::with(|req| {
        if req.url.ends_with("bulk/get") {
            Ok(ok(
                json!({"values": {"t": "text", "b": "\u{FFFD}\u{FFFD}", "m": null}}),
            ))
        } else {
            Ok(raw(200, "\u{0}"))
        }
    });
    let keys: Vec<String> = ["t", "b", "m"].iter().map(|k| (*k).to_owned()).collect();
    let got = client(&fake).get_many(&keys).expect("get_many");
    assert_eq!(got, [Some(b"text".to_vec()), Some(vec![0]), None]);
    assert_eq!(fake.sent().len(), 2);
    assert_eq!(fake.sent()[1].url, url("values/b"));
}

#[test]
fn bulk_delete_splits_and_retries() {
    let first = Mutex::new(true);
    let fake = Fake::with(move |req| {
        let n = body_json(req).as_array().map_or(0, Vec::len);
        let mut first = first
            .lock()
            .map_err(|_| TransportError("poisoned".to_owned()))?;
        let failed: Vec<&str> = if std::mem::replace(&mut *first, false) {
            vec!["k5"]
        } else {
            vec![]
        };
        Ok(ok(
            json!({"successful_key_count": n - failed.len(), "unsuccessful_keys": failed}),
        ))
    });
    let keys: Vec<String> = (0..10_005).map(|i| format!("k{i}")).collect();
    client(&fake).bulk_delete(&keys).expect("bulk delete");
    let sent = fake.sent();
    let bodies: Vec<Value> = sent.iter().map(body_json).collect();
    let sizes: Vec<usize> = bodies
        .iter()
        .map(|b| b.as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [10_000, 5, 1]);
    assert_eq!(bodies[2], json!(["k5"]));
    assert_eq!(
        (sent[0].method, sent[0].url.clone()),
        (Method::Post, url("bulk/delete"))
    );
}

#[test]
fn bulk_calls_with_nothing_to_do_send_nothing() {
    let fake = Fake::scripted(Vec::new());
    let kv = client(&fake);
    kv.bulk_write(&[]).expect("write");
    kv.bulk_delete(&[]).expect("delete");
    assert_eq!(kv.bulk_get(&[]).expect("get"), Vec::<Option<String>>::new());
    assert!(fake.sent().is_empty());
}
