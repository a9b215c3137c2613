//! The client's failure handling against miniflare behind cf-fault-proxy
//! (run in-process): each test has its own proxy, so its own faults and counters.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tasks_cf_fault_proxy::Proxy;
use tasks_cf_kv::native::UreqHttp;
use tasks_cf_kv::{Client, Error, Http, HttpRequest, Method, Options, RetryPolicy, Sleeper};

struct Rig {
    proxy: Proxy,
    kv: Client<UreqHttp>,
}

fn rig() -> Option<Rig> {
    let mf = support::miniflare()?;
    let proxy = Proxy::start("127.0.0.1:0", &mf.origin).expect("proxy");
    let kv = mf.client_via(&proxy.url());
    Some(Rig { proxy, kv })
}

impl Rig {
    fn control(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        let resp = UreqHttp::default()
            .send(HttpRequest {
                method,
                url: format!("{}/__proxy/{path}", self.proxy.url()),
                headers: vec![("content-type".to_owned(), "application/json".to_owned())],
                body: if body.is_null() {
                    Vec::new()
                } else {
                    body.to_string().into_bytes()
                },
            })
            .expect("control request");
        (
            resp.status,
            serde_json::from_slice(&resp.body).expect("control answer is JSON"),
        )
    }

    fn fault(&self, spec: Value) {
        let (status, answer) = self.control(Method::Post, "faults", spec);
        assert_eq!(status, 200, "{answer}");
    }

    fn stats(&self) -> Value {
        self.control(Method::Get, "stats", Value::Null).1
    }
}

#[derive(Clone, Default)]
struct RecordingSleeper(Arc<Mutex<Vec<Duration>>>);

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) {
        self.0.lock().expect("lock").push(d);
    }
}

#[test]
fn too_many_requests_is_transient_with_retry_after() {
    let Some(rig) = rig() else { return };
    rig.fault(json!({"status": 429, "retryAfter": 2, "count": 1}));
    rig.fault(json!({"status": 429, "retryAfter": "Wed, 21 Oct 2015 07:28:00 GMT", "count": 1}));
    let err = rig.kv.get("faults:429").expect_err("first 429");
    assert!(err.is_transient());
    assert!(
        matches!(
            err,
            Error::Transient {
                status: Some(429),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
    // An HTTP-date already past means "now".
    let err = rig.kv.get("faults:429").expect_err("second 429");
    assert_eq!(err.retry_after(), Some(Duration::ZERO));
    assert_eq!(rig.kv.get("faults:429").expect("faults spent"), None);
    assert_eq!(rig.stats()["faulted"], 2);
}

#[test]
fn server_errors_are_transient_and_a_sleeper_retries_them() {
    let Some(rig) = rig() else { return };
    rig.fault(json!({"status": 500, "count": 1}));
    let err = rig.kv.put("faults:500", b"v").expect_err("500");
    assert!(
        matches!(
            err,
            Error::Transient {
                status: Some(500),
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );

    let sleeper = RecordingSleeper::default();
    let policy = RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_secs(5),
    };
    let kv = support::miniflare()
        .expect("running")
        .client_via(&rig.proxy.url())
        .with_retry(policy, sleeper.clone());
    rig.fault(json!({"status": 503, "count": 2}));
    kv.put("faults:500", b"after retries")
        .expect("third attempt succeeds");
    assert_eq!(
        kv.get("faults:500").expect("get"),
        Some(b"after retries".to_vec())
    );
    assert_eq!(
        *sleeper.0.lock().expect("lock"),
        [Duration::from_millis(10), Duration::from_millis(20)]
    );
}

#[test]
fn a_dropped_connection_is_a_transient_transport_error() {
    let Some(rig) = rig() else { return };
    rig.fault(json!({"drop": true, "count": 1}));
    let err = rig.kv.get("faults:drop").expect_err("dropped");
    assert!(
        matches!(
            err,
            Error::Transient {
                status: None,
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        rig.kv.get("faults:drop").expect("next request is answered"),
        None
    );
}

#[test]
fn latency_is_observed_and_path_filters_apply() {
    let Some(rig) = rig() else { return };
    rig.fault(json!({"latencyMs": 300, "count": 1}));
    let started = Instant::now();
    rig.kv.get("faults:slow").expect("slow get");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "{:?}",
        started.elapsed()
    );

    rig.fault(json!({"status": 503, "path": "/bulk", "count": 1}));
    rig.kv
        .put("faults:filtered", b"v")
        .expect("single put is not filtered");
    let err = rig
        .kv
        .bulk_write(&[("faults:filtered".to_owned(), b"w".to_vec())])
        .expect_err("bulk faulted");
    assert!(
        matches!(
            err,
            Error::Transient {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    rig.fault(json!({"clear": true}));
    let (status, _) = rig.control(Method::Post, "faults", json!({"status": 1}));
    assert_eq!(status, 400);
}

#[test]
fn counters_count_what_the_client_sent() {
    let Some(rig) = rig() else { return };
    let kv = support::miniflare()
        .expect("running")
        .client_via(&rig.proxy.url())
        .with_options(Options {
            bulk_write_pairs: 50,
            ..Options::default()
        });
    rig.control(Method::Post, "stats/reset", Value::Null);
    kv.put("count:a", b"1").expect("put");
    kv.put("count:b", b"2").expect("put");
    kv.get("count:a").expect("get");
    kv.get("count:missing").expect("get");
    kv.get("count:b").expect("get");
    kv.delete("count:b").expect("delete");
    kv.list_all("count:").expect("list");
    let pairs: Vec<(String, Vec<u8>)> = (0..120)
        .map(|i| (format!("count:{i:03}"), b"x".to_vec()))
        .collect();
    kv.bulk_write(&pairs).expect("bulk write: 3 requests");
    let keys: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    kv.bulk_get(&keys).expect("bulk get: 2 requests");
    kv.bulk_delete(&keys).expect("bulk delete: 1 request");
    let want = json!({
        "total": 13, "get": 3, "put": 2, "delete": 1, "list": 1,
        "bulk_write": 3, "bulk_get": 2, "bulk_delete": 1, "other": 0, "faulted": 0,
    });
    assert_eq!(rig.stats(), want);
    assert_eq!(rig.proxy.stats().total, 13);
}
