//! The operator routes over a real (in-memory) local store: dead-letter
//! listing and the signed replay, with every way a signature can be wrong;
//! the admin token on dead letters and metrics, with every way it can be.

use std::cell::RefCell;
use tasks_domain::{ListRequest, Page, ReadError, Task, Timestamp, keys};
use tasks_signing::{Purpose, Taken, sign};

use tasks_kv::KeyValue;
use tasks_kv::testing::MemoryKv;
use tasks_outbox::dead_letters::{self, DeadLetter, DeadLetterPage, RawPayload};
use tasks_outbox::{ReplayError, replay_dead_letter};
use tasks_site::{Admin, PurgeScope, Request, Response, TaskSource, handle, take_signature_in};

const KEY: &[u8] = b"operator-key-of-at-least-32-bytes";
const TOKEN: &str = "operator-token-of-at-least-32-bytes";

/// `X-Timestamp` and `X-Signature`.
type Headers = (Option<String>, Option<String>);
const NOW: i64 = 1_795_327_314;

struct Local {
    kv: MemoryKv,
    /// The key of both purposes (`hmac_key`), unless `replay_key` is set.
    key: Option<Vec<u8>>,
    /// The replay key (`replay_key`), when set.
    replay_key: Option<Vec<u8>>,
    purged: RefCell<Vec<PurgeScope>>,
    token: Option<Vec<u8>>,
}

impl Local {
    /// A local store, the operator token, and `key` as `hmac_key` (both purposes).
    fn operator(key: Option<&[u8]>) -> Local {
        Local {
            kv: MemoryKv::new(),
            key: key.map(<[u8]>::to_vec),
            replay_key: None,
            purged: RefCell::default(),
            token: Some(TOKEN.as_bytes().to_vec()),
        }
    }
}

impl Admin for Local {
    fn dead_letters(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<DeadLetterPage, ReadError> {
        dead_letters::list(&self.kv, cursor, limit)
    }
    fn replay(&self, id: &str, _cid: &str) -> Result<String, ReplayError> {
        replay_dead_letter(&self.kv, id, Timestamp(NOW * 1000))
    }
    fn signing_key(&self, purpose: Purpose) -> Option<(Vec<u8>, &'static str)> {
        match (purpose, &self.replay_key) {
            (Purpose::Replay, Some(k)) => Some((k.clone(), "replay_key")),
            _ => self.key.clone().map(|k| (k, "hmac_key")),
        }
    }
    fn signature_ttl_secs(&self) -> u64 {
        5
    }
    fn now_secs(&self) -> i64 {
        NOW
    }
    fn purge(&self, scope: &PurgeScope, _cid: &str) -> Result<usize, ReadError> {
        self.purged.borrow_mut().push(scope.clone());
        Ok(match scope {
            PurgeScope::All => 7,
            PurgeScope::Tasks(ids) => ids.len(),
        })
    }
    fn admin_token(&self) -> Option<Vec<u8>> {
        self.token.clone()
    }
    fn metrics(&self) -> Result<String, ReadError> {
        Ok("tasks_change_feed_head 0\n".into())
    }
    fn take_signature(&self, signature: &str, until: i64) -> Result<Taken, ReadError> {
        take_signature_in(&self.kv, signature, until, self.now_secs())
            .map_err(|e| ReadError::Unavailable(e.to_string()))
    }
}

struct NoTasks;

impl TaskSource for NoTasks {
    fn get_task(&self, id: &str, _: &str) -> Result<Task, ReadError> {
        Err(ReadError::NotFound(id.into()))
    }
    fn list_tasks(&self, _: &ListRequest, _: &str) -> Result<Page, ReadError> {
        Ok(Page::default())
    }
    fn probe(&self, _: &str) -> Result<(), ReadError> {
        Ok(())
    }
}

fn dead_letter(kv: &MemoryKv, n: i64, payload: &str) -> String {
    let key = keys::dead_letter(NOW * 1000 + n, &format!("u{n}"));
    let record = DeadLetter {
        task_id: Some(format!("t-{n}")),
        errors: vec!["KV PUT failed".into()],
        attempts: 5,
        stream_seq: Some(41),
        stream_epoch: None,
        ..DeadLetter::new(
            "tasks.created",
            RawPayload::keep(payload.as_bytes()),
            &format!("c-{n}"),
            "gave up after 5 attempts: KV PUT failed".into(),
            Timestamp(NOW * 1000 + n),
        )
    };
    record.store(kv, &key).expect("stored");
    keys::dead_letter_id(&key).unwrap_or_default().to_owned()
}

fn call(
    admin: &Local,
    method: &str,
    path_q: &str,
    ts: Option<String>,
    sig: Option<String>,
    body: &[u8],
) -> Response {
    let (path, query) = path_q.split_once('?').unwrap_or((path_q, ""));
    let req = Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        timestamp: ts,
        signature: sig,
        body: body.to_vec(),
        authorization: Some(format!("Bearer {TOKEN}")),
        ..Request::default()
    };
    handle(&req, "cid-admin", &NoTasks, admin)
}

