//! The whole site over a fake task source: routes, bodies, headers, caching.

mod common;

use common::NoAdmin;
use std::cell::RefCell;

use tasks_domain::{ListRequest, Page, ReadError, Status, Task, Timestamp};
use tasks_site::{Request, Response, TaskSource, handle};

#[derive(Default)]
struct Fake {
    tasks: Vec<Task>,
    fail: Option<ReadError>,
    seen_cids: RefCell<Vec<String>>,
    seen_lists: RefCell<Vec<ListRequest>>,
}

impl Fake {
    fn with(tasks: Vec<Task>) -> Self {
        Fake {
            tasks,
            ..Default::default()
        }
    }
    fn failing(e: ReadError) -> Self {
        Fake {
            fail: Some(e),
            ..Default::default()
        }
    }
    fn check(&self, cid: &str) -> Result<(), ReadError> {
        self.seen_cids.borrow_mut().push(cid.to_owned());
        self.fail.clone().map_or(Ok(()), Err)
    }
}

impl TaskSource for Fake {
    fn get_task(&self, id: &str, cid: &str) -> Result<Task, ReadError> {
        self.check(cid)?;
        self.tasks
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .ok_or_else(|| ReadError::NotFound(id.to_owned()))
    }
    fn list_tasks(&self, req: &ListRequest, cid: &str) -> Result<Page, ReadError> {
        self.check(cid)?;
        self.seen_lists.borrow_mut().push(req.clone());
        let tasks: Vec<Task> = self
            .tasks
            .iter()
            .filter(|t| req.status.is_none_or(|s| s == t.status))
            .cloned()
            .collect();
        let next_cursor = (tasks.len() > 1).then(|| "Y3Vyc29y".to_owned());
        Ok(Page { tasks, next_cursor })
    }
    fn probe(&self, cid: &str) -> Result<(), ReadError> {
        self.check(cid)
    }
}

fn task(id: &str, title: &str, status: Status) -> Task {
    Task {
        id: id.into(),
        title: title.into(),
        description: Some("line one\nline <two>".into()),
        status,
        created_at: Timestamp(1_795_327_314_123),
        updated_at: Timestamp(1_795_327_374_123),
        version: 2,
        stream_seq: None,
        stream_epoch: None,
    }
}

fn sample() -> Fake {
    Fake::with(vec![
        task("t-1", "Buy milk", Status::Pending),
        task("t-2", "<script>alert(1)</script>", Status::InProgress),
        task("ns:3", "Done thing", Status::Completed),
    ])
}

fn get(path_and_query: &str, source: &dyn TaskSource) -> Response {
    send("GET", path_and_query, None, source)
}

fn send(
    method: &str,
    path_and_query: &str,
    inm: Option<&str>,
    source: &dyn TaskSource,
) -> Response {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let req = Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        if_none_match: inm.map(str::to_owned),
        ..Request::default()
    };
    handle(&req, "cid-test", source, &NoAdmin)
}

fn body(r: &Response) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

#[test]
fn home_lists_tasks_with_badges_times_and_links() {
    let r = get("/", &sample());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let html = body(&r);
    for needle in [
        "<a href=\"/tasks/t-1\">Buy milk</a>",
        "<span class=\"badge in_progress\">In progress</span>",
        "<time datetime=\"2026-11-22T06:02:54.123Z\"",
        "2026-11-22 06:02 UTC",
        "href=\"/tasks/ns:3\"",
        "href=\"/?cursor=Y3Vyc29y\" rel=\"next\">Next page",
        "href=\"/?status=in_progress\"",
        "href=\"/static/app.css\"",
        "Request cid-test",
    ] {
        assert!(html.contains(needle), "missing {needle:?} in\n{html}");
    }
    assert!(
        !html.contains("First page"),
        "no first-page link on page one"
    );
}

#[test]
fn script_titles_render_as_text() {
    let html = body(&get("/", &sample()));
    assert!(!html.contains("<script>"), "{html}");
    assert!(
        html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
            || html.contains("&lt;script&gt;"),
        "{html}"
    );
    let detail = body(&get("/tasks/t-2", &sample()));
    assert!(
        !detail.contains("<script>") && !detail.contains("<two>"),
        "{detail}"
    );
}

#[test]
fn status_filter_marks_the_active_link_and_keeps_it_in_paging() {
    let fake = sample();
    let r = get("/?status=in-progress&limit=1&cursor=abc", &fake);
    assert_eq!(r.status, 200);
    let html = body(&r);
    assert!(html.contains("<h1>In progress tasks</h1>"), "{html}");
    assert!(
        html.contains("href=\"/?status=in_progress&#38;limit=1\" class=\"active\""),
        "{html}"
    );
    assert!(html.contains("First page"));
    let seen = fake.seen_lists.borrow();
    assert_eq!(seen[0].status, Some(Status::InProgress));
    assert_eq!(seen[0].limit, Some(1));
    assert_eq!(seen[0].cursor.as_deref(), Some("abc"));
}

