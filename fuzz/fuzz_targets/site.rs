//! Every route of the site behind one request built from the input: method,
//! path, query, `Last-Event-ID`, `Authorization` and body (signed with the
//! operator key half the time, so the purge and replay bodies are read).
//! Whatever comes, an answer below 500 with a body, and header values
//! without a control character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tasks_domain::{ListRequest, Page, ReadError, Status, Task, Timestamp};
use tasks_outbox::ReplayError;
use tasks_outbox::dead_letters::DeadLetterPage;
use tasks_signing::{Purpose, sign};
use tasks_site::{Admin, PurgeScope, Request, TaskSource, handle};

const KEY: &[u8] = b"fuzz-key-of-at-least-thirty-two-bytes";
const TOKEN: &str = "fuzz-token-of-at-least-thirty-two-bytes";
const NOW: i64 = 1_800_000_000;

fn task(id: &str) -> Task {
    Task {
        id: id.to_owned(),
        title: format!("Task <{id}>"),
        description: Some("a & b".into()),
        status: Status::Pending,
        created_at: Timestamp(1_000),
        updated_at: Timestamp(2_000),
        version: 1,
        stream_seq: None,
        stream_epoch: None,
    }
}

struct Source;

impl TaskSource for Source {
    fn get_task(&self, id: &str, _: &str) -> Result<Task, ReadError> {
        tasks_domain::validate::validate_id(id).map_err(|e| ReadError::Invalid(e.to_string()))?;
        if id == "t-1" {
            Ok(task(id))
        } else {
            Err(ReadError::NotFound(id.to_owned()))
        }
    }
    fn list_tasks(&self, req: &ListRequest, _: &str) -> Result<Page, ReadError> {
        req.resolved_limit()?;
        if let Some(c) = &req.cursor {
            tasks_domain::cursor::decode(c)?;
        }
        Ok(Page {
            tasks: vec![task("t-1"), task("t-2")],
            next_cursor: Some(tasks_domain::cursor::encode("t-2")),
        })
    }
    fn probe(&self, _: &str) -> Result<(), ReadError> {
        Ok(())
    }
}

struct Operator;

impl Admin for Operator {
    fn dead_letters(&self, cursor: Option<&str>, _: usize) -> Result<DeadLetterPage, ReadError> {
        if let Some(c) = cursor {
            tasks_domain::cursor::decode(c)?;
        }
        Ok(DeadLetterPage {
            items: Vec::new(),
            next_cursor: None,
        })
    }
    fn replay(&self, id: &str, _: &str) -> Result<String, ReplayError> {
        Err(ReplayError::NotFound(id.into()))
    }
    fn signing_key(&self, _: Purpose) -> Option<(Vec<u8>, &'static str)> {
        Some((KEY.to_vec(), "hmac_key"))
    }
    fn signature_ttl_secs(&self) -> u64 {
        5
    }
    fn now_secs(&self) -> i64 {
        NOW
    }
    fn purge(&self, _: &PurgeScope, _: &str) -> Result<usize, ReadError> {
        Ok(0)
    }
    fn admin_token(&self) -> Option<Vec<u8>> {
        Some(TOKEN.as_bytes().to_vec())
    }
    fn metrics(&self) -> Result<String, ReadError> {
        Ok("tasks_change_feed_head 0\n".into())
    }
    fn take_signature(&self, _: &str, _: i64) -> Result<tasks_signing::Taken, ReadError> {
        // Each input is one request: every signature is new to it.
        Ok(tasks_signing::Taken::Fresh)
    }
}

const METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"];
const PATHS: [&str; 12] = [
    "/",
    "/tasks/",
    "/api/tasks",
    "/api/tasks/",
    "/api/events",
    "/api/dead-letters",
    "/api/dead-letters/",
    "/api/cache/purge",
    "/metrics",
    "/health",
    "/fragments/row/",
    "/static/",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    // path suffix \0 query \0 last-event-id \0 authorization \0 body
    let mut parts = rest.splitn(5, |&b| b == 0);
    let mut text = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (suffix, query, last_event_id, authorization) = (text(), text(), text(), text());
    let body = parts.next().unwrap_or_default().to_vec();
    let method = METHODS[usize::from(pick) % METHODS.len()];
    let mut path = format!("{}{suffix}", PATHS[usize::from(pick / 8) % PATHS.len()]);
    if pick & 0x40 != 0 && path.starts_with("/api/dead-letters/") {
        path.push_str("/replay");
    }
    let signed = pick & 0x80 != 0;
    let (timestamp, signature) = if signed {
        (
            Some(NOW.to_string()),
            Some(sign(KEY, NOW, method, &path, &body)),
        )
    } else {
        (None, None)
    };
    let req = Request {
        method: method.to_owned(),
        path,
        query,
        if_none_match: None,
        timestamp,
        signature,
        authorization: Some(if pick & 0x20 != 0 {
            format!("Bearer {TOKEN}")
        } else {
            authorization
        }),
        last_event_id: Some(last_event_id),
        body,
    };
    let resp = handle(&req, "fuzz-cid", &Source, &Operator);
    assert!(
        (200..500).contains(&resp.status),
        "{} {} ?{} → {}: {}",
        req.method,
        req.path,
        req.query,
        resp.status,
        String::from_utf8_lossy(&resp.body)
    );
    if resp.status >= 400 && req.method != "HEAD" {
        assert!(!resp.body.is_empty(), "a {} without a body", resp.status);
    }
    for (name, value) in &resp.headers {
        assert!(
            !value.chars().any(char::is_control),
            "header {name}: {value:?}"
        );
    }
});