fn with_authorization(admin: &Local, path: &str, authorization: Option<&str>) -> Response {
    let req = Request {
        method: "GET".into(),
        path: path.into(),
        authorization: authorization.map(str::to_owned),
        ..Request::default()
    };
    handle(&req, "cid-admin", &NoTasks, admin)
}

#[test]
fn dead_letters_and_metrics_need_the_admin_token() {
    let admin = Local::operator(None);
    for path in ["/api/dead-letters", "/metrics"] {
        for (authorization, code) in [
            (None, "missing_token"),
            (Some("Bearer nope"), "bad_token"),
            (Some("Bearer operator-token2"), "bad_token"),
            (Some("operator-token"), "malformed_authorization"),
            (Some("Basic b3A6eA=="), "malformed_authorization"),
        ] {
            let resp = with_authorization(&admin, path, authorization);
            assert_eq!(resp.status, 401, "{path} {authorization:?}");
            assert_eq!(
                json(&resp)["error"]["code"],
                code,
                "{path} {authorization:?}"
            );
            assert!(resp.header("www-authenticate").is_some());
        }
        let ok = with_authorization(&admin, path, Some(&format!("Bearer {TOKEN}")));
        assert_eq!(ok.status, 200, "{path}");
    }
    let metrics = with_authorization(&admin, "/metrics", Some(&format!("Bearer {TOKEN}")));
    assert_eq!(
        metrics.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let off = Local {
        token: None,
        ..admin
    };
    for path in ["/api/dead-letters", "/metrics"] {
        let resp = with_authorization(&off, path, Some(&format!("Bearer {TOKEN}")));
        assert_eq!(resp.status, 503, "{path}");
        assert_eq!(json(&resp)["error"]["code"], "admin_disabled");
    }
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn dead_letters_are_listed_in_pages_with_reason_subject_and_correlation_id() {
    let admin = Local::operator(None);
    for n in 0..3 {
        dead_letter(&admin.kv, n, &format!(r#"{{"id":"t-{n}","title":"x"}}"#));
    }
    let first = call(&admin, "GET", "/api/dead-letters?limit=2", None, None, b"");
    assert_eq!(first.status, 200);
    assert_eq!(first.header("cache-control"), Some("no-store"));
    let v = json(&first);
    let items = v["deadLetters"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["subject"], "tasks.created");
    assert_eq!(items[0]["correlationId"], "c-0");
    assert_eq!(items[0]["taskId"], "t-0");
    assert_eq!(items[0]["attempts"], 5);
    assert!(
        items[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("gave up"))
    );
    assert_eq!(items[0]["payload"], r#"{"id":"t-0","title":"x"}"#);
    let cursor = v["nextCursor"].as_str().unwrap_or_default().to_owned();
    let rest = json(&call(
        &admin,
        "GET",
        &format!("/api/dead-letters?cursor={cursor}"),
        None,
        None,
        b"",
    ));
    assert_eq!(rest["deadLetters"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["nextCursor"], serde_json::Value::Null);
    assert_eq!(
        call(&admin, "GET", "/api/dead-letters?limit=0", None, None, b"").status,
        400
    );
    assert_eq!(
        call(
            &admin,
            "GET",
            "/api/dead-letters?cursor=%%%",
            None,
            None,
            b""
        )
        .status,
        400
    );
}

#[test]
fn replay_needs_a_good_signature_and_puts_the_event_back_in_the_outbox() {
    let admin = Local::operator(Some(KEY));
    let id = dead_letter(&admin.kv, 1, r#"{"id":"t-1","title":"x"}"#);
    let path = format!("/api/dead-letters/{id}/replay");
    let signed = |t: i64, p: &str, body: &[u8], key: &[u8]| {
        (Some(t.to_string()), Some(sign(key, t, "POST", p, body)))
    };

    let bad: Vec<(&str, Headers, &[u8], &str)> = vec![
        ("missing", (None, None), b"", "missing_signature"),
        ("expired", signed(NOW - 30, &path, b"", KEY), b"", "expired"),
        ("future", signed(NOW + 30, &path, b"", KEY), b"", "expired"),
        (
            "ahead of the skew allowed",
            signed(NOW + 3, &path, b"", KEY),
            b"",
            "expired",
        ),
        (
            "tampered body",
            signed(NOW, &path, b"", KEY),
            b"{}",
            "bad_signature",
        ),
        (
            "wrong path",
            signed(NOW, "/api/dead-letters/other/replay", b"", KEY),
            b"",
            "bad_signature",
        ),
        (
            "wrong key",
            signed(NOW, &path, b"", b"guess"),
            b"",
            "bad_signature",
        ),
    ];
    for (name, (ts, sig), body, code) in bad {
        let r = call(&admin, "POST", &path, ts, sig, body);
        assert_eq!(
            (r.status, json(&r)["error"]["code"].as_str()),
            (401, Some(code)),
            "{name}"
        );
        assert!(r.header("www-authenticate").is_some(), "{name}");
    }
    assert_eq!(
        admin.kv.keys_with_prefix(keys::OUTBOX_PREFIX).len(),
        0,
        "nothing replayed yet"
    );

    let (ts, sig) = signed(NOW, &path, b"", KEY);
    let ok = call(&admin, "POST", &path, ts.clone(), sig.clone(), b"");
    assert_eq!(ok.status, 202, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(json(&ok)["replayed"], id.as_str());
    assert_eq!(admin.kv.keys_with_prefix(keys::OUTBOX_PREFIX).len(), 1);
    assert_eq!(admin.kv.keys_with_prefix(keys::DLQ_PREFIX).len(), 0);
    assert!(admin.kv.get(&keys::pending("t-1")).ok().flatten().is_some());

    // The same request sent again inside its window (read on the way):
    // refused before it reaches the dead letters.
    let copy = call(&admin, "POST", &path, ts, sig, b"");
    assert_eq!(
        (copy.status, json(&copy)["error"]["code"].as_str()),
        (409, Some("replayed"))
    );
    let (ts, sig) = signed(NOW - 1, &path, b"", KEY);
    let again = call(&admin, "POST", &path, ts, sig, b"");
    assert_eq!(
        (again.status, json(&again)["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    assert_eq!(call(&admin, "GET", &path, None, None, b"").status, 405);
}

#[test]
fn without_a_key_replay_is_off_and_says_how_to_turn_it_on() {
    let admin = Local::operator(None);
    let id = dead_letter(&admin.kv, 1, r#"{"id":"t-1","title":"x"}"#);
    let path = format!("/api/dead-letters/{id}/replay");
    let r = call(
        &admin,
        "POST",
        &path,
        Some(NOW.to_string()),
        Some(sign(b"", NOW, "POST", &path, b"")),
        b"",
    );
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("SPIN_VARIABLE_HMAC_KEY"));
}

#[test]
fn purge_needs_a_good_signature_and_a_readable_body() {
    let admin = Local::operator(Some(KEY));
    let path = "/api/cache/purge";
    let post = |body: &[u8], ts: i64, key: &[u8], signed_path: &str| {
        call(
            &admin,
            "POST",
            path,
            Some(ts.to_string()),
            Some(sign(key, ts, "POST", signed_path, body)),
            body,
        )
    };
    let ok = post(br#"{"taskIds":["t-1","t-2"]}"#, NOW, KEY, path);
    assert_eq!((ok.status, json(&ok)["purged"].as_u64()), (200, Some(2)));
    let all = post(br#"{"all":true}"#, NOW, KEY, path);
    assert_eq!((all.status, json(&all)["purged"].as_u64()), (200, Some(7)));
    assert_eq!(
        *admin.purged.borrow(),
        vec![
            PurgeScope::Tasks(vec!["t-1".into(), "t-2".into()]),
            PurgeScope::All
        ]
    );

    // The six ways a signature can be wrong, each a 401 with its code.
    let body: &[u8] = br#"{"all":true}"#;
    let tampered = {
        let ts = NOW;
        call(
            &admin,
            "POST",
            path,
            Some(ts.to_string()),
            Some(sign(KEY, ts, "POST", path, body)),
            br#"{"all":false}"#,
        )
    };
    let cases = [
        (
            "missing",
            call(&admin, "POST", path, None, None, body),
            "missing_signature",
        ),
        ("expired", post(body, NOW - 6, KEY, path), "expired"),
        ("future", post(body, NOW + 6, KEY, path), "expired"),
        ("tampered body", tampered, "bad_signature"),
        (
            "wrong path",
            post(body, NOW, KEY, "/api/cache/purgeall"),
            "bad_signature",
        ),
        (
            "wrong key",
            post(body, NOW, b"not-the-key", path),
            "bad_signature",
        ),
    ];
    for (name, r, code) in cases {
        assert_eq!(
            (r.status, json(&r)["error"]["code"].as_str()),
            (401, Some(code)),
            "{name}"
        );
        let text = String::from_utf8_lossy(&r.body);
        assert!(
            !text.contains(&sign(KEY, NOW, "POST", path, body)),
            "{name}: no expected signature in the answer"
        );
    }
    assert_eq!(
        admin.purged.borrow().len(),
        2,
        "no bad request purged anything"
    );

    // Signed but unreadable bodies are 400s with the reason.
    for bad in [
        &br#"{}"#[..],
        br#"{"taskIds":[]}"#,
        br#"{"taskIds":["a b"]}"#,
        b"nope",
        br#"{"all":true,"x":1}"#,
    ] {
        let r = post(bad, NOW, KEY, path);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn the_openapi_document_describes_the_string_the_signature_covers() {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../openapi.json")).unwrap_or_default();
    // The security scheme says how to sign.
    let described: Vec<&str> = doc["components"]["securitySchemes"]
        .as_object()
        .into_iter()
        .flat_map(|s| s.values())
        .filter(|s| s["name"] == "X-Signature")
        .filter_map(|s| s["description"].as_str())
        .collect();
    assert!(!described.is_empty(), "X-Signature is documented");
    for d in described {
        assert!(
            d.contains(tasks_signing::SIGNED_STRING),
            "the document says {d:?}; the signature covers {}",
            tasks_signing::SIGNED_STRING
        );
    }
}

#[test]
fn secrets_shorter_than_32_bytes_keep_their_routes_off() {
    // 31 bytes: a correct header does not get through.
    let weak = "k".repeat(31);
    let admin = Local {
        kv: MemoryKv::default(),
        key: Some(weak.clone().into_bytes()),
        replay_key: None,
        purged: RefCell::default(),
        token: Some(weak.clone().into_bytes()),
    };
    let r = with_authorization(&admin, "/api/dead-letters", Some(&format!("Bearer {weak}")));
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 503, "{text}");
    assert!(
        text.contains("admin_weak_token") && text.contains("fewer than 32"),
        "{text}"
    );
    let body = br#"{"all":true}"#;
    let r = call(
        &admin,
        "POST",
        "/api/cache/purge",
        Some(NOW.to_string()),
        Some(sign(weak.as_bytes(), NOW, "POST", "/api/cache/purge", body)),
        body,
    );
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(r.status, 503, "{text}");
    assert!(text.contains("signing_weak_key"), "{text}");
    assert!(admin.purged.borrow().is_empty(), "nothing purged");
}

#[test]
fn purges_and_replays_are_signed_with_keys_of_their_own() {
    // A host given only the purge key (a read side on a public host) has no
    // key that signs replays; a replay signed with the purge key is refused
    // where replays have a key of their own.
    let purge_key = b"purge-key-of-at-least-thirty-two-b".to_vec();
    let replay_key = b"replay-key-of-at-least-thirty-two-".to_vec();
    let admin = Local {
        kv: MemoryKv::default(),
        key: Some(purge_key.clone()),
        replay_key: Some(replay_key.clone()),
        purged: RefCell::default(),
        token: None,
    };
    let body = br#"{"all":true}"#;
    let signed = |key: &[u8], path: &str, body: &[u8]| {
        (
            Some(NOW.to_string()),
            Some(sign(key, NOW, "POST", path, body)),
        )
    };
    let (ts, sig) = signed(&purge_key, "/api/cache/purge", body);
    let r = call(&admin, "POST", "/api/cache/purge", ts, sig, body);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let path = "/api/dead-letters/dlq:1-a/replay";
    let (ts, sig) = signed(&purge_key, path, b"");
    let r = call(&admin, "POST", path, ts, sig, b"");
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    let (ts, sig) = signed(&replay_key, path, b"");
    let r = call(&admin, "POST", path, ts, sig, b"");
    assert_eq!(r.status, 404, "signed right, unknown dead letter");
}

#[test]
fn the_read_side_manifest_gives_the_public_host_no_key_that_signs_replays() {
    let manifest = include_str!("../../../deploy/read-side/spin.toml");
    let declared: Vec<&str> = manifest
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    assert!(declared.contains(&"purge_key"), "{declared:?}");
    for key in ["hmac_key", "replay_key"] {
        assert!(!declared.contains(&key), "the read side declares {key}");
    }
}

#[test]
fn a_signed_request_is_taken_once_even_when_two_copies_arrive_together() {
    use tasks_kv::testing::{HookAt, Hooked};
    let admin = Local::operator(Some(KEY));
    let path = "/api/cache/purge";
    let body: &[u8] = br#"{"all":true}"#;
    let (ts, sig) = (NOW.to_string(), sign(KEY, NOW, "POST", path, body));
    let send = || {
        call(
            &admin,
            "POST",
            path,
            Some(ts.clone()),
            Some(sig.clone()),
            body,
        )
    };
    assert_eq!(send().status, 200);
    // A copy captured on the way and sent again within the window.
    let copy = send();
    assert_eq!(
        (copy.status, json(&copy)["error"]["code"].as_str()),
        (409, Some("replayed"))
    );
    assert_eq!(admin.purged.borrow().len(), 1, "purged once");
    // Signed anew, the same purge is taken.
    let fresh = call(
        &admin,
        "POST",
        path,
        Some((NOW - 1).to_string()),
        Some(sign(KEY, NOW - 1, "POST", path, body)),
        body,
    );
    assert_eq!(fresh.status, 200);

    // Two instances take copies of one signature at once: the other's
    // write lands between this one's read and its write.
    let kv = MemoryKv::new();
    let sig = sign(KEY, NOW, "POST", path, b"{}");
    let racing = Hooked::new(&kv, HookAt::Write, || {
        assert_eq!(
            take_signature_in(&kv, &sig, NOW + 5, NOW).expect("in memory"),
            Taken::Fresh
        );
    });
    assert_eq!(
        take_signature_in(&racing, &sig, NOW + 5, NOW).expect("in memory"),
        Taken::Replayed
    );
}

#[test]
fn a_purge_body_may_carry_a_nonce_of_at_most_128_bytes() {
    let admin = Local::operator(Some(KEY));
    let path = "/api/cache/purge";
    let post = |body: String| {
        call(
            &admin,
            "POST",
            path,
            Some(NOW.to_string()),
            Some(sign(KEY, NOW, "POST", path, body.as_bytes())),
            body.as_bytes(),
        )
    };
    let with = |nonce: &str| format!(r#"{{"taskIds":["t-1"],"nonce":"{nonce}"}}"#);
    assert_eq!(post(with("a")).status, 200);
    assert_eq!(
        post(with("b")).status,
        200,
        "same tasks, same second, own signature"
    );
    assert_eq!(post(with(&"n".repeat(128))).status, 200);
    let long = post(with(&"n".repeat(129)));
    assert_eq!(long.status, 400);
    assert!(String::from_utf8_lossy(&long.body).contains("nonce"));
    assert_eq!(admin.purged.borrow().len(), 3);
}