#[test]
fn empty_states_say_what_to_do() {
    let html = body(&get("/", &Fake::default()));
    assert!(
        html.contains("No tasks yet") && html.contains("nats pub tasks.created"),
        "{html}"
    );
    let filtered = body(&get("/?status=cancelled", &sample()));
    assert!(filtered.contains("No Cancelled tasks"), "{filtered}");
}

#[test]
fn task_page_shows_every_field() {
    let r = get("/tasks/ns%3A3", &sample());
    assert_eq!(r.status, 200);
    let html = body(&r);
    for needle in [
        "<h1>Done thing</h1>",
        "badge completed",
        "<code>ns:3</code>",
        "<dd>2</dd>",
        "/api/tasks/ns:3",
        "line one\nline &#60;two&#62;",
    ] {
        assert!(html.contains(needle), "missing {needle:?} in\n{html}");
    }
}

#[test]
fn missing_task_is_a_styled_404_page_and_a_404_json() {
    let page = get("/tasks/nope", &sample());
    assert_eq!(page.status, 404);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let html = body(&page);
    assert!(
        html.contains("Task not found") && html.contains("class=\"topbar\""),
        "{html}"
    );

    let api = get("/api/tasks/nope", &sample());
    assert_eq!(api.status, 404);
    assert_eq!(
        json(&api),
        serde_json::json!({"error":{"code":"not_found","message":"task \"nope\" not found"}})
    );
}

#[test]
fn api_list_and_item_shapes() {
    let list = json(&get("/api/tasks?status=completed", &sample()));
    assert_eq!(list["tasks"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["tasks"][0]["id"], "ns:3");
    assert_eq!(list["tasks"][0]["createdAt"], "2026-11-22T06:01:54.123Z");
    assert_eq!(list["nextCursor"], serde_json::Value::Null);

    let item = get("/api/tasks/t-1", &sample());
    assert_eq!(item.header("content-type"), Some("application/json"));
    assert_eq!(item.header("cache-control"), Some("no-cache"));
    let v = json(&item);
    assert_eq!(v["title"], "Buy milk");
    assert_eq!(v["status"], "pending");
    assert_eq!(v["version"], 2);
}

#[test]
fn bad_parameters_are_400_with_readable_reasons() {
    for (path, needle) in [
        ("/api/tasks?limit=abc", "limit must be a whole number"),
        ("/api/tasks?status=done", "unknown status"),
        ("/api/tasks/a%20b", "id may only contain"),
        ("/api/tasks/%FF", "not valid UTF-8"),
    ] {
        let fake = if path.contains("a%20b") {
            Fake::failing(ReadError::Invalid("id may only contain letters".into()))
        } else {
            sample()
        };
        let r = get(path, &fake);
        assert_eq!(r.status, 400, "{path}");
        assert_eq!(json(&r)["error"]["code"], "invalid_request", "{path}");
        assert!(
            json(&r)["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains(needle),
            "{path}: {}",
            body(&r)
        );
    }
    let page = get("/?limit=0x", &sample());
    assert_eq!(page.status, 400);
    assert!(body(&page).contains("Bad request"));
}

#[test]
fn etag_and_304() {
    let fake = sample();
    let first = get("/api/tasks/t-1", &fake);
    let tag = first.header("etag").map(str::to_owned).unwrap_or_default();
    assert!(tag.starts_with('"'), "{tag}");
    let again = send("GET", "/api/tasks/t-1", Some(&tag), &fake);
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(tag.as_str()));
    assert_eq!(again.header("x-correlation-id"), Some("cid-test"));
    let stale = send("GET", "/api/tasks/t-1", Some("\"other\""), &fake);
    assert_eq!(stale.status, 200);
    let list = get("/api/tasks", &fake);
    let list_tag = list.header("etag").unwrap_or_default().to_owned();
    assert_eq!(
        send("GET", "/api/tasks", Some(&list_tag), &fake).status,
        304
    );
}

#[test]
fn every_response_carries_security_headers_and_the_correlation_id() {
    let fake = sample();
    for path in [
        "/",
        "/tasks/t-1",
        "/tasks/zzz",
        "/api/tasks",
        "/api/tasks/t-1",
        "/health",
        "/nowhere",
        "/static/app.css",
    ] {
        let r = get(path, &fake);
        assert_eq!(r.header("x-correlation-id"), Some("cid-test"), "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
        assert!(
            r.header("content-security-policy")
                .unwrap_or("")
                .starts_with("default-src 'self'"),
            "{path}"
        );
        assert!(r.header("cache-control").is_some(), "{path}");
    }
    assert!(fake.seen_cids.borrow().iter().all(|c| c == "cid-test"));
    assert!(!fake.seen_cids.borrow().is_empty());
}

#[test]
fn wrong_method_is_405_with_allow() {
    let r = send("POST", "/api/tasks", None, &sample());
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(json(&r)["error"]["code"], "method_not_allowed");
    let page = send("DELETE", "/", None, &sample());
    assert_eq!(page.status, 405);
    let head = send("HEAD", "/api/tasks/t-1", None, &sample());
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

#[test]
fn unknown_paths_are_404_in_the_right_format() {
    let page = get("/nowhere", &sample());
    assert_eq!(page.status, 404);
    assert!(body(&page).contains("Page not found"));
    let api = get("/api/nothing", &sample());
    assert_eq!(api.status, 404);
    assert_eq!(json(&api)["error"]["code"], "not_found");
    assert_eq!(get("/tasks/", &sample()).status, 404);
    assert_eq!(get("/api/tasks/a/b", &sample()).status, 404);
}

#[test]
fn store_outage_is_503_and_internal_errors_hide_details() {
    let down = Fake::failing(ReadError::Unavailable("sqlite: database is locked".into()));
    let r = get("/api/tasks", &down);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("5"));
    assert_eq!(json(&r)["error"]["code"], "store_unavailable");
    assert!(
        !body(&r).contains("sqlite"),
        "internal detail leaked: {}",
        body(&r)
    );
    assert_eq!(get("/", &down).status, 503);

    let health = get("/health", &down);
    assert_eq!(health.status, 503);
    assert_eq!(json(&health)["store"], "unreachable");

    let broken = Fake::failing(ReadError::Other(
        "stored task \"x\" is unreadable: eof".into(),
    ));
    let r = get("/api/tasks/x", &broken);
    assert_eq!(r.status, 500);
    assert!(!body(&r).contains("eof"));
}

#[test]
fn health_reports_store_and_version() {
    let r = get("/health", &sample());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let v = json(&r);
    assert_eq!(v["status"], "ok");
    assert_eq!(v["store"], "reachable");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn assets_are_served_with_long_cache() {
    let css = get("/static/app.css", &sample());
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("cache-control"), Some("public, max-age=3600"));
    assert!(body(&css).contains(".badge"));
    assert_eq!(get("/static/favicon.svg", &sample()).status, 200);
}

#[test]
fn an_id_that_is_not_one_is_refused_before_the_source_sees_or_logs_it() {
    // A decoded line break would start a forged log line in whatever logs
    // the id next (kv-read logs `RPC getTask(<id>)`); an escape sequence,
    // bidi override or 5,000-character id would reach the logs as well.
    let long = format!("/api/tasks/{}", "a".repeat(5_000));
    for path in [
        "/api/tasks/x%0A%5Bforged-cid%5D%20REPLAY%20dlq:1-a%20OK",
        "/api/tasks/x%1B%5B2J",
        "/api/tasks/x%E2%80%AEgnp",
        long.as_str(),
        "/tasks/x%0Ay",
        "/fragments/row/x%0Ay",
        "/fragments/task/x%0Ay",
    ] {
        let fake = sample();
        let r = get(path, &fake);
        assert_eq!(r.status, 400, "{path}");
        assert!(
            fake.seen_cids.borrow().is_empty(),
            "{path}: the source was asked"
        );
    }
}

#[test]
fn only_the_signed_post_routes_read_a_body_and_a_full_purge_fits_it() {
    use tasks_domain::validate::{MAX_ID_CHARS, MAX_PURGE_IDS};
    use tasks_site::routes::{MAX_BODY_BYTES, body_limit};
    assert_eq!(body_limit("POST", "/api/cache/purge"), Some(MAX_BODY_BYTES));
    assert_eq!(
        body_limit("POST", "/api/dead-letters/dlq:1-a/replay"),
        Some(MAX_BODY_BYTES)
    );
    for (method, path) in [
        ("POST", "/x"),
        ("POST", "/"),
        ("POST", "/api/tasks"),
        ("POST", "/api/tasks/t-1"),
        ("PUT", "/api/cache/purge"),
        ("GET", "/api/cache/purge"),
        ("DELETE", "/api/dead-letters/dlq:1-a/replay"),
    ] {
        assert_eq!(body_limit(method, path), None, "{method} {path}");
    }
    let ids: Vec<String> = (0..MAX_PURGE_IDS)
        .map(|i| format!("{i:0>width$}", width = MAX_ID_CHARS))
        .collect();
    let body = serde_json::json!({ "taskIds": ids }).to_string();
    assert!(body.len() <= MAX_BODY_BYTES, "{} bytes", body.len());
}
